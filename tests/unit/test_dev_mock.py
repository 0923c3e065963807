"""The fake upstream: wire formats, usage rules, test hooks, and the official openai SDK."""

from __future__ import annotations

import asyncio
import base64
import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relaygate.dev.mock import MockConfig, build_app
from relaygate.dev.mock import core as mock_core

pytestmark = pytest.mark.unit

AUTH = {"Authorization": "Bearer sk-test-secret-key"}
Client = TestClient[web.Request, Any]
CFG = MockConfig(prompt_tokens=11, completion_tokens=20, stream_chunks=4)


@pytest.fixture
async def client() -> AsyncIterator[Client]:
    async with TestServer(build_app(CFG)) as server, Client(server) as c:
        yield c


def sse_data(raw: bytes) -> list[bytes]:
    """The ``data:`` payloads of an SSE body, in order."""
    assert raw.endswith(b"\n\n")
    out = []
    for event in raw.split(b"\n\n")[:-1]:
        lines = [ln for ln in event.split(b"\n") if ln.startswith(b"data: ")]
        assert len(lines) == 1, event
        out.append(lines[0][len(b"data: ") :])
    return out


def sse_events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for event in raw.split(b"\n\n")[:-1]:
        name, data = event.split(b"\n")
        assert name.startswith(b"event: ") and data.startswith(b"data: ")
        out.append((name[7:].decode(), orjson.loads(data[6:])))
    return out


async def post(client: Client, path: str, body: Any, **kw: Any) -> Any:
    headers = kw.pop("headers", AUTH)
    return await client.post(path, data=orjson.dumps(body), headers=headers, **kw)


# --------------------------------------------------------------------------- chat


async def test_chat_non_stream(client: Client) -> None:
    resp = await post(client, "/v1/chat/completions", {"model": "gpt-4o", "messages": []})
    assert resp.status == 200
    assert resp.content_type == "application/json"
    body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o"
    assert body["id"].startswith("chatcmpl-")
    now = int(time.time())
    assert now - 5 <= body["created"] <= now + 1
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert len(choice["message"]["content"].split()) == 20
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 20, "total_tokens": 31}

    again = await (await post(client, "/v1/chat/completions", {"model": "gpt-4o"})).json()
    assert again["id"] != body["id"]  # cached template, fresh id


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"max_tokens": 7}, 7),
        ({"max_completion_tokens": 3}, 3),
        ({"max_tokens": 500}, 20),
        ({"max_tokens": 0}, 0),
        ({"max_completion_tokens": 5, "max_tokens": 9}, 5),
    ],
)
async def test_chat_max_tokens_clamps(client: Client, extra: dict[str, int], expected: int) -> None:
    body = await (await post(client, "/v1/chat/completions", {"model": "m", **extra})).json()
    assert body["usage"]["completion_tokens"] == expected
    assert body["usage"]["total_tokens"] == 11 + expected
    assert len(body["choices"][0]["message"]["content"].split()) == expected
    assert body["choices"][0]["finish_reason"] == ("length" if expected < 20 else "stop")


async def test_chat_stream_without_include_usage(client: Client) -> None:
    resp = await post(client, "/v1/chat/completions", {"model": "m", "stream": True})
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    data = sse_data(await resp.read())
    assert data[-1] == b"[DONE]"
    chunks = [orjson.loads(d) for d in data[:-1]]
    assert len(chunks) == 1 + CFG.stream_chunks + 1  # role, content..., finish
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert all("usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"][0]["delta"] == {}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert len(text.split()) == 20


async def test_chat_stream_with_include_usage(client: Client) -> None:
    req = {"model": "m", "stream": True, "stream_options": {"include_usage": True}}
    resp = await post(client, "/v1/chat/completions", {**req, "max_tokens": 6})
    data = sse_data(await resp.read())
    assert data[-1] == b"[DONE]"
    chunks = [orjson.loads(d) for d in data[:-1]]
    assert len(chunks) == 1 + CFG.stream_chunks + 2
    last = chunks[-1]
    assert last["choices"] == []
    assert last["usage"] == {"prompt_tokens": 11, "completion_tokens": 6, "total_tokens": 17}
    assert all(c["usage"] is None for c in chunks[:-1])  # like OpenAI: null until the end
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"


async def test_chat_stream_include_usage_false(client: Client) -> None:
    req = {"model": "m", "stream": True, "stream_options": {"include_usage": False}}
    data = sse_data(await (await post(client, "/v1/chat/completions", req)).read())
    assert all(b'"usage"' not in d for d in data)


# --------------------------------------------------------------------------- other routes


async def test_legacy_completions(client: Client) -> None:
    body = await (
        await post(client, "/v1/completions", {"model": "i", "prompt": "x", "max_tokens": 4})
    ).json()
    assert body["object"] == "text_completion"
    assert len(body["choices"][0]["text"].split()) == 4
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}

    req = {"model": "i", "prompt": "x", "stream": True}
    plain = sse_data(await (await post(client, "/v1/completions", req)).read())
    assert plain[-1] == b"[DONE]" and all(b'"usage"' not in d for d in plain)

    req["stream_options"] = {"include_usage": True}
    data = sse_data(await (await post(client, "/v1/completions", req)).read())
    last = orjson.loads(data[-2])
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 20


async def test_embeddings_and_models(client: Client) -> None:
    req = {"model": "text-embedding-3-small", "input": ["a", "b", "c"], "dimensions": 4}
    body = await (await post(client, "/v1/embeddings", req)).json()
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    assert len(body["data"][0]["embedding"]) == 4
    assert body["usage"] == {"prompt_tokens": 11, "total_tokens": 11}

    b64 = await (
        await post(
            client, "/v1/embeddings", {"model": "e", "input": "a", "encoding_format": "base64"}
        )
    ).json()
    assert len(struct.unpack("<8f", base64.b64decode(b64["data"][0]["embedding"]))) == 8

    models = await (await client.get("/v1/models", headers=AUTH)).json()
    assert models["object"] == "list" and models["data"][0]["object"] == "model"
    assert (await client.get("/v1/models")).status == 401


async def test_anthropic_messages(client: Client) -> None:
    hdr = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    req = {"model": "claude-x", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    body = await (await post(client, "/v1/messages", req, headers=hdr)).json()
    assert body["type"] == "message" and body["role"] == "assistant"
    assert body["content"][0]["type"] == "text"
    assert body["usage"] == {"input_tokens": 11, "output_tokens": 5}
    assert body["stop_reason"] == "max_tokens"

    resp = await post(client, "/v1/messages", {**req, "stream": True}, headers=hdr)
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = sse_events(await resp.read())
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[3:-3] == ["content_block_delta"] * CFG.stream_chunks
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert all(n == d["type"] for n, d in events)
    assert events[0][1]["message"]["usage"]["input_tokens"] == 11
    assert events[-2][1]["usage"] == {"output_tokens": 5}

    no_auth = await post(client, "/v1/messages", req, headers={})
    assert no_auth.status == 401
    assert (await no_auth.json())["error"]["type"] == "authentication_error"


async def test_gemini(client: Client) -> None:
    req = {"contents": [{"parts": [{"text": "hi"}]}], "generationConfig": {"maxOutputTokens": 3}}
    path = "/v1beta/models/gemini-2.0-flash:generateContent"
    body = await (await post(client, path, req, headers={"x-goog-api-key": "k"})).json()
    assert body["candidates"][0]["content"]["role"] == "model"
    assert body["candidates"][0]["finishReason"] == "MAX_TOKENS"
    assert body["usageMetadata"] == {
        "promptTokenCount": 11,
        "candidatesTokenCount": 3,
        "totalTokenCount": 14,
    }

    spath = "/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=k"
    resp = await post(client, spath, {"contents": []}, headers={})
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    chunks = [orjson.loads(d) for d in sse_data(await resp.read())]
    assert len(chunks) == CFG.stream_chunks
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 20
    assert chunks[-1]["usageMetadata"]["totalTokenCount"] == 31

    assert (await post(client, path, req, headers={})).status == 401


# --------------------------------------------------------------------------- errors and hooks


async def test_auth_and_bad_requests(client: Client) -> None:
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"}):
        resp = await post(client, "/v1/chat/completions", {"model": "m"}, headers=headers)
        assert resp.status == 401
        err = (await resp.json())["error"]
        assert err["code"] == "invalid_api_key" and set(err) == {"message", "type", "param", "code"}

    resp = await client.post("/v1/chat/completions", data=b"{not json", headers=AUTH)
    assert resp.status == 400
    assert (await resp.json())["error"]["type"] == "invalid_request_error"

    bad: Any
    for bad in ([1, 2], {"messages": []}, {"model": ""}, {"model": "m", "max_tokens": "9"}):
        resp = await post(client, "/v1/chat/completions", bad)
        assert resp.status == 400, bad
        assert "error" in await resp.json()


@pytest.mark.parametrize("status", [500, 429])
async def test_fail_hooks(client: Client, status: int) -> None:
    model = f"gpt-4o-fail-{status}"
    for path, req in (
        ("/v1/chat/completions", {"model": model}),
        ("/v1/chat/completions", {"model": model, "stream": True}),
        ("/v1/completions", {"model": model, "prompt": "x"}),
        ("/v1/embeddings", {"model": model, "input": "x"}),
    ):
        resp = await post(client, path, req)
        assert resp.status == status
        err = (await resp.json())["error"]
        assert err["type"] == ("server_error" if status == 500 else "requests")
    anth = await post(client, "/v1/messages", {"model": model}, headers={"x-api-key": "k"})
    assert anth.status == status and (await anth.json())["type"] == "error"
    gem = await post(client, f"/v1beta/models/{model}:generateContent?key=k", {}, headers={})
    assert gem.status == status and (await gem.json())["error"]["code"] == status


async def test_no_usage_hook(client: Client) -> None:
    body = await (await post(client, "/v1/chat/completions", {"model": "x-no-usage"})).json()
    assert "usage" not in body and body["choices"][0]["message"]["content"]
    req = {"model": "x-no-usage", "stream": True, "stream_options": {"include_usage": True}}
    raw = await (await post(client, "/v1/chat/completions", req)).read()
    assert b'"usage"' not in raw and raw.endswith(b"data: [DONE]\n\n")
    msg = await post(client, "/v1/messages", {**req, "model": "c-no-usage"}, headers=AUTH)
    assert b'"usage"' not in await msg.read()
    gem = await post(client, "/v1beta/models/g-no-usage:streamGenerateContent?alt=sse", {})
    assert b"usageMetadata" not in await gem.read()
    emb = await (await post(client, "/v1/embeddings", {"model": "no-usage", "input": "a"})).json()
    assert "usage" not in emb


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The delays the mock asks for (recorded, then slept as asked): the hooks are checked by
    what they request, never by timing the test."""
    asked: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float, *args: Any, **kwargs: Any) -> Any:
        if delay > 0:
            asked.append(round(delay, 3))
        return await real_sleep(delay, *args, **kwargs)

    class MockAsyncio:
        """asyncio as the mock's request flow sees it, with sleep recorded (nothing else
        patched)."""

        sleep = staticmethod(recording_sleep)

        def __getattr__(self, name: str) -> Any:
            return getattr(asyncio, name)

    monkeypatch.setattr(mock_core, "asyncio", MockAsyncio())
    return asked


async def test_slow_hook_and_delay_header(client: Client, sleeps: list[float]) -> None:
    resp = await post(client, "/v1/chat/completions", {"model": "gpt-slow"})
    assert resp.status == 200
    assert sleeps == [0.5]

    sleeps.clear()
    headers = {**AUTH, "x-mock-delay-ms": "150"}
    resp = await post(client, "/v1/chat/completions", {"model": "m"}, headers=headers)
    assert resp.status == 200
    assert sleeps == [0.15]

    headers = {**AUTH, "x-mock-delay-ms": "soon"}
    assert (
        await post(client, "/v1/chat/completions", {"model": "m"}, headers=headers)
    ).status == 400


async def test_slow_hook_streams_per_chunk(sleeps: list[float]) -> None:
    cfg = MockConfig(stream_chunks=2)
    async with TestServer(build_app(cfg)) as server, Client(server) as c:
        resp = await post(c, "/v1/chat/completions", {"model": "slow", "stream": True})
        assert resp.status == 200
        first = await resp.content.readuntil(b"\n\n")  # the role chunk comes at once...
        assert b'"role":"assistant"' in first
        assert len(sleeps) <= 1  # sent before the first content chunk's wait was over
        data = sse_data(first + await resp.read())
        assert sleeps == [0.5, 0.5]  # ...then 2 content chunks, each after 0.5 s
        assert data[-1] == b"[DONE]"


async def test_chunk_delay(sleeps: list[float]) -> None:
    app = build_app(MockConfig(chunk_delay=0.02))
    async with TestServer(app) as server, Client(server) as c:
        raw = await (await post(c, "/v1/chat/completions", {"model": "m", "stream": True})).read()
        assert sleeps == [0.02] * 5  # 5 content chunks x 0.02 s
        assert raw.endswith(b"data: [DONE]\n\n")


async def test_drop_hook(client: Client) -> None:
    req = {"model": "gpt-drop", "stream": True, "stream_options": {"include_usage": True}}
    resp = await post(client, "/v1/chat/completions", req)
    assert resp.status == 200
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async for chunk in resp.content.iter_any():
            received += chunk
    data = sse_data(received)
    assert len(data) == 1 + 2  # role chunk + 2 content chunks, then the connection is gone
    assert b"[DONE]" not in received and b'"usage":{' not in received

    # The server is fine afterwards.
    assert (await post(client, "/v1/chat/completions", {"model": "m"})).status == 200


async def test_key_is_never_logged(client: Client, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    await post(client, "/v1/chat/completions", {"model": "m"})
    await post(client, "/v1/chat/completions", {"model": "m-fail-500"})
    assert "sk-test-secret-key" not in caplog.text


# --------------------------------------------------------------------------- openai SDK


async def test_openai_sdk_parses_answers(client: Client) -> None:
    openai = pytest.importorskip("openai")
    base_url = str(client.server.make_url("/v1"))
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-x", max_retries=0) as sdk:
        msgs = [{"role": "user", "content": "hi"}]
        done = await sdk.chat.completions.create(model="gpt-4o", messages=msgs, max_tokens=5)
        assert done.usage is not None
        assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (11, 5)
        assert done.choices[0].message.content
        assert done.choices[0].finish_reason == "length"

        stream = await sdk.chat.completions.create(
            model="gpt-4o", messages=msgs, stream=True, stream_options={"include_usage": True}
        )
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage is not None:
                usage = chunk.usage
        assert len(text.split()) == 20
        assert usage is not None and usage.total_tokens == 31

        legacy = await sdk.completions.create(model="i", prompt="x", max_tokens=2)
        assert legacy.usage is not None and legacy.usage.completion_tokens == 2

        emb = await sdk.embeddings.create(model="text-embedding-3-small", input="hello")
        assert len(emb.data[0].embedding) == 8 and emb.usage.prompt_tokens == 11

        with pytest.raises(openai.RateLimitError):
            await sdk.chat.completions.create(model="m-fail-429", messages=msgs)
