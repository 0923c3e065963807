"""Item 12 of issue 9: one usage event PostgreSQL refuses must not stop all recording.

Huge token counts fit (BIGINT columns); an event PostgreSQL still refuses for a data reason
is isolated by bisecting the batch and moved to the dead-letter stream, exactly once; an
outage dead-letters nothing."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

import relaygate.flusher as fl
from relaygate import events
from relaygate.flusher import Flusher
from relaygate.keys import STREAM_GROUP
from relaygate.ledger import Scripts


async def _world(env: Any) -> tuple[int, int]:
    uid, _ = await env.root_user()
    tok = await env.admin.create_token(uid, "t", remain_quota=10**6)
    return uid, int(tok.id)


async def _add(env: Any, uid: int, tok: int, rid: str, quota: int = 1, **extra: Any) -> None:
    ev = {"rid": rid, "ts": int(time.time()), "user": uid, "token": tok, **extra}
    await env.redis.xadd(env.keys.stream_of_user(uid), {"quota": quota, "event": events.encode(ev)})


async def _rounds(f: Flusher, n: int = 10) -> None:
    for _ in range(n):
        if not await f.round():
            break


async def _logged(env: Any) -> list[tuple[str, int, int, int]]:
    async with env.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT request_id, prompt_tokens, completion_tokens, use_time_ms FROM logs"
            " ORDER BY request_id"
        )
    return [tuple(r) for r in rows]  # type: ignore[misc]


async def test_huge_token_counts_are_recorded(env: Any) -> None:
    uid, tok = await _world(env)
    await _add(env, uid, tok, "big", pt=10**12, ct=3 * 10**12, lat=10**11)
    f = Flusher(env.settings, env.pool, env.redis, Scripts.load())
    await f.setup()
    await _rounds(f)
    assert await _logged(env) == [("big", 10**12, 3 * 10**12, 10**11)]
    assert await env.redis.xlen(env.keys.stream_of_user(uid)) == 0


async def test_batch_refused_for_data_is_bisected_and_only_bad_events_dead_lettered(
    env: Any,
) -> None:
    uid, tok = await _world(env)
    for i in range(20):
        await _add(env, uid, tok, f"good{i:02d}", quota=2)
        if i == 5:
            await _add(env, uid, tok, "bad-range", pt=10**19)  # beyond BIGINT
        if i == 13:
            await _add(env, uid, tok, "bad-text", model="nul\u0000byte")  # PG text has no NUL
    f = Flusher(env.settings, env.pool, env.redis, Scripts.load())
    await f.setup()
    await _rounds(f)
    assert [r[0] for r in await _logged(env)] == [f"good{i:02d}" for i in range(20)]
    async with env.pool.acquire() as conn:
        used = await conn.fetchval("SELECT used_quota FROM tokens WHERE id = $1", tok)
    assert used == 40
    stream = env.keys.stream_of_user(uid)
    dead_key = env.keys.dead_letter(env.keys.shard_of(uid))
    assert dead_key == f"{stream}:dead"
    dead = await env.redis.xrange(dead_key)
    assert len(dead) == 2
    rids = sorted(events.decode(fields)["rid"] for _, fields in dead)
    assert rids == ["bad-range", "bad-text"]
    assert all(fields[b"dead_reason"] for _, fields in dead)
    assert f.dead_lettered == 2
    assert await env.redis.xlen(stream) == 0
    assert (await env.redis.xpending(stream, STREAM_GROUP))["pending"] == 0


@pytest.mark.parametrize(
    "outage",
    [
        asyncpg.ConnectionDoesNotExistError("connection lost"),
        ConnectionResetError("reset by peer"),
        asyncpg.exceptions.AdminShutdownError("terminating connection"),
    ],
)
async def test_outage_dead_letters_nothing_and_retries(
    env: Any, monkeypatch: Any, outage: Exception
) -> None:
    uid, tok = await _world(env)
    for i in range(5):
        await _add(env, uid, tok, f"r{i}")
    f = Flusher(env.settings, env.pool, env.redis, Scripts.load())
    await f.setup()

    async def down(conn: Any, rows: Any) -> int:
        raise outage

    real = fl.write_rows
    monkeypatch.setattr(fl, "write_rows", down)
    with pytest.raises(type(outage)):
        await f.round()
    stream = env.keys.stream_of_user(uid)
    assert await env.redis.xlen(env.keys.dead_letter(env.keys.shard_of(uid))) == 0
    assert await env.redis.xlen(stream) == 5
    monkeypatch.setattr(fl, "write_rows", real)
    f._own_pending = True  # what _run does after a failed round
    await _rounds(f)
    assert len(await _logged(env)) == 5
    assert f.dead_lettered == 0


async def test_dead_letter_is_exactly_once_when_the_ack_is_retried(
    env: Any, monkeypatch: Any
) -> None:
    """A round that dead-letters an entry and then fails (here: the ack of the good ones)
    is retried; the retry must not append the entry to the dead-letter stream again."""
    uid, tok = await _world(env)
    await _add(env, uid, tok, "good")
    await env.redis.xadd(env.keys.stream_of_user(uid), {"quota": 1, "event": b"[1, 2]"})
    f = Flusher(env.settings, env.pool, env.redis, Scripts.load())
    await f.setup()
    real_ack = f.ack
    failed = False

    async def flaky_ack(entries: Any) -> None:
        nonlocal failed
        if not failed:
            failed = True
            raise RedisConnectionError("reply lost")
        await real_ack(entries)

    monkeypatch.setattr(f, "ack", flaky_ack)
    with pytest.raises(RedisConnectionError):
        await f.round()
    f._own_pending = True
    await _rounds(f)
    assert [r[0] for r in await _logged(env)] == ["good"]
    assert await env.redis.xlen(f"{env.keys.stream_of_user(uid)}:dead") == 1
    assert await env.redis.xlen(env.keys.stream_of_user(uid)) == 0


async def test_event_with_impossible_timestamp_is_dead_lettered(env: Any) -> None:
    """A timestamp no month partition can hold (year > 9999, or beyond time_t) used to fail
    the partition step of every round (ValueError, or an OSError taken for an outage)."""
    uid, tok = await _world(env)
    await _add(env, uid, tok, "good1")
    for rid, ts in (("bad-year", 10**12), ("bad-time-t", 10**17), ("bad-int64", 10**19)):
        ev = {"rid": rid, "ts": ts, "user": uid, "token": tok}
        await env.redis.xadd(env.keys.stream_of_user(uid), {"quota": 1, "event": events.encode(ev)})
    await _add(env, uid, tok, "good2")
    f = Flusher(env.settings, env.pool, env.redis, Scripts.load())
    await f.setup()
    await _rounds(f)
    assert [r[0] for r in await _logged(env)] == ["good1", "good2"]
    dead = await env.redis.xrange(env.keys.dead_letter(env.keys.shard_of(uid)))
    assert sorted(events.decode(fields)["rid"] for _, fields in dead) == [
        "bad-int64",
        "bad-time-t",
        "bad-year",
    ]
    assert await env.redis.xlen(env.keys.stream_of_user(uid)) == 0
