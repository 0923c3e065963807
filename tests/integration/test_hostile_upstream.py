"""Issue 9 items 15, 17, 18: upstreams that misbehave are still billed for what they
delivered, and estimates are made the same way for streams and bodies."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relaygate.appkeys import RUNTIME
from relaygate.pricing import PriceBook
from relaygate.relay.request import estimate_tokens

from .helpers import bearer

TEXT = "word " * 40
MODELS = ("json-always", "bad-usage", "no-usage", "break-after-usage")


def _chunk(obj: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    model = body["model"]
    message = {"role": "assistant", "content": TEXT}
    if model == "json-always" or (model in ("bad-usage", "no-usage") and not body.get("stream")):
        answer: dict[str, Any] = {"id": "x", "choices": [{"index": 0, "message": message}]}
        if model == "json-always":
            answer["usage"] = {"prompt_tokens": 1000, "completion_tokens": 5000}
        elif model == "bad-usage":
            answer["usage"] = {"input_tokens": "abc", "output_tokens": 5}
        return web.json_response(answer)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for word in TEXT.split(" ")[:-1]:
        await resp.write(_chunk({"choices": [{"index": 0, "delta": {"content": word + " "}}]}))
    if model == "break-after-usage":
        await resp.write(
            _chunk({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 40}})
        )
        await resp.write(b"data: [DONE]\n\n")
        assert request.transport is not None
        request.transport.abort()  # no terminating chunk: the chunked encoding breaks
        return resp
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


@pytest.fixture
async def hostile() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


async def _setup(env: Any, relay: TestClient, upstream: str) -> tuple[int, Any]:
    uid, _ = await env.root_user()
    await env.admin.create_channel("hostile", upstream, "k", ",".join(MODELS))
    await env.admin.set_option("ModelRatio", orjson.dumps(dict.fromkeys(MODELS, 1)).decode())
    await relay.app[RUNTIME].catalog.reload_channels()
    await relay.app[RUNTIME].catalog.reload_prices()
    return uid, await env.admin.create_token(uid, "t", remain_quota=10**8)


async def _spend(env: Any, relay: TestClient, uid: int, tok: Any, body: dict[str, Any]) -> int:
    key = env.keys.token(uid, tok.id)
    before = int(await env.redis.hget(key, "used") or 0)
    resp = await relay.post("/v1/chat/completions", json=body, headers=bearer(tok.key))
    assert resp.status == 200, await resp.text()
    await resp.read()
    return int(await env.redis.hget(key, "used")) - before


def _req(model: str, stream: bool) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "hi"}],
        "stream": stream,
        "max_tokens": 6000,
    }


async def test_stream_request_answered_with_json_is_billed(
    env: Any, relay: TestClient, hostile: str
) -> None:
    uid, tok = await _setup(env, relay, hostile)
    rates = PriceBook.from_options({"ModelRatio": '{"json-always": 1}'}).rates(
        "json-always", "default"
    )
    assert rates is not None
    assert await _spend(env, relay, uid, tok, _req("json-always", True)) == rates.charge(1000, 5000)


async def test_stream_broken_after_its_usage_is_billed(
    env: Any, relay: TestClient, hostile: str
) -> None:
    uid, tok = await _setup(env, relay, hostile)
    rates = PriceBook.from_options({"ModelRatio": '{"break-after-usage": 1}'}).rates(
        "break-after-usage", "default"
    )
    assert rates is not None
    assert await _spend(env, relay, uid, tok, _req("break-after-usage", True)) == rates.charge(
        7, 40
    )


async def test_non_numeric_usage_is_billed_by_estimate(
    env: Any, relay: TestClient, hostile: str
) -> None:
    uid, tok = await _setup(env, relay, hostile)
    assert await _spend(env, relay, uid, tok, _req("bad-usage", False)) > 0


async def test_stream_and_body_without_usage_are_estimated_alike(
    env: Any, relay: TestClient, hostile: str
) -> None:
    uid, tok = await _setup(env, relay, hostile)
    body = await _spend(env, relay, uid, tok, _req("no-usage", False))
    stream = await _spend(env, relay, uid, tok, _req("no-usage", True))
    assert body == stream > 0
    rates = PriceBook.from_options({"ModelRatio": '{"no-usage": 1}'}).rates("no-usage", "default")
    assert rates is not None
    prompt = estimate_tokens(len(orjson.dumps(_req("no-usage", False))))
    assert body >= rates.charge(prompt, estimate_tokens(len(TEXT.encode())))
