"""Issue 9 item 6 + reaper policy: the reaper refunds a reservation only when the relay
holding it is dead (its heartbeat absent on two passes at least heartbeat_ttl apart),
never for its deadline alone; it looks at every member of the zset; each refund leaves a
reaped marker (pruned after reaped_retention)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from relaygate import ledger
from relaygate.flusher import Flusher
from relaygate.ledger import Scripts

UID, TID = 5, 7
DAY, MONTH = "20260101", "202601"


def _flusher(env: Any, **changes: Any) -> Flusher:
    return Flusher(env.settings.replace(**changes), env.pool, env.redis, Scripts.load())


async def _open(env: Any, rid: str, instance: str, deadline: float, amount: int = 10) -> str:
    """An open reservation as reserve.lua leaves it (charged into the ledger hashes)."""
    member = ledger.reservation_member(f"{rid}|{TID}|{UID}|{DAY}|{MONTH}|{instance}", amount)
    await env.redis.zadd(env.keys.reservations(UID), {member: deadline})
    await env.redis.hincrby(env.keys.token(UID, TID), "used", amount)
    await env.redis.hincrby(env.keys.user(UID), "used", amount)
    return member


async def _used(env: Any) -> int:
    return int(await env.redis.hget(env.keys.token(UID, TID), "used") or 0)


async def _alive(env: Any, instance: str) -> None:
    await env.redis.set(env.keys.heartbeat(instance), 1, ex=60)


async def test_reaper_spares_reservation_past_deadline_while_relay_alive(env: Any) -> None:
    await _alive(env, "live")
    member = await _open(env, "r1", "live", deadline=time.time() - 3600)
    f = _flusher(env, heartbeat_ttl=1)
    for _ in range(3):
        assert await f.reap() == 0
        await asyncio.sleep(0.6)
    assert await env.redis.zscore(env.keys.reservations(UID), member) is not None
    assert await _used(env) == 10


async def test_reaper_refunds_only_after_heartbeat_absent_twice_ttl_apart(env: Any) -> None:
    member = await _open(env, "r1", "gone", deadline=time.time() + 3600)
    f = _flusher(env, heartbeat_ttl=1)
    assert await f.reap() == 0  # first seen absent: remembered, not refunded
    await asyncio.sleep(0.5)
    assert await f.reap() == 0  # absent, but not yet heartbeat_ttl since the first sight
    await asyncio.sleep(0.6)
    before = int(time.time())  # the reaper stamps the marker with its whole-second wall clock
    assert await f.reap() == 1
    after = time.time()
    assert await env.redis.zscore(env.keys.reservations(UID), member) is None
    assert await _used(env) == 0
    assert int(await env.redis.hget(env.keys.user(UID), "used")) == 0
    score = await env.redis.zscore(env.keys.reaped(UID), "r1")
    assert score is not None and before <= score <= after  # stamped during this reap


async def test_reaper_heartbeat_seen_again_clears_absence(env: Any) -> None:
    await _open(env, "r1", "flaky", deadline=time.time() - 10)
    f = _flusher(env, heartbeat_ttl=1)
    assert await f.reap() == 0  # absent (first sight)
    await asyncio.sleep(1.1)
    await _alive(env, "flaky")
    assert await f.reap() == 0  # present again: the absence is forgotten
    await env.redis.delete(env.keys.heartbeat("flaky"))
    assert await f.reap() == 0  # absent again: a new first sight
    await asyncio.sleep(1.1)
    assert await f.reap() == 1


async def test_reaper_pages_through_whole_zset(env: Any) -> None:
    await _alive(env, "live")
    soon = time.time() + 60
    for i in range(600):  # live relays' entries at the head of the zset
        await _open(env, f"live{i}", "live", deadline=soon + i, amount=1)
    await _open(env, "dead", "gone", deadline=soon + 10_000, amount=10)
    f = _flusher(env, heartbeat_ttl=1)
    assert await f.reap() == 0
    await asyncio.sleep(1.1)
    assert await f.reap() == 1
    assert await _used(env) == 600
    assert await env.redis.zcard(env.keys.reservations(UID)) == 600
    assert await env.redis.zscore(env.keys.reaped(UID), "dead") is not None


async def test_reaper_prunes_reaped_markers_past_retention(env: Any) -> None:
    now = time.time()
    shard = env.keys.shard_of(UID)
    key = env.keys.reaped_of_shard(shard)
    assert key == f"{env.settings.key_prefix}:{{{shard}}}:reaped" == env.keys.reaped(UID)
    await env.redis.zadd(key, {"old": now - 8 * 86400, "recent": now - 3600})
    f = _flusher(env)
    assert f.settings.reaped_retention == 7 * 86400
    await f.reap()
    assert await env.redis.zrange(key, 0, -1) == [b"recent"]
    await _flusher(env, reaped_retention=60).reap()
    assert await env.redis.zcard(key) == 0
