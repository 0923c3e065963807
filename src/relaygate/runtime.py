"""The per-process state the relay reads on every request, as one explicit object.

Nothing here is a module global: the app factory builds one ``Runtime`` and stores it under
an ``AppKey``. Tables that change (channels, prices) are replaced whole, never mutated, so a
request that already holds one keeps a consistent view.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pathlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import asyncpg
from redis.asyncio import Redis

from relaygate.accounts import Accounts
from relaygate.authlimit import FailedAuthLimiter
from relaygate.cache import TokenCache, TokenMeta, meta_from_row
from relaygate.channels import ChannelTable, channel_from_row
from relaygate.config import Settings
from relaygate.keys import KeyScheme
from relaygate.ledger import Executor, Scripts
from relaygate.pricing import PriceBook
from relaygate.settles import Journal, SettleKeeper
from relaygate.store import queries

log = logging.getLogger(__name__)

CHANNEL_REFRESH_SECONDS = 30.0


def new_instance_id() -> str:
    """Unique per process and free of the ``|`` that separates reservation fields."""
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-.")[:40] or "relay"
    return f"{host}-{os.getpid()}-{os.urandom(3).hex()}"


@dataclass
class Runtime:
    settings: Settings
    keys: KeyScheme
    pool: asyncpg.Pool
    redis: Redis  # ordinary pool: management, rebuilds, flusher
    hot: Executor  # the hot path's auto-pipelined connection
    scripts: Scripts
    accounts: Accounts
    http: aiohttp.ClientSession
    cache: TokenCache = field(init=False)
    settles: SettleKeeper = field(init=False)
    auth_failures: FailedAuthLimiter = field(init=False)
    channels: ChannelTable = field(default_factory=lambda: ChannelTable(()))
    prices: PriceBook = field(default_factory=PriceBook)
    started_at: float = field(default_factory=time.time)
    instance: str = field(default_factory=lambda: new_instance_id())
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _watched: set[asyncio.Future[Any]] = field(default_factory=set)
    closing: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.cache = TokenCache(
            self.load_token, self.settings.cache_ttl, self.settings.negative_cache_ttl
        )
        self.auth_failures = FailedAuthLimiter(self.settings.auth_failures_per_minute)
        journal = Journal(
            pathlib.Path(self.settings.journal_dir), f"{self.keys.prefix}-{self.instance}"
        )
        self.settles = SettleKeeper(
            self.scripts, self.redis, journal, self.keys.reaped_of_resv, self.beat
        )

    async def load_token(self, key_hash: bytes) -> TokenMeta | None:
        if await self.accounts.key_index.cannot_exist(key_hash):
            return None  # a made-up key: answered without PostgreSQL
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(queries.TOKEN_META_BY_HASH, key_hash)
        if row is None or row["deleted_at"] is not None or row["user_deleted_at"] is not None:
            return None
        return meta_from_row(row, self.keys, time.monotonic())

    async def reload_channels(self) -> None:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(queries.CHANNELS_ENABLED)
        self.channels = ChannelTable(channel_from_row(r) for r in rows)

    async def reload_prices(self) -> None:
        async with self.pool.acquire() as conn:
            rows = await conn.fetch(queries.OPTIONS_ALL)
        try:
            self.prices = PriceBook.from_options({r["key"]: r["value"] for r in rows})
        except ValueError as exc:
            log.error("price options rejected, keeping the previous table: %s", exc)

    def handle_invalidation(self, message: str) -> None:
        if message.startswith("chan:"):
            self.spawn(self.reload_channels())
        elif message.startswith("opt:"):
            self.spawn(self.reload_prices())
        else:
            self.cache.handle_message(message)

    def spawn(self, coro: Any) -> None:
        """Run ``coro`` in the background, held until done; ``drain`` waits for them."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed: %s", task.exception())

    def watch(self, reply: asyncio.Future[Any], on_failure: Callable[[], None]) -> None:
        """Keep an eye on a reply nobody awaits: if it fails, call ``on_failure``.
        ``drain`` waits for watched replies too."""
        self._watched.add(reply)
        reply.add_done_callback(lambda fut: self._reply_done(fut, on_failure))

    def _reply_done(self, reply: asyncio.Future[Any], on_failure: Callable[[], None]) -> None:
        self._watched.discard(reply)
        if reply.cancelled() or reply.exception() is not None:
            on_failure()

    async def drain(self, within: float) -> None:
        """Wait (bounded) for background work: watched replies, then the retries and
        settles they and cancellations left running."""
        deadline = asyncio.get_running_loop().time() + within
        if self._watched:
            await asyncio.wait(list(self._watched), timeout=within)
        left = max(0.0, deadline - asyncio.get_running_loop().time())
        if self._tasks:
            _, stuck = await asyncio.wait(list(self._tasks), timeout=left)
            for task in stuck:
                task.cancel()

    async def listen_invalidations(self) -> None:
        """Subscribe to ``rg:inval`` until closing; on reconnect drop everything (messages
        were missed)."""
        while not self.closing.is_set():
            try:
                pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.keys.inval_channel)
                self.cache.invalidate_all()
                while not self.closing.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    data = message.get("data") if message else None
                    if isinstance(data, bytes):
                        self.handle_invalidation(data.decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep listening through Redis restarts
                log.warning("invalidation listener lost Redis (%s); retrying", exc)
                await self.pause(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when closing. Background loops check ``closing`` rather
        than rely on cancellation alone: redis-py can swallow a CancelledError that lands
        mid-command, which would leave a cancelled loop running forever."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closing.wait(), seconds)

    async def beat(self) -> None:
        """Refresh this process's heartbeat key once."""
        key = self.keys.heartbeat(self.instance)
        await self.redis.set(key, int(time.time()), ex=self.settings.heartbeat_ttl)

    async def heartbeat(self) -> None:
        """Keep this process's heartbeat key alive: the reaper refunds our open reservations
        only once it has lapsed (we died), never while we live."""
        while not self.closing.is_set():
            try:
                await self.beat()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            await self.pause(self.settings.heartbeat_ttl / 3)

    async def refresh_periodically(self) -> None:
        """Bound staleness if an invalidation was missed; survive PostgreSQL outages."""
        while not self.closing.is_set():
            await self.pause(CHANNEL_REFRESH_SECONDS)
            try:
                await self.reload_channels()
                await self.reload_prices()
            except Exception as exc:
                log.warning("periodic channel/price refresh failed: %s", exc)
