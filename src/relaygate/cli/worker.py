"""``relaygate worker``: the usage flusher and the ledger reconciler, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from relaygate.config import Settings
from relaygate.serving import Fatal, accounts, describe_start_error, run

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
        await pool.close()
        await redis.aclose()


def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    run(_worker(settings))
