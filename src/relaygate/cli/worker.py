"""``relaygate worker``: the usage flusher and the ledger reconciler, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import TYPE_CHECKING

from aiohttp import web

from relaygate.config import Settings
from relaygate.serving import Fatal, accounts, describe_start_error, run

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from relaygate.flusher import Flusher

log = logging.getLogger("relaygate")


async def _worker(settings: Settings) -> None:
    from relaygate.app import check_eviction_policy, redis_client
    from relaygate.flusher import Flusher
    from relaygate.ledger import Scripts
    from relaygate.store.db import create_pool

    redis = redis_client(settings)
    try:
        await redis.ping()
        await check_eviction_policy(redis, settings.allow_unsafe_redis_eviction)
        pool = await create_pool(settings.database_url, max_size=4)
    except Exception as exc:
        await redis.aclose()
        raise Fatal(describe_start_error(exc, settings)) from None
    flusher = Flusher(settings, pool, redis, Scripts.load())
    try:
        metrics = await _metrics_listener(settings, flusher, redis)
    except Fatal:
        await pool.close()
        await redis.aclose()
        raise
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("flusher %s started", flusher.consumer)
    outbox = asyncio.create_task(accounts(settings, pool, redis).run_reconciler(stop))
    try:
        await flusher.run(stop)
        await outbox
    finally:
        outbox.cancel()
        if metrics is not None:
            await metrics.cleanup()
        await pool.close()
        await redis.aclose()


async def _metrics_listener(
    settings: Settings, flusher: Flusher, redis: Redis
) -> web.AppRunner | None:
    """``/metrics`` and ``/healthz`` on RELAYGATE_HOST:RELAYGATE_WORKER_METRICS_PORT, when the
    port is set (docs/operators.md "Metrics"); a port that cannot be bound is fatal at start,
    as the relay's is, rather than a worker Prometheus silently never sees."""
    if not settings.worker_metrics_port:
        return None
    from relaygate.keys import KeyScheme
    from relaygate.metrics import worker_app

    keys = KeyScheme(settings.key_prefix, settings.shards)
    runner = web.AppRunner(worker_app(flusher, redis, keys), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, settings.host, settings.worker_metrics_port).start()
    except OSError as exc:
        await runner.cleanup()
        raise Fatal(
            f"cannot listen on {settings.host}:{settings.worker_metrics_port} "
            f"(RELAYGATE_WORKER_METRICS_PORT): {exc.strerror or exc}"
        ) from None
    log.info("worker metrics on http://%s:%d/metrics", settings.host, settings.worker_metrics_port)
    return runner


def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    run(_worker(settings))
