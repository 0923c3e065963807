"""The app factory: builds the aiohttp application and owns every connection's lifetime
through ``cleanup_ctx``, with shared objects under typed ``AppKey``s."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web
from redis.asyncio import BlockingConnectionPool, Redis

from relaygate import health, metrics, upstream_client
from relaygate.accounts import Accounts
from relaygate.appkeys import DRAINING, RUNTIME, SETTINGS
from relaygate.config import Settings
from relaygate.keys import KeyScheme
from relaygate.ledger import Scripts
from relaygate.redispipe import PipelinedRedis
from relaygate.relay import cors
from relaygate.relay.compat import add_compat_routes
from relaygate.relay.routes import add_routes
from relaygate.runtime import Runtime
from relaygate.settles import adopt_journals
from relaygate.store.db import create_pool

log = logging.getLogger(__name__)


class UnsafeRedis(RuntimeError):
    """Redis may evict keys: a silently evicted counter is silently free spend."""


async def check_eviction_policy(redis: Redis, allow_unsafe: bool) -> None:
    try:
        reply: dict[Any, Any] = await redis.config_get("maxmemory-policy")
    except Exception as exc:  # managed Redis may forbid CONFIG; say so and go on
        log.warning("cannot read maxmemory-policy (%s); make sure it is noeviction", exc)
        return
    policy = reply.get("maxmemory-policy") or reply.get(b"maxmemory-policy")
    if isinstance(policy, bytes):
        policy = policy.decode()
    if policy != "noeviction":
        message = (
            f"Redis maxmemory-policy is {policy!r}, not 'noeviction': ledger counters could be "
            "evicted (free spend). Set it to noeviction, or start with "
            "RELAYGATE_ALLOW_UNSAFE_REDIS_EVICTION=true to accept the risk."
        )
        if not allow_unsafe:
            raise UnsafeRedis(message)
        log.warning(message)


REDIS_POOL_SIZE = 64


def redis_client(settings: Settings) -> Redis:
    """The ordinary pool (management, rebuilds, flusher). Blocking: under a burst, callers
    wait for a connection instead of failing with "Too many connections"."""
    # Every call has a deadline: a stalled Redis must fail calls, not hang them. The socket
    # timeout leaves room for the flusher's blocking XREADGROUP.
    deadline = settings.redis_timeout
    pool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=REDIS_POOL_SIZE,
        timeout=deadline,
        health_check_interval=30,
        socket_timeout=deadline + settings.flush_block_ms / 1000,
        socket_connect_timeout=deadline,
    )
    return Redis.from_pool(pool)


async def build_runtime(settings: Settings) -> Runtime:
    """Connect everything the relay needs; the caller closes it with ``close_runtime``."""
    redis = redis_client(settings)
    pool = None
    hot = None
    http = None
    try:
        await redis.ping()
        await check_eviction_policy(redis, settings.allow_unsafe_redis_eviction)
        pool = await create_pool(settings.database_url)
        hot = await PipelinedRedis.connect(
            settings.redis_url,
            connect_timeout=settings.redis_timeout,
            command_timeout=settings.redis_timeout,
        )
        scripts = Scripts.load()
        await scripts.preload(redis)
        keys = KeyScheme(settings.key_prefix, settings.shards)
        # TLS verified, every address checked as it is connected (SSRF guard), connect and
        # read timeouts: relaygate.upstream_client, whichever RELAYGATE_UPSTREAM_CLIENT says.
        http = upstream_client.build(settings)
        rt = Runtime(
            settings=settings,
            keys=keys,
            pool=pool,
            redis=redis,
            hot=hot,
            scripts=scripts,
            accounts=Accounts(pool, redis, scripts, keys),
            http=http,
        )
        await rt.catalog.reload()
        return rt
    except BaseException:
        if http is not None:
            await http.close()
        if hot is not None:
            await hot.aclose()
        if pool is not None:
            await pool.close()
        await redis.aclose()
        raise


async def close_runtime(rt: Runtime) -> None:
    """After draining: nothing of ours is in flight. Kept ledger writes get a last chance
    to reach Redis; what does not stays journaled for the next start (and then our heartbeat
    is left to lapse on its own: the reaper treats our reservations as any dead relay's)."""
    await rt.background.drain(within=10)
    await rt.settles.flush(within=5)
    if not rt.settles.pending:
        with contextlib.suppress(Exception):
            await rt.heartbeat.stop()
    rt.settles.close()
    await rt.http.close()
    await rt.hot.aclose()
    await rt.pool.close()
    await rt.redis.aclose()


async def _runtime_ctx(app: web.Application) -> AsyncIterator[None]:
    rt = await build_runtime(app[SETTINGS])
    app[RUNTIME] = rt
    # Alive before the first reservation, so the reaper never mistakes us for dead.
    await rt.heartbeat.beat()
    journal = rt.settles.journal
    adopt_journals(journal.directory, rt.keys.prefix, journal.path, rt.settles.keep_all)
    bg = rt.background
    tasks = [
        asyncio.create_task(rt.settles.run(bg.closing), name="ledger-replay"),
        asyncio.create_task(rt.invalidations.run(bg), name="invalidations"),
        asyncio.create_task(rt.catalog.refresh_periodically(bg), name="refresh"),
        asyncio.create_task(rt.heartbeat.run(bg), name="heartbeat"),
        asyncio.create_task(health.retest_periodically(rt), name="channel-retest"),
    ]
    yield
    bg.closing.set()
    for task in tasks:
        task.cancel()
    # Bounded: a background loop must never hold up shutdown.
    _, stuck = await asyncio.wait(tasks, timeout=5)
    for task in stuck:
        log.warning("background task %s did not stop in time", task.get_name())
    await close_runtime(rt)


def init_app(settings: Settings, *, with_api: bool = True) -> web.Application:
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[DRAINING] = asyncio.Event()
    app.cleanup_ctx.append(_runtime_ctx)
    metrics.install(app)
    add_routes(app)
    add_compat_routes(app)
    if with_api:
        from relaygate.api import add_api_routes

        add_api_routes(app)
        from relaygate.console import add_console_routes

        add_console_routes(app)
    cors.install(app, settings)  # last: adds OPTIONS to every resource registered so far
    return app
