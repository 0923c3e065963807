"""Streaming: bytes pass through, the injected usage chunk is hidden, disconnects and upstream
failures are billed right."""

from __future__ import annotations

import asyncio

import aiohttp
import orjson

from tests.prodserver import ProductionServer

from .helpers import CHAT, bearer, flush_all, hook_world, ledger


def _events(text: str) -> list[str]:
    return [e for e in text.split("\n\n") if e.startswith("data: ")]


async def test_usage_chunk_hidden_unless_asked(env, relay, mock_upstream):
    uid, tok = await hook_world(env, relay, mock_upstream)
    resp = await relay.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(f"sk-{tok.key}")
    )
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = _events(await resp.text())
    assert events[-1] == "data: [DONE]"
    payloads = [orjson.loads(e[6:]) for e in events[:-1]]
    assert all(p["choices"] for p in payloads), (
        "the usage-only chunk leaked to a client that did not ask"
    )
    charged_once = (await ledger(env, uid, tok.id))[1]
    assert charged_once > 0

    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    resp = await relay.post("/v1/chat/completions", json=body, headers=bearer(f"sk-{tok.key}"))
    payloads = [orjson.loads(e[6:]) for e in _events(await resp.text())[:-1]]
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["completion_tokens"] == 20
    assert (await ledger(env, uid, tok.id))[1] == 2 * charged_once
    assert await flush_all(env) == 2


async def test_client_disconnect_mid_stream_is_charged_for_delivered(
    env, relay_both, mock_upstream
):
    relay = relay_both
    uid, tok = await hook_world(env, relay, mock_upstream)
    url = relay.make_url("/v1/chat/completions")
    async with aiohttp.ClientSession() as session:
        resp = await session.post(
            url, json={**CHAT, "model": "m-slow", "stream": True}, headers=bearer(f"sk-{tok.key}")
        )
        first = await resp.content.readuntil(b"\n\n")
        assert first.startswith(b"data: ")
        resp.close()  # hang up after the first event
    for _ in range(100):
        if await env.redis.zcard(env.keys.reservations(uid)) == 0:
            break
        await asyncio.sleep(0.05)
    _, used = await ledger(env, uid, tok.id)
    assert used > 0, "a disconnected client must pay for what was delivered"
    assert await flush_all(env) == 1
    async with env.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT quota, completion_tokens, content FROM logs")
    assert row["quota"] == used
    assert row["completion_tokens"] < 20
    assert "estimated" in row["content"]


async def test_upstream_drop_mid_stream_bills_what_was_delivered(env, relay, mock_upstream):
    """Issue 15 (docs/failover.md): an upstream that breaks off after part of the answer
    reached the client is not retried, and is billed for what was delivered, by estimate."""
    uid, tok = await hook_world(env, relay, mock_upstream)
    resp = await relay.post(
        "/v1/chat/completions",
        json={**CHAT, "model": "m-drop", "stream": True},
        headers=bearer(f"sk-{tok.key}"),
    )
    assert resp.status == 200
    await resp.read()
    _, used = await ledger(env, uid, tok.id)
    assert used > 0
    assert await flush_all(env) == 1
    async with env.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT quota, completion_tokens, content FROM logs")
    assert row["quota"] == used
    assert 0 < row["completion_tokens"] < 20
    assert "estimated" in row["content"]


async def test_stream_that_arrived_whole_is_answered_in_one_response(env, relay):
    """An upstream whose whole SSE answer comes with its headers (Content-Length, no
    chunks) takes the one-write path: same events, usage chunk hidden, charged by usage;
    an answer cut before its end marker and usage is billed for what it delivered."""
    from aiohttp import web

    usage = b'data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20}}\n\n'
    content = b'data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}\n\n'

    async def whole(request: web.Request) -> web.Response:
        body = await request.json()
        assert body["stream_options"] == {"include_usage": True}
        cut = body["model"] == "m-drop"
        sse = content if cut else content + usage + b"data: [DONE]\n\n"
        return web.Response(body=sse, content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", whole)
    server = ProductionServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        uid, tok = await hook_world(env, relay, str(server.make_url("")).rstrip("/"))
        resp = await relay.post(
            "/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(f"sk-{tok.key}")
        )
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert await resp.read() == content + b"data: [DONE]\n\n"
        _, used = await ledger(env, uid, tok.id)
        assert used == charge_for(10, 20)
        resp = await relay.post(
            "/v1/chat/completions",
            json={**CHAT, "model": "m-drop", "stream": True},
            headers=bearer(f"sk-{tok.key}"),
        )
        assert await resp.read() == content
        billed = (await ledger(env, uid, tok.id))[1] - used
        assert billed > 0, "a cut answer is billed for what was delivered, by estimate"
        assert await flush_all(env) == 2
    finally:
        await server.close()


def charge_for(prompt: int, completion: int) -> int:
    from relaygate.pricing import PriceBook

    rates = PriceBook().rates("gpt-4o-mini", "default")
    assert rates is not None
    return rates.charge(prompt, completion)


async def test_a_client_that_stops_reading_pauses_the_upstream(env, relay):
    """Back-pressure: while the client reads nothing, the relay stops reading from the
    upstream once the buffers between them are full, instead of taking the whole answer into
    memory; when the client reads again, every byte arrives, in order, and the answer is
    charged by its usage."""
    from aiohttp import web

    event = b'data: {"choices":[{"delta":{"content":"' + b"x" * 65_000 + b'"}}],"usage":null}\n\n'
    count = 1_500  # ~98 MB: more than every socket buffer on the way can hold
    usage = b'data: {"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":20}}\n\n'
    sent = 0

    async def flood(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for _ in range(count):
            await resp.write(event)  # waits while the relay does not read
            sent += len(event)
        await resp.write(usage + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", flood)
    server = ProductionServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        uid, tok = await hook_world(env, relay, str(server.make_url("")).rstrip("/"))
        async with aiohttp.ClientSession() as session:
            resp = await session.post(
                relay.make_url("/v1/chat/completions"),
                json={**CHAT, "stream": True},
                headers=bearer(f"sk-{tok.key}"),
            )
            assert resp.status == 200
            first = await resp.content.readexactly(1)
            last, steady = -1, 0
            for _ in range(100):  # until the upstream has been held still for a while
                await asyncio.sleep(0.1)
                steady = steady + 1 if sent == last else 0
                last = sent
                if steady == 5:
                    break
            assert steady == 5 and sent < count * len(event) // 2, (
                f"the upstream sent {sent} bytes to a client that read 1"
            )
            body = first + await resp.read()
        assert body == event * count + b"data: [DONE]\n\n"
        _, used = await ledger(env, uid, tok.id)
        assert used == charge_for(10, 20)
        assert await flush_all(env) == 1
    finally:
        await server.close()
