"""Azure OpenAI channels (type 3, issue 15): deployment URL with the channel's api-version,
the key in ``api-key``; reached by OpenAI callers as is and by Claude callers translated;
the channel test calls the deployment too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relaygate.admin import ROLE_ADMIN

from .api_fixtures import Api, make_user
from .helpers import ledger, refresh
from .test_streaming import charge_for

KEY = "azure-channel-key-0123456789"
USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


class Azure:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, str | None]] = []

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append(
            (
                request.match_info["deployment"],
                request.query.get("api-version", ""),
                request.headers.get("api-key", ""),
                request.headers.get("Authorization"),
            )
        )
        if request.headers.get("api-key") != KEY:
            return web.json_response({"error": {"code": "401", "message": "bad key"}}, status=401)
        message = {"role": "assistant", "content": "hello from azure"}
        base = {"id": "chatcmpl-az", "created": 1, "model": "gpt-35-turbo"}
        if not body.get("stream"):
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            answer = {**base, "object": "chat.completion", "choices": [choice], "usage": USAGE}
            return web.json_response(answer)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for delta, reason in (
            ({"role": "assistant", "content": "hello from azure"}, None),
            ({}, "stop"),
        ):
            chunk = {**base, "object": "chat.completion.chunk"}
            chunk["choices"] = [{"index": 0, "delta": delta, "finish_reason": reason}]
            await resp.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if (body.get("stream_options") or {}).get("include_usage"):
            last = {**base, "object": "chat.completion.chunk", "choices": [], "usage": USAGE}
            await resp.write(b"data: " + orjson.dumps(last) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


@pytest.fixture
async def azure() -> AsyncIterator[tuple[Azure, str]]:
    upstream = Azure()
    app = web.Application()
    app.router.add_post("/openai/deployments/{deployment}/chat/completions", upstream.chat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield upstream, str(server.make_url("")).rstrip("/")
    await server.close()


async def _world(env: Any, relay: Any, url: str) -> tuple[int, Any, int]:
    uid, _ = await env.root_user()
    cid = await env.admin.create_channel(
        "azure",
        url,
        KEY,
        "gpt-4o-mini",
        type_=3,
        other="2024-06-01",
        model_mapping='{"gpt-4o-mini": "gpt-3.5-turbo"}',
    )
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**8)
    return uid, tok, cid


@pytest.mark.parametrize("stream", [False, True])
async def test_openai_and_claude_callers_reach_an_azure_deployment(env, relay, azure, stream):
    upstream, url = azure
    uid, tok, _ = await _world(env, relay, url)
    base = str(relay.make_url("")).rstrip("/")
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=f"sk-{tok.key}", max_retries=0)
    messages: Any = [{"role": "user", "content": "hi"}]
    if stream:
        text = ""
        async for c in await client.chat.completions.create(
            model="gpt-4o-mini", messages=messages, stream=True
        ):
            text += "".join(ch.delta.content or "" for ch in c.choices)
    else:
        r = await client.chat.completions.create(model="gpt-4o-mini", messages=messages)
        text = r.choices[0].message.content or ""
    await client.close()
    assert text == "hello from azure"
    assert upstream.seen[-1] == ("gpt-35-turbo", "2024-06-01", KEY, None)
    _, used = await ledger(env, uid, tok.id)
    assert used == charge_for(7, 3)

    claude = anthropic.AsyncAnthropic(base_url=base, api_key=f"sk-{tok.key}", max_retries=0)
    if stream:
        async with claude.messages.stream(
            model="gpt-4o-mini", max_tokens=50, messages=messages
        ) as s:
            msg = await s.get_final_message()
    else:
        msg = await claude.messages.create(model="gpt-4o-mini", max_tokens=50, messages=messages)
    await claude.close()
    assert msg.content[0].type == "text" and msg.content[0].text == "hello from azure"
    assert (msg.usage.input_tokens, msg.usage.output_tokens) == (7, 3)
    assert upstream.seen[-1] == ("gpt-35-turbo", "2024-06-01", KEY, None)
    assert (await ledger(env, uid, tok.id))[1] == 2 * charge_for(7, 3)


async def test_azure_channel_test_calls_the_deployment(env, relay, azure):
    upstream, url = azure
    _, _, cid = await _world(env, relay, url)
    api = Api(relay, await make_user(env, "ops", ROLE_ADMIN))
    status, tested = await api.call("GET", f"/api/channel/test/{cid}")
    assert status == 200 and tested["success"] is True, tested
    assert upstream.seen[-1] == ("gpt-35-turbo", "2024-06-01", KEY, None)
    view = await api.ok("GET", f"/api/channel/{cid}")
    assert view["other"] == "2024-06-01" and view["type"] == 3
