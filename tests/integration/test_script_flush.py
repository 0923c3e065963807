"""A SCRIPT FLUSH (or a Redis restart that lost the script cache) fails no request."""

from __future__ import annotations

import asyncio

from relaygate.appkeys import RUNTIME

from .helpers import CHAT, bearer, flush_all, ledger, refresh


async def test_script_flush_during_load_fails_nothing(env, mock_upstream, relay):
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", mock_upstream, "k", "gpt-4o-mini")
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**9)

    async def one() -> int:
        resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
        await resp.read()
        return resp.status

    async def flusher() -> None:
        for _ in range(10):
            await env.redis.script_flush()
            await asyncio.sleep(0.01)

    results = await asyncio.gather(*(one() for _ in range(300)), flusher())
    statuses = results[:-1]
    assert statuses == [200] * 300
    # Settles whose reply was NOSCRIPT are re-run in the background after the answer went
    # out; a relay finishes them before it stops.
    await relay.app[RUNTIME].background.drain(10)
    assert await flush_all(env) == 300
    _, used = await ledger(env, uid, tok.id)
    async with env.pool.acquire() as conn:
        assert await conn.fetchval("SELECT used_quota FROM tokens WHERE id = $1", tok.id) == used
