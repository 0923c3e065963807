"""Issue 9: a short history checker (Jepsen-style, in-process): two relays on a private
Redis, hot tokens with small quotas, clients with and without max_tokens, and a fault
schedule (Redis stalls, SCRIPT FLUSH, Redis killed and restarted from its AOF) while
answers are delivered. After the drain the books must balance exactly, per token:
cost of what the upstream delivered == Redis used == PostgreSQL log rows, never more than
the quota, no request logged twice, no reservation left, no request hung."""

from __future__ import annotations

import asyncio
import os
import pathlib
import random
import time
from collections import Counter, defaultdict
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from relaygate.pricing import PriceBook
from relaygate.relay.handlers import RUNTIME

from .helpers import bearer, flush_all
from .privredis import PrivateRedis
from .test_money_exact import _app_on, long_answer_upstream

DURATION = float(os.environ.get("RELAYGATE_SOAK_SECONDS", "0"))
CLIENTS = 12
HANG_BOUND = 20.0  # seconds: deadline + upstream time + generous slack


async def _fault_cycle(redis: PrivateRedis, url: str, log: Counter[str]) -> None:
    """One round of every fault, ~12 s: stall, SCRIPT FLUSH, kill + AOF restart, stall."""

    async def at(t0: float, when: float) -> None:
        await asyncio.sleep(max(0.0, t0 + when - time.monotonic()))

    t0 = time.monotonic()
    await at(t0, 2)
    redis.pause()
    log["redis_stall"] += 1
    await asyncio.sleep(2.0)
    redis.resume()
    await at(t0, 5)
    admin = Redis.from_url(url)
    await admin.script_flush()
    await admin.aclose()
    log["script_flush"] += 1
    await at(t0, 7)
    redis.stop()
    log["redis_restart"] += 1
    await asyncio.sleep(2.0)
    redis.start()
    await at(t0, 11)
    redis.pause()
    log["redis_stall"] += 1
    await asyncio.sleep(1.0)
    redis.resume()
    await at(t0, 12)


async def _faults(redis: PrivateRedis, url: str, log: Counter[str], stop: asyncio.Event) -> None:
    """Fault cycles for RELAYGATE_SOAK_SECONDS (default one cycle; ``make soak`` runs 600)."""
    end = time.monotonic() + DURATION
    while True:
        await _fault_cycle(redis, url, log)
        if time.monotonic() >= end:
            break
    stop.set()


async def test_books_balance_under_redis_faults(env: Any, tmp_path: pathlib.Path) -> None:
    private = PrivateRedis()
    private.start()
    upstream = TestServer(long_answer_upstream(delay=0.05), host="127.0.0.1")
    await upstream.start_server()
    s = env.settings.replace(
        redis_url=private.url, redis_timeout=0.5, journal_dir=str(tmp_path), heartbeat_ttl=3
    )
    uid, _ = await env.root_user()
    await env.admin.create_channel(
        "long", str(upstream.make_url("")).rstrip("/"), "k", "gpt-4o-mini"
    )
    rates = PriceBook().rates("gpt-4o-mini", "default")
    assert rates is not None
    hot_quota = 2 * rates.charge(300, 16384)
    tokens = [
        await env.admin.create_token(uid, f"hot{i}", remain_quota=hot_quota) for i in range(3)
    ]
    tokens.append(await env.admin.create_token(uid, "ample", remain_quota=10**9))
    names = {tok.id: f"hot{i}" if i < 3 else "ample" for i, tok in enumerate(tokens)}
    relays: list[TestClient] = [await _app_on(s), await _app_on(s)]
    delivered: dict[int, int] = defaultdict(int)
    answered: list[str] = []
    outcomes: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    hung: list[float] = []
    stop = asyncio.Event()
    rng = random.Random(9)

    async def client() -> None:
        while not stop.is_set():
            tok = rng.choice(tokens)
            body: dict[str, Any] = {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "hi"}],
            }
            if rng.random() < 0.5:
                body["max_tokens"] = rng.randint(50, 3000)
            relay = rng.choice(relays)
            t = time.monotonic()
            try:
                resp = await asyncio.wait_for(
                    relay.post("/v1/chat/completions", json=body, headers=bearer(tok.key)),
                    HANG_BOUND,
                )
                data = await resp.json()
            except TimeoutError:
                hung.append(time.monotonic() - t)
                continue
            if resp.status == 200:
                usage = data["usage"]
                delivered[tok.id] += rates.charge(
                    usage["prompt_tokens"], usage["completion_tokens"]
                )
                answered.append(resp.headers["X-Oneapi-Request-Id"])
                outcomes["200"] += 1
            else:
                outcomes[f"{resp.status} {data['error']['code']}"] += 1
                await asyncio.sleep(0.05)

    try:
        await asyncio.gather(
            _faults(private, private.url, faults, stop), *(client() for _ in range(CLIENTS))
        )
        for relay in relays:  # drain: every kept settle applied
            for _ in range(200):
                if relay.app[RUNTIME].settles.pending == 0:
                    break
                await asyncio.sleep(0.1)
        redis = Redis.from_url(private.url)
        env.settings, env.redis = env.settings.replace(redis_url=private.url), redis
        await flush_all(env, rounds=200)
        print(f"\nhistory: {dict(outcomes)}; faults: {dict(faults)}; "
              f"kept settles: {[r.app[RUNTIME].settles.kept_total for r in relays]}")  # fmt: skip
        violations: list[str] = []
        if hung:
            violations.append(f"{len(hung)} requests hung past {HANG_BOUND}s")
        for shard in range(env.keys.shards):
            left = await redis.zcard(env.keys.reservations_of_shard(shard))
            if left:
                violations.append(f"{left} reservations left in shard {shard}")
        async with env.pool.acquire() as conn:
            rows = await conn.fetch("SELECT token_id, quota, request_id FROM logs")
        logged: dict[int, int] = defaultdict(int)
        for row in rows:
            logged[row["token_id"]] += row["quota"]
        dupes = [rid for rid, n in Counter(r["request_id"] for r in rows).items() if n > 1]
        if dupes:
            violations.append(f"request ids logged twice: {dupes[:3]}")
        if sorted(answered) != sorted(r["request_id"] for r in rows):
            violations.append(f"{len(answered)} answered vs {len(rows)} logged")
        for tok in tokens:
            used = int(await redis.hget(env.keys.token(uid, tok.id), "used") or 0)
            books = (delivered[tok.id], used, logged[tok.id])
            if len(set(books)) != 1:
                violations.append(f"token {names[tok.id]}: delivered/used/logged {books}")
            if names[tok.id].startswith("hot") and delivered[tok.id] > hot_quota:
                violations.append(
                    f"token {names[tok.id]}: delivered {delivered[tok.id]} > quota {hot_quota}"
                )
        await redis.aclose()
        assert all(faults[k] > 0 for k in ("redis_stall", "script_flush", "redis_restart"))
        assert outcomes["200"] > 0
        assert not violations, violations
    finally:
        stop.set()
        for relay in relays:
            await relay.close()
        await upstream.close()
        private.close()
