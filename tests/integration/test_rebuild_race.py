"""Item 4 of issue 9: a ledger rebuild must count an orphan event exactly once even when the
flusher commits (and XDELs) it while the rebuild runs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relaygate.appkeys import RUNTIME

from .helpers import CHAT, bearer, flush_all, hook_world, ledger


async def _chat(relay: Any, key: str, model: str = "gpt-4o-mini") -> int:
    resp = await relay.post(
        "/v1/chat/completions", json={**CHAT, "model": model}, headers=bearer(key)
    )
    await resp.read()
    return int(resp.status)


@pytest.mark.parametrize("flush_when", ["before_stream_read", "after_stream_read"])
async def test_rebuild_reads_stream_before_snapshot(
    env: Any, mock_upstream: str, relay: Any, flush_when: str
) -> None:
    uid, tok = await hook_world(env, relay, mock_upstream)
    key = f"sk-{tok.key}"
    assert await _chat(relay, key) == 200
    for i in range(2):  # two orphan events (settled while the hashes were missing)
        slow = asyncio.create_task(_chat(relay, key, "m-slow"))
        await asyncio.sleep(0.2)
        await env.redis.delete(env.keys.token(uid, tok.id), env.keys.user(uid))
        assert await slow == 200
        if i == 0:
            await flush_all(env)
    rt = relay.app[RUNTIME]
    real_xrange = rt.accounts.redis.xrange
    fired = False

    async def xrange_with_a_flush(*a: Any, **k: Any) -> Any:
        """The flusher commits + XACKs + XDELs the orphan event during the rebuild."""
        nonlocal fired
        if fired:
            return await real_xrange(*a, **k)
        fired = True
        if flush_when == "before_stream_read":
            await flush_all(env)
            return await real_xrange(*a, **k)
        page = await real_xrange(*a, **k)
        await flush_all(env)
        return page

    rt.accounts.redis.xrange = xrange_with_a_flush
    try:
        assert await _chat(relay, key) == 200  # triggers the rebuild
    finally:
        rt.accounts.redis.xrange = real_xrange
    assert fired
    _, used = await ledger(env, uid, tok.id)
    await flush_all(env)
    async with env.pool.acquire() as conn:
        logged = await conn.fetchval("SELECT SUM(quota) FROM logs WHERE token_id = $1", tok.id)
    assert used == logged, (used, logged)
