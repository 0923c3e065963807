"""A caller cannot take a channel offline for everyone (red team, 2026-12-07): OpenAI
echoes an unrecognized argument's name in its 400, and the auto-disable keyword scan read
that echo as the upstream's own verdict."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.helpers import bearer, refresh

KNOWN = {"model", "messages", "max_tokens", "stream", "stream_options", "n"}


async def _chat(request: web.Request) -> web.Response:
    body = await request.json()
    unknown = [k for k in body if k not in KNOWN]
    if unknown:  # OpenAI's wording
        message = f"Unrecognized request argument supplied: {unknown[0]}"
        error = {"message": message, "type": "invalid_request_error"}
        return web.json_response(status=400, data={"error": error})
    answer = {"role": "assistant", "content": "ok"}
    return web.json_response(
        {
            "id": "x",
            "object": "chat.completion",
            "model": body["model"],
            "choices": [{"index": 0, "message": answer, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


async def test_an_echoed_keyword_does_not_disable_the_channel(env: Any, relay: Any) -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", _chat)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        uid, _ = await env.root_user()
        base = str(server.make_url("")).rstrip("/")
        await env.admin.create_channel("shared", base, "k", "gpt-4o-mini")
        await refresh(relay)
        attacker = await env.admin.create_token(uid, "attacker", remain_quota=10**6)
        victim = await env.admin.create_token(uid, "victim", remain_quota=10**6)
        ok = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        for name in ("Permission Denied", "permission\u0020denied"):
            r = await relay.post(
                "/v1/chat/completions", headers=bearer(attacker.key), json={**ok, name: 1}
            )
            assert r.status == 400
        raw = b'{"model":"gpt-4o-mini","messages":[],"Permission\\u0020Denied":1}'
        r = await relay.post(
            "/v1/chat/completions",
            headers={**bearer(attacker.key), "Content-Type": "application/json"},
            data=raw,
        )
        assert r.status == 400
        await asyncio.sleep(0.3)  # a disable runs in the background
        r = await relay.post("/v1/chat/completions", headers=bearer(victim.key), json=ok)
        assert r.status == 200, await r.text()
        async with env.pool.acquire() as conn:
            assert await conn.fetchval("SELECT status FROM channels") == 1
    finally:
        await server.close()
