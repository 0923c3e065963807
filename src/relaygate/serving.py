"""Running the relay in this process: start-up errors, the listening socket, drain on signal.

Shared by ``relaygate serve`` (relaygate.cli.serve, which adds the fork supervisor) and by
``relaygate dev`` (relaygate.dev.mode), so neither has to import the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlparse

from relaygate.config import Settings
from relaygate.connguard import ConnectionGuard

log = logging.getLogger("relaygate")

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class Fatal(Exception):
    """Stop with this one-line message and exit status 1."""


def run(coro: Awaitable[Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


def describe_start_error(exc: BaseException, settings: Settings) -> str:
    from relaygate.app import UnsafeRedis

    if isinstance(exc, UnsafeRedis):
        return str(exc)
    name = type(exc).__name__
    if "Redis" in name or "redis" in type(exc).__module__:
        return f"cannot use Redis at {safe_url(settings.redis_url)}: {exc}"
    if "asyncpg" in type(exc).__module__ or isinstance(exc, OSError):
        return f"cannot use PostgreSQL at {safe_url(settings.database_url)}: {exc}"
    return f"start-up failed: {name}: {exc}"


def safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


def listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def tune_gc(gen0: int) -> None:
    """Fewer, cheaper garbage collections while serving.

    Why: a relayed request allocates a few hundred short-lived objects, so with Python's
    default threshold (700) a young collection runs every few requests, and every tenth one
    also walks the older generation; together ~10% of the CPU per request. Objects alive at
    start-up (modules, the app, pools) are frozen out of collection once, and the young
    generation is collected every ``gen0`` allocations (50,000 ≈ a few MB of garbage at
    most). Garbage without cycles is freed by reference counting as always.
    """
    if gen0 <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


async def serve_app(settings: Settings, extra: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run the relay until SIGTERM/SIGINT; then stop accepting, drain, settle and exit."""
    from aiohttp import web

    from relaygate.app import init_app
    from relaygate.appkeys import DRAINING

    app = init_app(settings)
    if settings.with_worker:
        app.cleanup_ctx.append(flusher_ctx(settings))
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=30,
        keepalive_timeout=settings.keepalive_timeout,
    )
    try:
        await runner.setup()
    except Exception as exc:
        raise Fatal(describe_start_error(exc, settings)) from None
    assert runner.server is not None
    ConnectionGuard(
        settings.header_timeout, settings.max_connections_per_ip, settings.trusted_proxies
    ).install(runner.server)
    try:
        sock = listen_socket(settings.host, settings.port, reuse_port=settings.workers > 1)
    except OSError as exc:
        await runner.cleanup()
        raise Fatal(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    site = web.SockSite(runner, sock)
    await site.start()
    tune_gc(settings.gc_gen0)
    log.info("relaygate serving on http://%s:%d", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A forked worker starts with these blocked (relaygate.cli.serve): one sent while it was still
    # starting is delivered now, to the handler, instead of killing it half set up.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if extra is not None:
        await extra()
    await stop.wait()
    app[DRAINING].set()  # /readyz says 503 from now on
    await _drain_delay(stop, settings.drain_delay)
    log.info("shutting down: draining in-flight requests")
    await runner.cleanup()


async def _drain_delay(stop: asyncio.Event, seconds: float) -> None:
    """Keep serving, not ready, for ``seconds`` (RELAYGATE_DRAIN_DELAY); a second stop
    signal ends the wait early."""
    if seconds <= 0:
        return
    log.info("stop requested: not ready, serving for %.1f s more before draining", seconds)
    stop.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def flusher_ctx(settings: Settings) -> Any:
    async def ctx(app: Any) -> Any:
        from relaygate.app import redis_client
        from relaygate.flusher import Flusher
        from relaygate.ledger import Scripts
        from relaygate.store.db import create_pool

        pool = await create_pool(settings.database_url, max_size=4)
        redis = redis_client(settings)
        from relaygate.metrics import FLUSHER

        flusher = Flusher(settings, pool, redis, Scripts.load())
        app[FLUSHER] = flusher
        stop = asyncio.Event()
        task = asyncio.create_task(flusher.run(stop))
        outbox = asyncio.create_task(accounts(settings, pool, redis).run_reconciler(stop))
        yield
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.gather(task, outbox), 10)
        await pool.close()
        await redis.aclose()

    return ctx


def accounts(settings: Settings, pool: Any, redis: Any) -> Any:
    """The ledger bridge whose reconciler the worker runs beside the flusher."""
    from relaygate.accounts import Accounts
    from relaygate.keys import KeyScheme
    from relaygate.ledger import Scripts

    return Accounts(pool, redis, Scripts.load(), KeyScheme(settings.key_prefix, settings.shards))
