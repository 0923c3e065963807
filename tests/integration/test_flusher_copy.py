"""Issue 16: the flusher's COPY path is exactly once too.

A batch is COPYed into ``logs`` when none of its events is recorded yet; when one is (a
flusher died between its commit and its XACK, and the entries were redelivered), the COPY
fails whole and the batch goes the INSERT ... ON CONFLICT DO NOTHING way: the recorded ones
are skipped, the new ones added, every total exact."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import relaygate.store.logs as logs
from relaygate import events
from relaygate.flusher import Flusher, prepare
from relaygate.keys import STREAM_GROUP
from relaygate.ledger import Scripts


async def _world(env: Any) -> tuple[int, int, int]:
    uid, _ = await env.root_user()
    a = await env.admin.create_token(uid, "a", remain_quota=10**6)
    b = await env.admin.create_token(uid, "b", remain_quota=10**6)
    return uid, int(a.id), int(b.id)


async def _add(env: Any, uid: int, tok: int, rid: str, quota: int) -> None:
    ev = {"rid": rid, "ts": int(time.time()), "user": uid, "token": tok, "chan": 0}
    await env.redis.xadd(env.keys.stream_of_user(uid), {"quota": quota, "event": events.encode(ev)})


async def _books(env: Any, uid: int) -> tuple[list[str], dict[int, int], int, int]:
    async with env.pool.acquire() as conn:
        rids = [r[0] for r in await conn.fetch("SELECT request_id FROM logs ORDER BY 1")]
        toks = dict(await conn.fetch("SELECT id, used_quota FROM tokens WHERE user_id = $1", uid))
        used, count = await conn.fetchrow(
            "SELECT used_quota, request_count FROM users WHERE id = $1", uid
        )
    return rids, toks, used, count


async def _drain(f: Flusher) -> None:
    for _ in range(20):
        if not await f.round():
            return


class _Paths:
    """Counts the calls of the two ways to write a batch."""

    def __init__(self, monkeypatch: Any) -> None:
        self.copies = self.inserts = 0
        real_copy, real_insert = logs.copy_rows, logs.write_columns

        async def copy_rows(conn: Any, rows: Any) -> int:
            self.copies += 1
            return await real_copy(conn, rows)

        async def write_columns(conn: Any, cols: Any) -> int:
            self.inserts += 1
            return await real_insert(conn, cols)

        monkeypatch.setattr(logs, "copy_rows", copy_rows)
        monkeypatch.setattr(logs, "write_columns", write_columns)


async def test_a_fresh_batch_is_copied(env: Any, monkeypatch: Any) -> None:
    uid, a, b = await _world(env)
    for i in range(10):
        await _add(env, uid, a if i % 2 else b, f"r{i:02d}", quota=i + 1)
    paths = _Paths(monkeypatch)
    f = Flusher(env.settings, env.pool, env.redis, Scripts.load())
    await f.setup()
    await _drain(f)
    rids, toks, used, count = await _books(env, uid)
    assert rids == [f"r{i:02d}" for i in range(10)]
    assert toks == {a: 2 + 4 + 6 + 8 + 10, b: 1 + 3 + 5 + 7 + 9}
    assert (used, count) == (55, 10)
    assert (paths.copies, paths.inserts) == (1, 0)
    assert f.flushed == 10


async def test_killed_between_commit_and_xack_then_claimed_counts_once(
    env: Any, monkeypatch: Any
) -> None:
    """The state a SIGKILL right after the commit leaves: rows and totals committed, the
    entries pending under a consumer that will never ack them. Another flusher claims them
    (with newer entries in the same batch) and records only what is new."""
    uid, a, b = await _world(env)
    for i in range(6):
        await _add(env, uid, a, f"old{i}", quota=10)
    settings = env.settings.replace(flush_claim_idle_ms=1)
    dead = Flusher(settings, env.pool, env.redis, Scripts.load())
    await dead.setup()
    await dead.write_batch(prepare(await dead.read()))  # committed; never acked: "killed"
    stream = env.keys.stream_of_user(uid)
    assert (await env.redis.xpending(stream, STREAM_GROUP))["pending"] == 6
    for i in range(4):
        await _add(env, uid, b, f"new{i}", quota=1)
    await asyncio.sleep(0.01)  # idle past flush_claim_idle_ms
    paths = _Paths(monkeypatch)
    heir = Flusher(settings, env.pool, env.redis, Scripts.load())
    await heir.setup()
    await _drain(heir)
    rids, toks, used, count = await _books(env, uid)
    assert rids == sorted([f"old{i}" for i in range(6)] + [f"new{i}" for i in range(4)])
    assert toks == {a: 60, b: 4}
    assert (used, count) == (64, 10)
    assert paths.inserts >= 1  # the batch with recorded events went the ON CONFLICT way
    assert heir.flushed == 4
    assert await env.redis.xlen(stream) == 0
    assert (await env.redis.xpending(stream, STREAM_GROUP))["pending"] == 0


async def test_two_flushers_writing_the_same_batch_at_once_count_it_once(env: Any) -> None:
    """Both COPY the same rows at the same moment (a claim racing a slow flusher): the
    second waits on the unique key, fails when the first commits, and then skips them all."""
    uid, a, _ = await _world(env)
    for i in range(50):
        await _add(env, uid, a, f"r{i:02d}", quota=3)
    one = Flusher(env.settings, env.pool, env.redis, Scripts.load())
    two = Flusher(env.settings, env.pool, env.redis, Scripts.load())
    await one.setup()
    batch = prepare(await one.read())
    assert len(batch.rows) == 50
    await asyncio.gather(one.write_batch(batch), two.write_batch(batch))
    rids, toks, used, count = await _books(env, uid)
    assert len(rids) == 50
    assert toks[a] == 150
    assert (used, count) == (150, 50)
    assert one.flushed + two.flushed == 50


async def test_a_batch_partly_recorded_adds_only_the_new_events(env: Any, monkeypatch: Any) -> None:
    uid, a, b = await _world(env)
    for i in range(6):
        await _add(env, uid, a if i < 3 else b, f"r{i}", quota=i + 1)
    f = Flusher(env.settings, env.pool, env.redis, Scripts.load())
    await f.setup()
    entries = await f.read()
    await f.write_batch(prepare(entries[:3]))
    paths = _Paths(monkeypatch)
    await f.write_batch(prepare(entries))
    rids, toks, used, count = await _books(env, uid)
    assert rids == [f"r{i}" for i in range(6)]
    assert toks == {a: 1 + 2 + 3, b: 4 + 5 + 6}
    assert (used, count) == (21, 6)
    assert (paths.copies, paths.inserts) == (1, 1)
    assert f.flushed == 6
