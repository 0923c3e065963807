"""Done-when 6: a top-up and a set-remain issued through the API while 200 relay requests
are in flight on the token leave ``limit`` and ``used`` exactly right, in Redis and (after
flushing) in PostgreSQL. The upstream is slow (a model named ``*slow*`` makes the mock
sleep 0.5 s), so every edit lands between reservations and settlements."""

from __future__ import annotations

import asyncio

import aiohttp

from relaygate.admin import ROLE_ADMIN

from .api_fixtures import Api, make_user
from .helpers import bearer, flush_all, ledger, pg_token, refresh

SLOW = {"model": "gpt-slow", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
CHARGE = 30  # (10 prompt + 20 completion x ratio 1) x model ratio 1
FLIGHT = 200


async def user_ledger(env, user_id: int) -> tuple[int, int]:
    limit, used = await env.redis.hmget(env.keys.user(user_id), "limit", "used")
    return int(limit or 0), int(used or 0)


async def pg_user(env, user_id: int) -> tuple[int, int]:
    async with env.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT quota_limit, used_quota FROM users WHERE id = $1", user_id
        )
    return int(row["quota_limit"]), int(row["used_quota"])


async def log_sum(env, token_id: int) -> tuple[int, int]:
    async with env.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT count(*) AS n, COALESCE(sum(quota), 0) AS q FROM logs WHERE token_id = $1",
            token_id,
        )
    return int(row["n"]), int(row["q"])


async def flight(relay, key: str) -> list[asyncio.Task]:
    """Start FLIGHT slow requests on their own connections; returns the tasks."""
    url = str(relay.make_url("/v1/chat/completions"))
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def one() -> int:
        async with session.post(url, json=SLOW, headers=bearer(key)) as resp:
            await resp.read()
            return resp.status

    tasks = [asyncio.create_task(one()) for _ in range(FLIGHT)]
    requests = list(tasks)

    async def close_when_done() -> None:
        await asyncio.gather(*requests, return_exceptions=True)
        await session.close()

    tasks.append(asyncio.create_task(close_when_done()))
    return tasks


async def wait_reserved(env, user_id: int, token_id: int) -> None:
    """Until every request of the flight holds its reservation (used stops growing)."""
    last = -1
    for _ in range(100):
        _, used = await ledger(env, user_id, token_id)
        if used == last and used > 0:
            return
        last = used
        await asyncio.sleep(0.03)


async def test_edits_during_200_inflight_requests_are_exact(env, relay, mock_upstream):
    await env.admin.create_channel("mock", mock_upstream, "k", "gpt-4o-mini,gpt-slow")
    await env.admin.set_option("ModelRatio", '{"gpt-slow": 1}')
    await refresh(relay)
    initial_user = 50_000_000
    me = await make_user(env, "payer", ROLE_ADMIN, quota=initial_user)
    boss = await make_user(env, "boss", 100)
    api, root = Api(relay, me), Api(relay, boss)
    token = await api.ok("POST", "/api/token/", {"name": "busy", "remain_quota": 1_000_000})
    key, tid = token["key"], token["id"]

    # flight 1: set the token's remain, and top the user up, while 200 requests are open
    tasks = await flight(relay, key)
    await wait_reserved(env, me.id, tid)
    _, used_before = await ledger(env, me.id, tid)
    assert used_before >= FLIGHT * CHARGE  # reservations cover at least the final charge
    await api.ok("PUT", "/api/token/", {"id": tid, "remain_quota": 777_777})
    _, used_after = await ledger(env, me.id, tid)
    await root.ok(
        "POST",
        "/api/user/manage",
        {"id": me.id, "action": "add_quota", "mode": "add", "value": 123},
    )
    statuses = await asyncio.gather(*tasks[:FLIGHT])
    await tasks[-1]
    assert statuses == [200] * FLIGHT

    limit, used = await ledger(env, me.id, tid)
    assert used == FLIGHT * CHARGE  # every reservation settled to the exact charge
    assert used_before <= limit - 777_777 <= used_after  # remain was pinned against live used
    assert (await user_ledger(env, me.id))[0] == initial_user + 123  # top-up exact
    assert await flush_all(env) == FLIGHT
    assert await pg_token(env, tid) == (limit, used)
    assert await log_sum(env, tid) == (FLIGHT, used)
    assert await pg_user(env, me.id) == await user_ledger(env, me.id)
    view = await api.ok("GET", f"/api/token/{tid}")
    assert (view["remain_quota"], view["used_quota"]) == (limit - used, used)

    # flight 2: override (set remain) the user's balance while 200 requests are open
    tasks = await flight(relay, key)
    await wait_reserved(env, me.id, tid)
    _, user_used_before = await user_ledger(env, me.id)
    await root.ok(
        "POST",
        "/api/user/manage",
        {"id": me.id, "action": "add_quota", "mode": "override", "value": 5_000_000},
    )
    _, user_used_after = await user_ledger(env, me.id)
    statuses = await asyncio.gather(*tasks[:FLIGHT])
    await tasks[-1]
    assert statuses == [200] * FLIGHT
    user_limit, user_used = await user_ledger(env, me.id)
    assert user_used == 2 * FLIGHT * CHARGE
    assert user_used_before <= user_limit - 5_000_000 <= user_used_after
    assert await flush_all(env) == FLIGHT
    assert await pg_user(env, me.id) == (user_limit, user_used)
    limit2, used2 = await ledger(env, me.id, tid)
    assert (limit2, used2) == (limit, 2 * FLIGHT * CHARGE)
    assert await pg_token(env, tid) == (limit2, used2)
    assert await log_sum(env, tid) == (2 * FLIGHT, used2)
