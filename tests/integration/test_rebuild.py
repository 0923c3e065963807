"""A ledger hash missing from Redis is rebuilt from PostgreSQL, counting unflushed events
exactly once."""

from __future__ import annotations

import asyncio

import pytest

from .helpers import CHAT, bearer, flush_all, hook_world, ledger, pg_token


async def _chat(relay, key: str, model: str = "gpt-4o-mini") -> int:
    resp = await relay.post(
        "/v1/chat/completions", json={**CHAT, "model": model}, headers=bearer(key)
    )
    await resp.read()
    return resp.status


async def test_redis_restarted_empty_rebuilds_from_flushed_totals(env, mock_upstream, relay):
    uid, tok = await hook_world(env, relay, mock_upstream)
    key = f"sk-{tok.key}"
    for _ in range(5):
        assert await _chat(relay, key) == 200
    await flush_all(env)
    _, used_before = await ledger(env, uid, tok.id)
    # Redis loses everything of ours (restart without persistence).
    doomed = [k async for k in env.redis.scan_iter(match=f"{env.settings.key_prefix}:*")]
    await env.redis.delete(*doomed)
    assert await _chat(relay, key) == 200
    _, used_after = await ledger(env, uid, tok.id)
    assert used_after == used_before * 6 // 5
    await flush_all(env)
    assert await pg_token(env, tok.id) == (10**7, used_after)
    assert int(await env.redis.hget(env.keys.user(uid), "used")) == used_after


@pytest.mark.parametrize("flush_first", [False, True])
async def test_events_settled_while_the_hash_was_missing_are_counted_once(
    env, mock_upstream, relay, flush_first
):
    uid, tok = await hook_world(env, relay, mock_upstream)
    key = f"sk-{tok.key}"
    assert await _chat(relay, key) == 200  # ledger hashes exist, one event unflushed
    slow = asyncio.create_task(_chat(relay, key, "m-slow"))  # 0.5 s at the upstream
    await asyncio.sleep(0.2)
    await env.redis.delete(env.keys.token(uid, tok.id), env.keys.user(uid))  # lost mid-flight
    assert await slow == 200  # settles against missing hashes: an orphan event
    assert await env.redis.hget(env.keys.orphans(uid), f"t{tok.id}") == b"1"
    if flush_first:  # the backlog is in PostgreSQL before the rebuild: not counted twice
        await flush_all(env)
    assert await _chat(relay, key) == 200  # rebuild (PG + unflushed stream events) + a third
    assert await env.redis.hget(env.keys.orphans(uid), f"t{tok.id}") is None
    _, used = await ledger(env, uid, tok.id)
    await flush_all(env)
    async with env.pool.acquire() as conn:
        logged = await conn.fetchval("SELECT SUM(quota) FROM logs WHERE token_id = $1", tok.id)
        rows = await conn.fetchval("SELECT COUNT(*) FROM logs")
    assert rows == 3
    assert used == logged
    assert await pg_token(env, tok.id) == (10**7, used)
    assert int(await env.redis.hget(env.keys.user(uid), "used")) == used
