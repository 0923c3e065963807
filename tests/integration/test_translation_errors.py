"""Translated requests when the upstream fails (issue 15): the error comes back in the
caller's dialect with the upstream's status and without the channel key; failover may move
a request to a channel of another type; a Gemini safety block is a refunded 400."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relaygate.channels import TYPE_ANTHROPIC, TYPE_GEMINI

from .helpers import CHAT, bearer, flush_all, ledger, refresh
from .test_streaming import charge_for

KEY = "sk-ant-channel-secret-0123456789abcdef"


class Upstream:
    def __init__(self) -> None:
        self.status = 400
        self.body: Any = {}
        self.calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        await request.read()
        return web.json_response(self.body, status=self.status)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    up = Upstream()
    app = web.Application()
    app.router.add_post("/v1/messages", up.handle)
    app.router.add_post("/v1beta/models/{spec}", up.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield up, str(server.make_url("")).rstrip("/")
    await server.close()


async def _token(env: Any, relay: Any) -> tuple[int, Any]:
    uid, _ = await env.root_user()
    await refresh(relay)
    return uid, await env.admin.create_token(uid, "t", remain_quota=10**7)


@pytest.mark.parametrize("status", [400, 429])
async def test_claude_error_reaches_an_openai_caller_in_openai_shape(env, relay, upstream, status):
    up, url = upstream
    await env.admin.create_channel("claude", url, KEY, "gpt-4o-mini", type_=TYPE_ANTHROPIC)
    uid, tok = await _token(env, relay)
    up.status = status
    up.body = {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": f"bad thing; your key {KEY} ..."},
    }
    resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
    text = await resp.text()
    assert resp.status == status
    assert KEY not in text and KEY[8:24] not in text
    err = orjson.loads(text)["error"]
    assert set(err) >= {"message", "type", "code"} and err["message"].startswith("bad thing")
    assert await ledger(env, uid, tok.id) == (10**7, 0)


async def test_openai_error_reaches_a_claude_caller_in_claude_shape(env, relay, upstream):
    """The Claude route over a Gemini channel: Gemini's error body becomes Claude's."""
    up, url = upstream
    await env.admin.create_channel("gemini", url, KEY, "gpt-4o-mini", type_=TYPE_GEMINI)
    _, tok = await _token(env, relay)
    up.status = 400
    up.body = {"error": {"code": 400, "message": "API key not valid", "status": "INVALID_ARGUMENT"}}
    body = {"model": "gpt-4o-mini", "max_tokens": 10, "messages": CHAT["messages"]}
    resp = await relay.post("/v1/messages", json=body, headers={"x-api-key": f"sk-{tok.key}"})
    assert resp.status == 400
    answer = await resp.json()
    assert answer["type"] == "error" and answer["error"]["message"] == "API key not valid"


async def test_failover_from_a_claude_channel_to_an_openai_one(env, relay, upstream, mock_upstream):
    up, url = upstream
    up.status, up.body = (
        529,
        {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}},
    )
    first = await env.admin.create_channel(
        "claude", url, KEY, "gpt-4o-mini", type_=TYPE_ANTHROPIC, priority=5
    )
    second = await env.admin.create_channel("openai", mock_upstream, "k", "gpt-4o-mini")
    uid, tok = await _token(env, relay)
    resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["object"] == "chat.completion"
    assert up.calls == 1
    assert (await ledger(env, uid, tok.id))[1] == charge_for(10, 20)
    assert await flush_all(env) == 1
    async with env.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT channel_id, other FROM logs")
    assert row["channel_id"] == second
    assert orjson.loads(row["other"])["admin_info"]["use_channel"] == [str(first), str(second)]


@pytest.mark.parametrize("stream", [False, True])
async def test_gemini_safety_block_is_a_refunded_error(env, relay, upstream, stream):
    up, url = upstream
    await env.admin.create_channel("gemini", url, KEY, "gpt-4o-mini", type_=TYPE_GEMINI)
    uid, tok = await _token(env, relay)
    up.status = 200
    up.body = {"promptFeedback": {"blockReason": "PROHIBITED_CONTENT"}, "usageMetadata": {}}
    resp = await relay.post(
        "/v1/chat/completions", json={**CHAT, "stream": stream}, headers=bearer(f"sk-{tok.key}")
    )
    text = await resp.text()
    assert "PROHIBITED_CONTENT" in text
    if not stream:  # a plain JSON answer to a stream request is answered as a body
        assert resp.status == 400
        assert orjson.loads(text)["error"]["code"] == "content_filter"
    assert await ledger(env, uid, tok.id) == (10**7, 0)
