"""The hot path's Redis connection dropped under load: every answered request is charged
exactly once (its settle reply may be lost after the answer went out), nothing else is, and
no reservation is left behind."""

from __future__ import annotations

import asyncio

from relaygate.appkeys import RUNTIME
from relaygate.ledger import parse_reservation_member

from .helpers import bearer, flush_all, ledger, pg_token, refresh

PER_CALL_MODEL = "mock-percall"
PRICE_QUOTA = 500  # 0.001 USD per call


async def test_dropped_hot_connection_loses_and_doubles_nothing(env, mock_upstream, relay):
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", mock_upstream, "k", PER_CALL_MODEL)
    await env.admin.set_option("ModelPrice", f'{{"{PER_CALL_MODEL}": 0.001}}')
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**9)
    rt = relay.app[RUNTIME]
    body = {"model": PER_CALL_MODEL, "messages": [{"role": "user", "content": "x"}]}

    async def one() -> int:
        resp = await relay.post("/v1/chat/completions", json=body, headers=bearer(f"sk-{tok.key}"))
        await resp.read()
        return resp.status

    async def kill_hot_connection(times: int) -> int:
        killed = 0
        for _ in range(times):
            await asyncio.sleep(0.02)
            try:
                client_id = await asyncio.wait_for(rt.hot.execute_command("CLIENT", "ID"), 5)
            except Exception:
                continue  # reconnecting right now
            killed += await env.redis.client_kill_filter(_id=str(client_id))
        return killed

    results = await asyncio.gather(*(one() for _ in range(400)), kill_hot_connection(4))
    statuses, killed = results[:-1], results[-1]
    assert killed >= 1
    assert set(statuses) <= {200, 503}, set(statuses)
    answered = statuses.count(200)
    assert answered > 0

    # Settles whose reply was lost are re-run (idempotently), and reservations made by
    # reserves whose reply was lost (their clients got 503) are given back, in the background.
    await rt.background.drain(10)
    # Kept settles are replayed by the keeper's own loop, with backoff: wait until none is
    # left rather than race it (the answered requests' events reach the stream with them).
    for _ in range(200):
        if not rt.settles.pending:
            break
        await asyncio.sleep(0.05)
    assert not rt.settles.pending, "kept settles were never applied"
    assert await flush_all(env) == answered, "one usage row per answered request"
    left = [
        parse_reservation_member(m.decode())
        for m in await env.redis.zrange(env.keys.reservations(uid), 0, -1)
    ]
    assert left == [], "every reservation was settled or given back"
    assert await ledger(env, uid, tok.id) == (10**9, answered * PRICE_QUOTA)
    assert await pg_token(env, tok.id) == (10**9, answered * PRICE_QUOTA)
