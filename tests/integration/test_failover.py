"""Failover (issue 15, docs/failover.md): a channel that fails before the first byte is
replaced by the next one; the request is answered once, charged once for the channel that
answered, and its log row names that channel and the attempts made. A failure after the
first streamed byte is not retried."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from .helpers import CHAT, bearer, flush_all, ledger, refresh
from .test_streaming import charge_for


class Flaky:
    """An upstream that fails the way it is told: an HTTP status, or a connection reset."""

    def __init__(self) -> None:
        self.mode: int | str = 500
        self.calls = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        await request.read()
        if self.mode == "reset":
            assert request.transport is not None
            request.transport.close()  # no answer at all: the client sees a reset
            return web.Response()
        status = int(self.mode)
        body = {"error": {"message": f"mock failure {status}", "type": "server_error"}}
        return web.json_response(body, status=status)


@pytest.fixture
async def flaky() -> AsyncIterator[tuple[Flaky, str]]:
    upstream = Flaky()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield upstream, str(server.make_url("")).rstrip("/")
    await server.close()


async def _world(env: Any, relay: Any, flaky_url: str, good_url: str) -> tuple[int, Any, int, int]:
    """Channel 1 (priority 10, the flaky one) is tried first; channel 2 (priority 0) serves."""
    uid, _ = await env.root_user()
    first = await env.admin.create_channel("flaky", flaky_url, "k1", "gpt-4o-mini", priority=10)
    second = await env.admin.create_channel("good", good_url, "k2", "gpt-4o-mini", priority=0)
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**7)
    return uid, tok, first, second


async def _rows(env: Any) -> list[Any]:
    async with env.pool.acquire() as conn:
        return list(await conn.fetch("SELECT channel_id, quota, other FROM logs ORDER BY id"))


@pytest.mark.parametrize("stream", [False, True])
async def test_500_429_reset_fail_over_to_the_next_channel_charged_once(
    env, relay, mock_upstream, flaky, stream
):
    upstream, flaky_url = flaky
    uid, tok, first, second = await _world(env, relay, flaky_url, mock_upstream)
    used = 0
    for n, mode in enumerate((500, 429, "reset"), 1):
        upstream.mode = mode
        resp = await relay.post(
            "/v1/chat/completions",
            json={**CHAT, "stream": stream},
            headers=bearer(f"sk-{tok.key}"),
        )
        text = await resp.text()
        assert resp.status == 200, (mode, text)
        if stream:
            assert text.count("data: [DONE]") == 1
        else:
            assert orjson.loads(text)["choices"][0]["message"]["content"]
        assert upstream.calls == n, "channel 1 is tried first, once"
        _, now_used = await ledger(env, uid, tok.id)
        assert now_used - used == charge_for(10, 20), f"{mode}: charged once, by usage"
        used = now_used
    assert await flush_all(env) == 3
    rows = await _rows(env)
    assert len(rows) == 3
    for row in rows:
        assert row["channel_id"] == second
        other = orjson.loads(row["other"])
        assert other["admin_info"]["use_channel"] == [str(first), str(second)]
    assert sum(r["quota"] for r in rows) == used


async def test_non_retryable_status_passes_through_without_failover(
    env, relay, mock_upstream, flaky
):
    upstream, flaky_url = flaky
    uid, tok, _, _ = await _world(env, relay, flaky_url, mock_upstream)
    upstream.mode = 400
    resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
    assert resp.status == 400
    assert (await resp.json())["error"]["message"] == "mock failure 400"
    assert await ledger(env, uid, tok.id) == (10**7, 0), "an upstream error is refunded"
    assert await flush_all(env) == 0


async def test_every_channel_failing_answers_the_last_error_refunded(env, relay, flaky):
    upstream, flaky_url = flaky
    uid, _ = await env.root_user()
    await env.admin.create_channel("a", flaky_url, "k1", "gpt-4o-mini", priority=10)
    await env.admin.create_channel("b", flaky_url, "k2", "gpt-4o-mini", priority=0)
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**7)
    upstream.mode = 503
    resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
    assert resp.status == 503
    assert upstream.calls == 2, "each channel once"
    assert await ledger(env, uid, tok.id) == (10**7, 0)
    upstream.mode = "reset"
    resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
    assert resp.status == 502
    assert (await resp.json())["error"]["code"] == "bad_gateway"
    assert await ledger(env, uid, tok.id) == (10**7, 0)
    assert await flush_all(env) == 0


async def test_failure_after_the_first_streamed_byte_is_not_retried(env, relay, mock_upstream):
    """m-drop (relaygate.dev.mock) cuts its stream after two chunks: the client keeps what it
    got, no other channel is called, and the charge is an estimate of what was delivered."""
    uid, _ = await env.root_user()
    await env.admin.set_option("ModelRatio", '{"m-drop": 1}')
    first = await env.admin.create_channel("drops", mock_upstream, "k1", "m-drop", priority=10)
    await env.admin.create_channel("spare", mock_upstream, "k2", "m-drop", priority=0)
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**7)
    resp = await relay.post(
        "/v1/chat/completions",
        json={**CHAT, "model": "m-drop", "stream": True},
        headers=bearer(f"sk-{tok.key}"),
    )
    assert resp.status == 200
    text = (await resp.read()).decode()
    assert "[DONE]" not in text and text.count('"delta"') >= 1
    _, used = await ledger(env, uid, tok.id)
    assert used > 0
    assert await flush_all(env) == 1
    (row,) = await _rows(env)
    assert row["channel_id"] == first and row["quota"] == used
    other = orjson.loads(row["other"])
    assert "admin_info" not in other, "one attempt only"
    assert other["estimated"] is True


async def test_each_channel_is_sent_its_own_model_name(env, relay) -> None:
    """A channel that maps the model name fails; the next one, which maps nothing, is sent
    the name the client asked for, not the first channel's."""
    names: list[str] = []

    async def failing(request: web.Request) -> web.Response:
        names.append((await request.json())["model"])
        return web.json_response({"error": {"message": "down"}}, status=500)

    async def serving(request: web.Request) -> web.Response:
        names.append((await request.json())["model"])
        answer = {"choices": [{"message": {"content": "ok"}}], "usage": {"prompt_tokens": 1}}
        answer["usage"]["completion_tokens"] = 1
        return web.json_response(answer)

    servers = []
    for handler in (failing, serving):
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
    try:
        uid, _ = await env.root_user()
        mapping = orjson.dumps({"gpt-4o-mini": "upstream-mini"}).decode()
        base = [str(s.make_url("")).rstrip("/") for s in servers]
        await env.admin.create_channel(
            "mapped", base[0], "k1", "gpt-4o-mini", priority=10, model_mapping=mapping
        )
        await env.admin.create_channel("plain", base[1], "k2", "gpt-4o-mini", priority=0)
        await refresh(relay)
        tok = await env.admin.create_token(uid, "t", remain_quota=10**7)
        resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
        assert resp.status == 200, await resp.text()
        assert names == ["upstream-mini", "gpt-4o-mini"]
    finally:
        for server in servers:
            await server.close()
