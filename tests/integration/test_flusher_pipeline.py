"""Issue 16: the flusher's overlapped rounds are still exactly once.

Under a backlog a batch's XACK + XDEL runs while the next batch is written (see
``Flusher.round``). These tests hold acks back so that two committed batches are in flight
at once, and check against the real PostgreSQL and Redis that

* no entry is acked before the transaction that recorded it has committed (checked from
  another connection at the moment of each XACK), and
* a flusher dying with two committed-but-unacked batches (and a prefetched one) leaves
  entries that another flusher claims and records without counting any event twice.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from relaygate import events
from relaygate.flusher import Entry, Flusher
from relaygate.keys import STREAM_GROUP
from relaygate.ledger import Scripts

BATCH = 5
EVENTS = 38  # not a multiple of BATCH: the last prefetch brings a short batch, not none
DEADLINE = 30.0  # only so that a broken pipeline fails instead of hanging


class Killed(BaseException):
    """The process dying: not an Exception, so no retry loop or cleanup catches it."""


async def _world(env: Any) -> tuple[int, int, int]:
    uid, _ = await env.root_user()
    a = await env.admin.create_token(uid, "a", remain_quota=10**6)
    b = await env.admin.create_token(uid, "b", remain_quota=10**6)
    return uid, int(a.id), int(b.id)


async def _add_events(env: Any, uid: int, a: int, b: int) -> dict[int, int]:
    """EVENTS events for tokens a and b; returns the quota each token should end with."""
    want = {a: 0, b: 0}
    for i in range(EVENTS):
        tok, quota = (a if i % 3 else b), i + 1
        want[tok] += quota
        ev = {"rid": f"r{i:03d}", "ts": int(time.time()), "user": uid, "token": tok, "chan": 0}
        await env.redis.xadd(
            env.keys.stream_of_user(uid), {"quota": quota, "event": events.encode(ev)}
        )
    return want


def _rids(entries: list[Entry]) -> list[str]:
    out = []
    for _, _, fields in entries:
        assert isinstance(fields, list)  # the raw XREADGROUP reply the flusher reads
        out.append(orjson.loads(fields[fields.index(b"event") + 1])["rid"])
    return out


class AckWatch:
    """Wraps a flusher's ``ack``: at each XACK, checks from another PostgreSQL connection
    that every entry being acked is already recorded (committed), then acks."""

    def __init__(self, env: Any, f: Flusher) -> None:
        self.env, self.f = env, f
        self.real_ack = f.ack
        self.acks = 0
        self.uncommitted: list[str] = []
        f.ack = self.ack  # type: ignore[method-assign]

    async def ack(self, entries: list[Entry]) -> None:
        self.acks += 1
        await self.before(self.acks)
        rids = _rids(entries)
        async with self.env.pool.acquire() as conn:
            found = await conn.fetchval(
                "SELECT count(*) FROM logs WHERE request_id = ANY($1::text[])", rids
            )
        if found != len(rids):
            self.uncommitted.extend(rids)
        await self.real_ack(entries)

    async def before(self, n: int) -> None:
        """Hook: runs before the n-th ack's check."""


async def _books(env: Any, uid: int) -> tuple[list[str], dict[int, int], int, int]:
    async with env.pool.acquire() as conn:
        rids = [r[0] for r in await conn.fetch("SELECT request_id FROM logs ORDER BY 1")]
        toks = dict(await conn.fetch("SELECT id, used_quota FROM tokens WHERE user_id = $1", uid))
        used, count = await conn.fetchrow(
            "SELECT used_quota, request_count FROM users WHERE id = $1", uid
        )
    return rids, toks, used, count


async def _drain(f: Flusher) -> None:
    for _ in range(100):
        if not await f.round():
            return


async def _assert_exactly_once(env: Any, uid: int, want: dict[int, int]) -> None:
    rids, toks, used, count = await _books(env, uid)
    assert rids == [f"r{i:03d}" for i in range(EVENTS)]  # each once
    assert toks == want
    assert (used, count) == (sum(want.values()), EVENTS)
    stream = env.keys.stream_of_user(uid)
    assert await env.redis.xlen(stream) == 0
    assert (await env.redis.xpending(stream, STREAM_GROUP))["pending"] == 0


async def test_each_batch_is_acked_only_after_its_own_commit_with_the_next_in_flight(
    env: Any,
) -> None:
    """Every ack that runs in the background is held until the next batch's write has
    begun, so batches really overlap; each is checked to be committed when it is acked."""
    uid, a, b = await _world(env)
    want = await _add_events(env, uid, a, b)
    settings = env.settings.replace(flush_batch=BATCH, flush_linger_ms=0)
    f = Flusher(settings, env.pool, env.redis, Scripts.load())
    await f.setup()
    writes_begun = 0
    a_write_began = asyncio.Condition()
    real_write = f.write_batch

    async def write_batch(batch: Any) -> None:
        nonlocal writes_begun
        async with a_write_began:
            writes_begun += 1
            a_write_began.notify_all()
        await real_write(batch)

    f.write_batch = write_batch  # type: ignore[method-assign]
    overlapped = 0

    class Held(AckWatch):
        async def before(self, n: int) -> None:
            """The n-th ack acks the n-th batch: if it runs in the background (a batch
            follows), hold it until batch n + 1's write has begun."""
            nonlocal overlapped
            if asyncio.current_task() is f._acking:
                async with a_write_began:
                    await asyncio.wait_for(
                        a_write_began.wait_for(lambda: writes_begun > n), DEADLINE
                    )
                overlapped += 1

    watch = Held(env, f)
    await _drain(f)
    assert watch.uncommitted == []
    assert overlapped >= 3  # the pipeline was exercised, not just the serial path
    assert watch.acks == -(-EVENTS // BATCH)
    await _assert_exactly_once(env, uid, want)
    assert f.flushed == EVENTS


async def test_killed_with_two_committed_batches_unacked_then_claimed_counts_once(
    env: Any,
) -> None:
    """The first batch is acked; the second's ack is held while the third is written and
    committed (and a fourth prefetched); then the flusher dies before either XACK lands.
    An heir claims everything pending and records only the events not yet recorded."""
    uid, a, b = await _world(env)
    want = await _add_events(env, uid, a, b)
    settings = env.settings.replace(flush_batch=BATCH, flush_linger_ms=0)
    dead = Flusher(settings, env.pool, env.redis, Scripts.load())
    committed = 0
    two_in_flight = asyncio.Event()
    kill = asyncio.Event()
    real_write = dead.write_batch

    async def write_batch(batch: Any) -> None:
        nonlocal committed
        await real_write(batch)
        committed += 1
        if committed == 3:
            two_in_flight.set()

    dead.write_batch = write_batch  # type: ignore[method-assign]

    class Dying(AckWatch):
        async def before(self, n: int) -> None:
            if n >= 2:
                await kill.wait()
                raise Killed

    dead_watch = Dying(env, dead)
    stop = asyncio.Event()
    task = asyncio.create_task(dead.run(stop))
    await asyncio.wait_for(two_in_flight.wait(), DEADLINE)
    kill.set()
    try:
        await asyncio.wait_for(task, DEADLINE)
    except Killed:
        pass
    else:
        raise AssertionError("the flusher should have died")
    assert dead_watch.uncommitted == []
    stream = env.keys.stream_of_user(uid)
    rids, _, _, _ = await _books(env, uid)
    assert rids == [f"r{i:03d}" for i in range(3 * BATCH)]  # batches 1-3 committed
    assert await env.redis.xlen(stream) == EVENTS - BATCH  # only batch 1 acked + deleted
    pending = (await env.redis.xpending(stream, STREAM_GROUP))["pending"]
    assert pending in (2 * BATCH, 3 * BATCH)  # batches 2 and 3, and 4 if its read landed

    await asyncio.sleep(0.01)  # idle past the heir's flush_claim_idle_ms
    heir = Flusher(settings.replace(flush_claim_idle_ms=1), env.pool, env.redis, Scripts.load())
    heir_watch = AckWatch(env, heir)
    await heir.setup()
    await _drain(heir)
    assert heir_watch.uncommitted == []
    await _assert_exactly_once(env, uid, want)
    assert heir.flushed == EVENTS - 3 * BATCH
