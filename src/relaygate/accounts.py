"""The bridge between PostgreSQL (system of record) and the Redis ledger.

- ``ensure_token`` / ``ensure_user`` rebuild a missing ledger hash from PostgreSQL (first use,
  or Redis restarted empty) without double counting usage events still in the stream.
- ``push_token`` / ``push_user`` carry a committed management write into Redis (status,
  expiry, limit, ``ver``) and announce it on the invalidation channel, so every relay
  refuses or allows on its very next request.

Rebuild exactness: ``used`` = flushed total in PostgreSQL + events in the stream that
PostgreSQL does not have yet. Events can only be in the stream for a token whose hash is
missing if they were settled while it was missing; settle counts those per token in the
shard's ``orphans`` hash. With no orphans (the normal first use) nothing is scanned. With
orphans, the stream is scanned and the flushed ones are recognised by request id within
the same PostgreSQL snapshot that gave the flushed total; the init script refuses if the
orphan count moved meanwhile, and the rebuild starts over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from redis.asyncio import Redis

from relaygate import events, ledger
from relaygate.keyindex import REFRESH_SECONDS as KEY_INDEX_REFRESH_SECONDS
from relaygate.keyindex import KeyIndex
from relaygate.keys import KeyScheme, msg_token, msg_user
from relaygate.ledger import STATUS_DELETED, Scripts
from relaygate.singleflight import SingleFlight
from relaygate.store import queries

log = logging.getLogger(__name__)

STREAM_PAGE = 1000
INIT_ATTEMPTS = 8
OUTBOX_BATCH = 100
RECONCILE_SECONDS = 2.0  # how soon a change whose push failed reaches Redis once it is back


class LedgerMissing(LookupError):
    """The token or user does not exist in PostgreSQL (deleted meanwhile)."""


@dataclass(frozen=True, slots=True)
class _Target:
    """One ledger hash to rebuild: a token's or a user's."""

    kind: str  # "token" | "user": also the usage event field naming it
    ident: int
    user_id: int
    hash_key: str
    orphan_field: str
    row_query: str
    fields: Callable[[Any], dict[str, int | str]]


class Accounts:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, scripts: Scripts, keys: KeyScheme) -> None:
        self.pool = pool
        self.redis = redis
        self.scripts = scripts
        self.keys = keys
        self.key_index = KeyIndex(pool, redis, keys)
        self._rebuilds: SingleFlight[tuple[str, int], None] = SingleFlight()

    # --- rebuild -------------------------------------------------------------------------

    async def ensure_token(self, token_id: int, user_id: int) -> None:
        """Rebuild the token's hash if missing. Concurrent callers share one rebuild."""
        target = _Target(
            "token",
            token_id,
            user_id,
            self.keys.token(user_id, token_id),
            ledger.token_orphan_field(token_id),
            queries.TOKEN_LEDGER_ROW,
            token_fields,
        )
        await self._single_flight(("t", token_id), lambda: self._rebuild(target))

    async def ensure_user(self, user_id: int) -> None:
        target = _Target(
            "user",
            user_id,
            user_id,
            self.keys.user(user_id),
            ledger.user_orphan_field(user_id),
            queries.USER_LEDGER_ROW,
            user_fields,
        )
        await self._single_flight(("u", user_id), lambda: self._rebuild(target))

    async def _single_flight(
        self, key: tuple[str, int], start: Callable[[], Awaitable[None]]
    ) -> None:
        """One rebuild per hash however many requests find it missing (``SingleFlight``)."""
        await self._rebuilds.run(key, start)

    async def _rebuild(self, t: _Target) -> None:
        orphans_key = self.keys.orphans(t.user_id)
        for _ in range(INIT_ATTEMPTS):
            seen = int(await self.redis.hget(orphans_key, t.orphan_field) or 0)
            # The stream is read BEFORE the snapshot: an event the flusher commits in between
            # is then a candidate that the snapshot reports present (counted once, in
            # used_quota). Read after the snapshot, it would be in neither.
            found = await self._unflushed(t.user_id, t.kind, t.ident) if seen else {}
            async with (
                self.pool.acquire() as conn,
                conn.transaction(isolation="repeatable_read", readonly=True),
            ):
                row = await conn.fetchrow(t.row_query, t.ident)
                if row is None:
                    raise LedgerMissing(f"{t.kind} {t.ident}")
                present: set[str] = set()
                if found:
                    rids, tss = [k[0] for k in found], [k[1] for k in found]
                    recs = await conn.fetch(queries.LOGS_PRESENT, rids, tss)
                    present = {r["request_id"] for r in recs}
            pending = sum(q for (rid, _), q in found.items() if rid not in present)
            fields = t.fields(row)
            fields["used"] = int(row["used_quota"]) + pending
            result = await ledger.sync(
                self.scripts,
                self.redis,
                t.hash_key,
                orphans_key,
                "init",
                int(row["ver"]),
                t.orphan_field,
                seen,
                fields,
            )
            if result != -1:
                return
        raise RuntimeError(f"{t.kind} {t.ident}: ledger rebuild kept racing settles")

    async def _unflushed(self, user_id: int, field: str, ident: int) -> dict[tuple[str, int], int]:
        """Candidate unflushed events of this token/user: (request id, ts) -> quota, from the
        stream. Which of them PostgreSQL already has is decided by the caller, in a snapshot
        taken after this read."""
        stream = self.keys.stream_of_user(user_id)
        found: dict[tuple[str, int], int] = {}
        start = "-"
        while True:
            page = cast(
                list[tuple[bytes, dict[bytes, bytes]]],
                await self.redis.xrange(stream, min=start, max="+", count=STREAM_PAGE),
            )
            for _entry_id, data in page:
                try:
                    event = events.decode(data)
                except events.MalformedEvent:
                    continue  # the flusher dead-letters it; it was never counted
                if event.get(field) == ident:
                    found[(str(event["rid"]), int(event["ts"]))] = event["quota"]
            if len(page) < STREAM_PAGE:
                break
            start = "(" + page[-1][0].decode()
        return found

    # --- management writes -----------------------------------------------------------------

    async def push(self, kind: str, ident: int) -> None:
        """Push one outbox entry: ``kind`` is "token" or "user"."""
        if kind == "token":
            await self.push_token(ident)
        else:
            await self.push_user(ident)

    async def push_token(self, token_id: int) -> None:
        """Copy a committed token row into its ledger hash (if present) and invalidate caches.

        Version-checked (sync.lua "update"), so pushes may run late, twice or out of order:
        Redis only ever moves forward to PostgreSQL's newest row. Clears the outbox entry up
        to the version pushed.
        """
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(queries.TOKEN_LEDGER_ROW, token_id)
        if row is None:
            await self._outbox_done("token", token_id, None)
            return
        user_id = int(row["user_id"])
        await self._sync_update(
            self.keys.token(user_id, token_id),
            user_id,
            int(row["ver"]),
            ledger.token_orphan_field(token_id),
            token_fields(row),
        )
        await self.redis.publish(self.keys.inval_channel, msg_token(token_id))
        await self._outbox_done("token", token_id, int(row["ver"]))

    async def push_user(self, user_id: int) -> None:
        """As ``push_token``, for the user's hash (limit and status; ``ver``-checked too)."""
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(queries.USER_LEDGER_ROW, user_id)
        if row is None:
            await self._outbox_done("user", user_id, None)
            return
        await self._sync_update(
            self.keys.user(user_id),
            user_id,
            int(row["ver"]),
            ledger.user_orphan_field(user_id),
            user_fields(row),
        )
        await self.redis.publish(self.keys.inval_channel, msg_user(user_id))
        await self._outbox_done("user", user_id, int(row["ver"]))

    async def _sync_update(
        self, hash_key: str, user_id: int, ver: int, orphan: str, fields: dict[str, int | str]
    ) -> None:
        await ledger.sync(
            self.scripts,
            self.redis,
            hash_key,
            self.keys.orphans(user_id),
            "update",
            ver,
            orphan,
            0,
            fields,
        )

    async def _outbox_done(self, kind: str, ident: int, ver: int | None) -> None:
        async with self.pool.acquire() as conn:
            if ver is None:
                await conn.execute(queries.OUTBOX_DROP, kind, ident)
            else:
                await conn.execute(queries.OUTBOX_DONE, kind, ident, ver)

    async def reconcile_once(self, batch: int = OUTBOX_BATCH) -> int:
        """Push the oldest outbox entries; returns how many were pushed.

        A failing push ends the round (Redis is down for all of them); the entry stays for
        the next round.
        """
        async with self.pool.acquire() as conn:
            due = await conn.fetch(queries.OUTBOX_DUE, batch)
        for entry in due:
            await self.push(str(entry["kind"]), int(entry["id"]))
        return len(due)

    async def run_reconciler(
        self, stop: asyncio.Event, interval: float = RECONCILE_SECONDS
    ) -> None:
        """Until ``stop``: carry committed management writes whose push failed into Redis.

        Why it exists: a write commits in PostgreSQL first and pushes after; if Redis (or the
        writer) fails in between, the outbox row written in the same transaction is the
        promise that the change still reaches every relay. Several reconcilers may run (one
        per worker): pushes are version-checked and idempotent.
        """
        index_due = 0.0  # monotonic time of the next forced key index rebuild
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                pushed = await self.reconcile_once()
                if await self.key_index.ensure(force=loop.time() >= index_due):
                    index_due = loop.time() + KEY_INDEX_REFRESH_SECONDS
            except Exception as exc:  # Redis or PostgreSQL down: retry next round
                log.warning("ledger outbox: push failed (%s); retrying in %.0fs", exc, interval)
                pushed = 0
                index_due = 0.0  # Redis may come back having lost recent additions
            if pushed >= OUTBOX_BATCH:
                continue  # a backlog: keep going
            if pushed:
                log.info("ledger outbox: pushed %d pending change(s)", pushed)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)

    # --- live figures --------------------------------------------------------------------

    async def live_token(self, token_id: int, user_id: int) -> tuple[int, int]:
        """(limit, used) from the ledger, rebuilding it first if it is missing."""
        key = self.keys.token(user_id, token_id)
        limit, used = await self.redis.hmget(key, "limit", "used")
        if limit is None:
            await self.ensure_token(token_id, user_id)
            limit, used = await self.redis.hmget(key, "limit", "used")
        return int(limit or 0), int(used or 0)

    async def live_tokens(self, pairs: list[tuple[int, int]]) -> dict[int, tuple[int, int]]:
        """Live (limit, used) for many (token_id, user_id) pairs in one pipeline."""
        if not pairs:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for token_id, user_id in pairs:
                pipe.hmget(self.keys.token(user_id, token_id), "limit", "used")
            replies = await pipe.execute()
        out: dict[int, tuple[int, int]] = {}
        for (token_id, user_id), (limit, used) in zip(pairs, replies, strict=True):
            if limit is None:
                out[token_id] = await self.live_token(token_id, user_id)
            else:
                out[token_id] = (int(limit), int(used or 0))
        return out

    async def live_user(self, user_id: int) -> tuple[int, int]:
        key = self.keys.user(user_id)
        limit, used = await self.redis.hmget(key, "limit", "used")
        if limit is None:
            await self.ensure_user(user_id)
            limit, used = await self.redis.hmget(key, "limit", "used")
        return int(limit or 0), int(used or 0)


def token_fields(row: Any) -> dict[str, int | str]:
    status = STATUS_DELETED if row["deleted_at"] is not None else int(row["status"])
    return {
        "limit": int(row["quota_limit"]),
        "unlimited": 1 if row["unlimited_quota"] else 0,
        "status": status,
        "expires": int(row["expired_time"]),
        "user": int(row["user_id"]),
        "dlimit": int(row["daily_quota"]),
        "mlimit": int(row["monthly_quota"]),
    }


def user_fields(row: Any) -> dict[str, int | str]:
    status = 2 if row["deleted_at"] is not None else int(row["status"])
    return {"limit": int(row["quota_limit"]), "status": status}
