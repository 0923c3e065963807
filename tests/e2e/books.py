"""Seeding and the "books balance" check shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Seeded:
    user_id: int
    token_ids: list[int]
    keys: list[str]


async def seed(env: Any, upstream: str, tokens: int = 4, quota: int = 10**9) -> Seeded:
    user_id, _ = await env.root_user()
    await env.admin.create_channel("mock", upstream, "upstream-secret", "gpt-4o-mini,gpt-4o")
    ids, keys = [], []
    for i in range(tokens):
        t = await env.admin.create_token(user_id, f"t{i}", remain_quota=quota)
        ids.append(t.id)
        keys.append(f"sk-{t.key}")
    return Seeded(user_id, ids, keys)


async def wait_drained(env: Any, timeout: float = 60.0) -> None:
    """Until every usage event is in PostgreSQL and every open reservation is settled or reaped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = sum([await env.redis.xlen(s) for s in env.keys.streams()])
        open_resv = sum(
            [
                await env.redis.zcard(env.keys.reservations_of_shard(s))
                for s in range(env.settings.shards)
            ]
        )
        if events == 0 and open_resv == 0:
            return
        await asyncio.sleep(0.25)
    raise AssertionError(f"not drained: {events} events, {open_resv} open reservations")


async def assert_books_balance(
    env: Any, seeded: Seeded, ok_rids: Sequence[str], max_unacknowledged: int = 0
) -> None:
    """PostgreSQL has one row per successful request (plus at most ``max_unacknowledged``
    rows for requests settled by a relay that died before the client read the answer), and
    every token's and the user's used quota agree between PostgreSQL and Redis."""
    async with env.pool.acquire() as conn:
        rids = [r["request_id"] for r in await conn.fetch("SELECT request_id FROM logs")]
        pg_used = {
            r["id"]: int(r["used_quota"])
            for r in await conn.fetch(
                "SELECT id, used_quota FROM tokens WHERE id = ANY($1)", seeded.token_ids
            )
        }
        pg_user = int(
            await conn.fetchval("SELECT used_quota FROM users WHERE id = $1", seeded.user_id)
        )
        pg_sum = int(await conn.fetchval("SELECT COALESCE(SUM(quota), 0) FROM logs"))
    assert len(rids) == len(set(rids)), "a usage event was recorded twice"
    missing = set(ok_rids) - set(rids)
    assert not missing, f"{len(missing)} successful requests have no log row"
    extra = set(rids) - set(ok_rids)
    assert len(extra) <= max_unacknowledged, f"{len(extra)} rows for requests that did not succeed"
    for tid in seeded.token_ids:
        used = int(await env.redis.hget(env.keys.token(seeded.user_id, tid), "used") or 0)
        assert pg_used[tid] == used, f"token {tid}: PostgreSQL {pg_used[tid]} != Redis {used}"
    user_used = int(await env.redis.hget(env.keys.user(seeded.user_id), "used") or 0)
    assert pg_user == user_used == pg_sum
