"""Channel health across processes (issue 15): a channel whose upstream answers 401 is
auto-disabled by the relay that saw it, and every relay process stops calling it (the
``chan:<id>`` invalidation); a successful channel test re-enables it everywhere."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer

from relaygate.admin import ROLE_ADMIN

from ..conftest import free_port
from ..integration.api_fixtures import make_user

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
ANSWER = {
    "id": "x",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o-mini",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}


class Upstream:
    """Refuses its key (401) until ``healthy`` is set."""

    def __init__(self) -> None:
        self.healthy = False
        self.calls = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        await request.read()
        if not self.healthy:
            body = {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}
            return web.json_response(body, status=401)
        return web.Response(body=orjson.dumps(ANSWER), content_type="application/json")


async def eventually(check: Callable[[], Awaitable[bool]], rounds: int = 500) -> None:
    for _ in range(rounds):
        if await check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never held")


async def _status(env: Any, channel_id: int) -> int:
    async with env.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT status FROM channels WHERE id = $1", channel_id))


async def test_401_disables_in_every_process_and_a_test_re_enables(env, stack):
    upstream = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", upstream.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    mock = await stack.mock(free_port())
    uid, _ = await env.root_user()
    bad_url = str(server.make_url("")).rstrip("/")
    bad = await env.admin.create_channel("bad", bad_url, "k1", "gpt-4o-mini", priority=10)
    await env.admin.create_channel("good", mock.url, "k2", "gpt-4o-mini", priority=0)
    token = await env.admin.create_token(uid, "t", remain_quota=10**8)
    auth = {"Authorization": f"Bearer sk-{token.key}"}
    a = await stack.relay(free_port())
    b = await stack.relay(free_port())
    admin = await make_user(env, "ops", ROLE_ADMIN)

    async with aiohttp.ClientSession() as s:

        async def chat(url: str) -> int:
            async with s.post(f"{url}/v1/chat/completions", json=CHAT, headers=auth) as resp:
                await resp.read()
                return resp.status

        # Relay A meets the 401: the caller is served by channel 2 all the same.
        assert await chat(a.url) == 200
        assert upstream.calls == 1
        await eventually(lambda: _is(_status(env, bad), 3))

        # Relay B never saw the failure, yet stops calling the channel.
        async def b_skips() -> bool:
            before = upstream.calls
            assert await chat(b.url) == 200
            return upstream.calls == before

        await eventually(b_skips)
        calls = upstream.calls
        for url in (a.url, b.url, a.url, b.url):
            assert await chat(url) == 200
        assert upstream.calls == calls, "a disabled channel is called by no relay"

        # A failing test leaves it disabled; a successful one enables it in every relay.
        test_url = f"{b.url}/api/channel/test/{bad}"
        async with s.get(test_url, headers=admin.headers()) as resp:
            assert (await resp.json())["success"] is False
        assert await _status(env, bad) == 3
        upstream.healthy = True
        async with s.get(test_url, headers=admin.headers()) as resp:
            tested = await resp.json()
        assert tested["success"] is True, tested
        assert tested["data"]["enabled"] is True
        assert await _status(env, bad) == 1

        async def a_uses_it() -> bool:
            before = upstream.calls
            assert await chat(a.url) == 200
            return upstream.calls > before

        await eventually(a_uses_it)
    await server.close()


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected
