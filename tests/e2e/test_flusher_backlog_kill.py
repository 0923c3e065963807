"""Issue 16: SIGKILL of `relaygate worker` in the middle of a backlog, where its rounds
overlap (a batch being written, the next prefetched, the previous one's XACK + XDEL in
flight), loses and duplicates nothing. Two workers are killed at whatever point of their
round they happen to be; a third claims what they left pending and drains the rest."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from relaygate import events
from relaygate.keys import STREAM_GROUP

from .procs import Proc, Stack

EVENTS = 30_000
BATCH = "500"  # RELAYGATE_FLUSH_BATCH: 60 full batches, so the rounds overlap
# A stall guard, not a speed bound: the test fails only when the backlog has not shrunk by
# a single event over STALL_POLLS polls in a row while the worker is alive (a stuck
# flusher, however slow the box); every event flushed restarts the count. No elapsed time
# is measured or compared.
POLL = 0.002  # seconds between polls of the backlog
STALL_POLLS = 30_000  # polls in a row without one event flushed: a stuck flusher (>= 60 s)


async def _push(env: Any, uid: int, tokens: list[int]) -> dict[int, int]:
    """EVENTS usage events as settle.lua writes them; returns each token's quota."""
    want = dict.fromkeys(tokens, 0)
    now = int(time.time())
    stream = env.keys.stream_of_user(uid)
    pipe = env.redis.pipeline(transaction=False)
    for i in range(EVENTS):
        tok, quota = tokens[i % len(tokens)], 1 + i % 5
        want[tok] += quota
        ev = {"rid": f"bk{i:06d}", "ts": now, "user": uid, "token": tok, "chan": 0}
        pipe.xadd(stream, {"quota": quota, "event": events.encode(ev)})
        if len(pipe) >= 2000:
            await pipe.execute()
    await pipe.execute()
    return want


async def _left(env: Any) -> int:
    return int(sum([await env.redis.xlen(s) for s in env.keys.streams()]))


async def _until_left_below(env: Any, n: int, worker: Proc) -> None:
    """Until fewer than ``n`` events are left, failing on no progress (never on elapsed time)."""
    low, idle = await _left(env), 0
    while (left := await _left(env)) >= n:
        assert worker.popen and worker.popen.poll() is None, f"{worker.log.read_text()[-2000:]}"
        if left < low:
            low, idle = left, 0
        idle += 1
        assert idle < STALL_POLLS, (
            f"no event flushed in {idle} polls; the backlog is stuck at {left}"
        )
        await asyncio.sleep(POLL)


async def test_worker_sigkilled_twice_mid_backlog_records_every_event_once(
    env: Any, stack: Stack
) -> None:
    uid, _ = await env.root_user()
    tokens = [
        int((await env.admin.create_token(uid, f"t{i}", remain_quota=10**9)).id) for i in range(3)
    ]
    want = await _push(env, uid, tokens)
    stream = env.keys.stream_of_user(uid)
    left_pending = 0
    for name, done in (("a", 1_500), ("b", 4_000)):
        worker = stack.worker(name, RELAYGATE_FLUSH_BATCH=BATCH)
        await _until_left_below(env, EVENTS - done, worker)
        worker.kill()
        left_pending += (await env.redis.xpending(stream, STREAM_GROUP))["pending"]
    assert left_pending  # read but not acked: the heir has to claim them
    heir = stack.worker("c", RELAYGATE_FLUSH_BATCH=BATCH)  # claims a's and b's pending entries
    await _until_left_below(env, 1, heir)
    async with env.pool.acquire() as conn:
        rows, distinct = await conn.fetchrow(
            "SELECT count(*), count(DISTINCT request_id) FROM logs WHERE user_id = $1", uid
        )
        used = dict(
            await conn.fetch(
                "SELECT id, used_quota FROM tokens WHERE id = ANY($1::bigint[])", tokens
            )
        )
        user_used, count = await conn.fetchrow(
            "SELECT used_quota, request_count FROM users WHERE id = $1", uid
        )
    assert (rows, distinct) == (EVENTS, EVENTS)
    assert used == want
    assert (user_used, count) == (sum(want.values()), EVENTS)
