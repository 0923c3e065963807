"""Issue 9: money stays exact under concurrency and Redis faults (real Redis and PostgreSQL;
faults only on a private redis-server the test starts itself)."""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from relaygate import ledger
from relaygate.app import init_app
from relaygate.appkeys import RUNTIME
from relaygate.ledger import ReserveRequest, Scripts
from relaygate.pricing import PriceBook
from tests.prodserver import ProductionServer

from .helpers import CHAT, bearer, flush_all
from .privredis import PrivateRedis

LONG_ANSWER = 8000  # completion tokens an unbounded answer runs to (far above any allowance)


def long_answer_upstream(delay: float = 0.3) -> web.Application:
    """Honours max_tokens; without it answers LONG_ANSWER tokens; reports exact usage."""

    async def chat(request: web.Request) -> web.Response:
        body = await request.json()
        bound = body.get("max_completion_tokens") or body.get("max_tokens")
        completion = min(bound, LONG_ANSWER) if bound else LONG_ANSWER
        await asyncio.sleep(delay)
        answer = {
            "id": "x",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "w " * 50}}],
            "usage": {"prompt_tokens": 10, "completion_tokens": completion},
        }
        return web.json_response(answer)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    return app


@pytest.fixture
async def long_upstream() -> AsyncIterator[str]:
    server = TestServer(long_answer_upstream(), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def test_concurrent_requests_without_max_tokens_never_deliver_past_the_quota(
    env: Any, relay: TestClient, long_upstream: str
) -> None:
    """Item 1: 40 concurrent requests without max_tokens on a quota worth 3 full answers.
    What the upstream delivered (its usage) is charged exactly and never exceeds the quota."""
    uid, _ = await env.root_user()
    await env.admin.create_channel("long", long_upstream, "k", "gpt-4o-mini")
    await relay.app[RUNTIME].catalog.reload_channels()
    rates = PriceBook().rates("gpt-4o-mini", "default")
    assert rates is not None
    quota = 3 * rates.charge(200, 16384)
    tok = await env.admin.create_token(uid, "t", remain_quota=quota)

    async def one() -> tuple[int, Any]:
        resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(tok.key))
        return resp.status, await resp.json()

    results = await asyncio.gather(*(one() for _ in range(40)))
    delivered = sum(
        rates.charge(b["usage"]["prompt_tokens"], b["usage"]["completion_tokens"])
        for status, b in results
        if status == 200
    )
    used = int(await env.redis.hget(env.keys.token(uid, tok.id), "used"))
    assert any(status == 200 for status, _ in results)
    assert delivered <= quota, f"delivered {delivered / quota:.1f}x the quota"
    assert used == delivered
    assert await env.redis.zcard(env.keys.reservations(uid)) == 0


@pytest.fixture
async def private_redis() -> AsyncIterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.close()


async def _app_on(settings: Any) -> TestClient:
    client = TestClient(ProductionServer(init_app(settings), host="127.0.0.1"))
    await client.start_server()
    return client


async def _world(env: Any, upstream: str) -> tuple[int, Any]:
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", upstream, "k", "gpt-4o-mini,m-slow")
    await env.admin.set_option("ModelRatio", '{"m-slow": 1}')
    tok = await env.admin.create_token(uid, "t", remain_quota=10**7)
    return uid, tok


async def test_stalled_redis_fails_requests_fast_and_recovers_without_restart(
    env: Any, mock_upstream: str, private_redis: PrivateRedis, tmp_path: pathlib.Path
) -> None:
    """Item 3: with Redis SIGSTOPped, requests get 503 ledger_unavailable within the
    deadline instead of hanging; after SIGCONT they succeed on the same process."""
    s = env.settings.replace(
        redis_url=private_redis.url, redis_timeout=0.5, journal_dir=str(tmp_path)
    )
    _, tok = await _world(env, mock_upstream)
    client = await _app_on(s)
    try:
        assert (
            await client.post("/v1/chat/completions", json=CHAT, headers=bearer(tok.key))
        ).status == 200
        private_redis.pause()
        statuses: list[tuple[int, str]] = []

        async def three_requests() -> None:
            for _ in range(3):
                resp = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(tok.key))
                body = await resp.json()
                statuses.append((resp.status, body["error"]["code"]))

        # three deadlines of 0.5 s; a hang (no deadline) would run into this bound and raise
        await asyncio.wait_for(three_requests(), 8)
        assert statuses == [(503, "ledger_unavailable")] * 3
        private_redis.resume()
        for _ in range(50):
            resp = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(tok.key))
            if resp.status == 200:
                break
            await asyncio.sleep(0.1)
        assert resp.status == 200
    finally:
        private_redis.resume()
        await client.close()


async def _reserved(server: PrivateRedis, resv_key: str) -> None:
    """Wait until the request in flight holds its reservation (it is then at the upstream)."""
    redis = Redis.from_url(server.url)
    try:
        for _ in range(200):
            if await redis.zcard(resv_key):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the request never reserved")
    finally:
        await redis.aclose()


async def _settled_books(env: Any, redis: Redis, uid: int, tok_id: int) -> tuple[int, int, int]:
    used = int(await redis.hget(env.keys.token(uid, tok_id), "used") or 0)
    async with env.pool.acquire() as conn:
        logged = await conn.fetchval("SELECT COALESCE(SUM(quota), 0) FROM logs")
        rows = await conn.fetchval("SELECT COUNT(*) FROM logs")
    return used, int(logged), int(rows)


async def test_answer_delivered_during_a_redis_outage_is_charged_and_logged_once(
    env: Any, mock_upstream: str, private_redis: PrivateRedis, tmp_path: pathlib.Path
) -> None:
    """Item 2: Redis goes away while an answer is produced; the client gets it; Redis comes
    back from its AOF later; the kept settle is replayed: charged once, logged once."""
    s = env.settings.replace(
        redis_url=private_redis.url, redis_timeout=0.5, journal_dir=str(tmp_path)
    )
    uid, tok = await _world(env, mock_upstream)
    client = await _app_on(s)
    redis = Redis.from_url(private_redis.url)
    try:
        slow = {**CHAT, "model": "m-slow"}  # the mock answers after 0.5 s
        req = asyncio.create_task(
            client.post("/v1/chat/completions", json=slow, headers=bearer(tok.key))
        )
        await _reserved(private_redis, env.keys.reservations(uid))
        private_redis.stop()
        resp = await req
        body = await resp.json()
        assert resp.status == 200
        rates = PriceBook.from_options({"ModelRatio": '{"m-slow": 1}'}).rates("m-slow", "default")
        assert rates is not None
        cost = rates.charge(body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"])
        rt = client.app[RUNTIME]
        assert rt.settles.pending == 1
        await asyncio.sleep(3)  # an outage longer than every retry of the old code
        private_redis.start()
        for _ in range(100):
            if rt.settles.pending == 0:
                break
            await asyncio.sleep(0.1)
        assert rt.settles.pending == 0
        env.settings = env.settings.replace(redis_url=private_redis.url)
        env.redis = redis
        await flush_all(env)
        used, logged, rows = await _settled_books(env, redis, uid, tok.id)
        assert (used, logged, rows) == (cost, cost, 1)
        assert await redis.zcard(env.keys.reservations(uid)) == 0
    finally:
        await client.close()
        await redis.aclose()


async def test_settles_kept_at_shutdown_are_replayed_by_the_next_relay(
    env: Any, mock_upstream: str, private_redis: PrivateRedis, tmp_path: pathlib.Path
) -> None:
    """Item 2 (durability): the relay stops while Redis is still down; its kept settle is in
    the journal, and the next relay started on this host replays it: charged once."""
    s = env.settings.replace(
        redis_url=private_redis.url, redis_timeout=0.5, journal_dir=str(tmp_path)
    )
    uid, tok = await _world(env, mock_upstream)
    client = await _app_on(s)
    slow = {**CHAT, "model": "m-slow"}
    req = asyncio.create_task(
        client.post("/v1/chat/completions", json=slow, headers=bearer(tok.key))
    )
    await _reserved(private_redis, env.keys.reservations(uid))
    private_redis.stop()
    resp = await req
    body = await resp.json()
    assert resp.status == 200
    await client.close()  # Redis still down: the settle stays in the journal
    journals = list(tmp_path.glob("*.ledger.jsonl"))  # noqa: ASYNC240
    assert len(journals) == 1 and journals[0].stat().st_size > 0
    private_redis.start()
    client = await _app_on(s)
    redis = Redis.from_url(private_redis.url)
    try:
        rt = client.app[RUNTIME]
        for _ in range(100):
            if rt.settles.pending == 0:
                break
            await asyncio.sleep(0.1)
        assert rt.settles.pending == 0 and rt.settles.applied == 1
        env.settings = env.settings.replace(redis_url=private_redis.url)
        env.redis = redis
        await flush_all(env)
        rates = PriceBook.from_options({"ModelRatio": '{"m-slow": 1}'}).rates("m-slow", "default")
        assert rates is not None
        cost = rates.charge(body["usage"]["prompt_tokens"], body["usage"]["completion_tokens"])
        assert await _settled_books(env, redis, uid, tok.id) == (cost, cost, 1)
    finally:
        await client.close()
        await redis.aclose()


async def test_settle_after_the_reaper_refunded_charges_from_zero_once(env: Any) -> None:
    """Item 5: a settle (or its replay) finding its reservation reaped charges the answer;
    a second replay of the same settle changes nothing."""
    uid, _ = await env.root_user()
    tok = await env.admin.create_token(uid, "t", remain_quota=10_000)
    await env.accounts.ensure_token(tok.id, uid)
    await env.accounts.ensure_user(uid)
    k = env.keys
    day, month = "20260101", "202601"
    ledger_keys = (
        k.token(uid, tok.id),
        k.user(uid),
        k.token_day(uid, tok.id, day),
        k.token_month(uid, tok.id, month),
    )
    prefix = f"r1|{tok.id}|{uid}|{day}|{month}|dead-relay"
    scripts = Scripts.load()
    res = await ledger.reserve(
        scripts,
        env.redis,
        (*ledger_keys, k.reservations(uid)),
        ReserveRequest(0, int(time.time()), 500, 0, 0, True, prefix, int(time.time()) + 900),
        (100, 100),
    )
    member = ledger.reservation_member(prefix, res.amount)
    reap_keys = (*ledger_keys, k.reservations(uid), k.reaped(uid))
    assert await ledger.reap(scripts, env.redis, reap_keys, member, res.amount)
    call = ledger.SettleCall(
        (*ledger_keys, k.stream_of_user(uid), k.orphans(uid), k.reservations(uid), k.reaped(uid)),
        res.amount,
        500,
        (f"t{tok.id}", f"u{uid}"),
        member,
        "r1",
        orphan_event(uid, tok.id),
    )
    first = await ledger.settle(scripts, env.redis, call)
    again = await ledger.settle(scripts, env.redis, call)
    assert (first.charged, first.found) == (500, 0)
    assert (again.charged, again.found) == (0, -1)
    assert int(await env.redis.hget(ledger_keys[0], "used")) == 500
    assert await env.redis.xlen(k.stream_of_user(uid)) == 1


def orphan_event(uid: int, token_id: int) -> bytes:
    return orjson.dumps({"rid": "r1", "ts": int(time.time()), "user": uid, "token": token_id})


async def images(request: web.Request) -> web.Response:
    n = (await request.json()).get("n") or 1
    return web.json_response({"created": 1, "data": [{"url": "http://x/i.png"}] * n})


async def test_image_generation_is_billed_per_image(env: Any, relay: TestClient) -> None:
    """Item 14: n images cost n times one image (New API multiplies the price by n)."""
    app = web.Application()
    app.router.add_post("/v1/images/generations", images)
    upstream = TestServer(app, host="127.0.0.1")
    await upstream.start_server()
    uid, _ = await env.root_user()
    await env.admin.create_channel("img", str(upstream.make_url("")).rstrip("/"), "k", "dall-e-3")
    await relay.app[RUNTIME].catalog.reload_channels()
    tok = await env.admin.create_token(uid, "t", remain_quota=10**8)
    key = env.keys.token(uid, tok.id)
    spent = []
    for n in (1, 10):
        before = int(await env.redis.hget(key, "used") or 0)
        resp = await relay.post(
            "/v1/images/generations",
            json={"model": "dall-e-3", "prompt": "cat", "n": n},
            headers=bearer(tok.key),
        )
        assert resp.status == 200, await resp.text()
        spent.append(int(await env.redis.hget(key, "used")) - before)
    assert spent[1] == 10 * spent[0] > 0
    bad = await relay.post(
        "/v1/images/generations",
        json={"model": "dall-e-3", "prompt": "cat", "n": 0},
        headers=bearer(tok.key),
    )
    assert bad.status == 400 and (await bad.json())["error"]["code"] == "invalid_n"
    await upstream.close()


async def test_gemini_candidate_count_is_reserved_and_bounds_the_answer(
    env: Any, relay: TestClient, mock_upstream: str
) -> None:
    """Item 16: candidateCount multiplies the reservation (each candidate may reach
    maxOutputTokens); the log's ``reserved`` shows it."""
    uid, _ = await env.root_user()
    await env.admin.create_channel("g", mock_upstream, "k", "gemini-2.0-flash", type_=24)
    await relay.app[RUNTIME].catalog.reload_channels()
    tok = await env.admin.create_token(uid, "t", remain_quota=10**8)
    rates = PriceBook().rates("gemini-2.0-flash", "default")
    assert rates is not None
    body = {
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"maxOutputTokens": 100, "candidateCount": 8},
    }
    resp = await relay.post(
        "/v1beta/models/gemini-2.0-flash:generateContent", json=body, headers=bearer(tok.key)
    )
    assert resp.status == 200, await resp.text()
    await flush_all(env)
    async with env.pool.acquire() as conn:
        other = orjson.loads(await conn.fetchval("SELECT other FROM logs"))
    assert other["reserved"] >= rates.plan(0).per_token_micro * 800 // 1_000_000
