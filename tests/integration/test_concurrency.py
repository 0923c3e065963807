"""No overspend under concurrency: exact counts against the real Redis (cf. limits' tests)."""

from __future__ import annotations

import asyncio

from .helpers import bearer, flush_all, ledger, pg_token, refresh

PER_CALL_MODEL = "mock-percall"
PRICE_QUOTA = 500  # 0.001 USD per call


async def _setup(env, relay, upstream, user_quota: int) -> int:
    uid, _ = await env.root_user(quota=user_quota)
    await env.admin.create_channel("mock", upstream, "k", f"gpt-4o-mini,{PER_CALL_MODEL}")
    await env.admin.set_option("ModelPrice", f'{{"{PER_CALL_MODEL}": 0.001}}')
    await refresh(relay)
    return uid


async def _fire(
    relay, keys: list[str], n: int, model: str = PER_CALL_MODEL
) -> list[tuple[int, dict]]:
    body = {"model": model, "messages": [{"role": "user", "content": "x"}]}

    async def one(i: int) -> tuple[int, dict]:
        resp = await relay.post(
            "/v1/chat/completions", json=body, headers=bearer(keys[i % len(keys)])
        )
        return resp.status, await resp.json()

    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_token_quota_for_exactly_50_of_300(env, mock_upstream, relay):
    uid = await _setup(env, relay, mock_upstream, user_quota=10**12)
    tok = await env.admin.create_token(uid, "t", remain_quota=50 * PRICE_QUOTA)
    results = await _fire(relay, [f"sk-{tok.key}"], 300)
    statuses = [s for s, _ in results]
    assert statuses.count(200) == 50
    assert statuses.count(429) == 250
    refused = [b for s, b in results if s == 429]
    assert all(b["error"]["type"] == "insufficient_quota" for b in refused)
    assert await ledger(env, uid, tok.id) == (50 * PRICE_QUOTA, 50 * PRICE_QUOTA)
    assert await flush_all(env) == 50
    assert await pg_token(env, tok.id) == (50 * PRICE_QUOTA, 50 * PRICE_QUOTA)


async def test_user_balance_shared_by_tokens_exactly_50_of_300(env, mock_upstream, relay):
    uid = await _setup(env, relay, mock_upstream, user_quota=50 * PRICE_QUOTA)
    tokens = [await env.admin.create_token(uid, f"t{i}", unlimited=True) for i in range(5)]
    results = await _fire(relay, [f"sk-{t.key}" for t in tokens], 300)
    statuses = [s for s, _ in results]
    assert statuses.count(200) == 50
    assert statuses.count(429) == 250
    assert all(b["error"]["code"] == "insufficient_user_quota" for s, b in results if s == 429)
    used = sum([(await ledger(env, uid, t.id))[1] for t in tokens])
    assert used == 50 * PRICE_QUOTA
    assert int(await env.redis.hget(env.keys.user(uid), "used")) == 50 * PRICE_QUOTA
    await flush_all(env)
    async with env.pool.acquire() as conn:
        pg_user = await conn.fetchval("SELECT used_quota FROM users WHERE id = $1", uid)
        pg_tokens = await conn.fetchval(
            "SELECT SUM(used_quota) FROM tokens WHERE user_id = $1", uid
        )
    assert pg_user == pg_tokens == 50 * PRICE_QUOTA


async def test_token_priced_model_never_spends_past_quota(env, mock_upstream, relay):
    """Per-token pricing reserves an upper bound; whatever the interleaving, used <= limit."""
    uid = await _setup(env, relay, mock_upstream, user_quota=10**12)
    limit = 2000
    tok = await env.admin.create_token(uid, "t", remain_quota=limit)
    results = await _fire(relay, [f"sk-{tok.key}"], 300, model="gpt-4o-mini")
    ok = [s for s, _ in results].count(200)
    assert ok > 0
    assert {s for s, _ in results} <= {200, 429}
    _, used = await ledger(env, uid, tok.id)
    assert used <= limit
    await flush_all(env)
    assert await pg_token(env, tok.id) == (limit, used)
    async with env.pool.acquire() as conn:
        rows = await conn.fetchval("SELECT COUNT(*) FROM logs")
    assert rows == ok
