"""A management write is honoured by a *different* relay process on its very next request."""

from __future__ import annotations

import time

import aiohttp

from ..conftest import free_port
from .books import seed

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def _status(
    session: aiohttp.ClientSession, url: str, key: str, model: str = "gpt-4o-mini"
) -> int:
    async with session.post(
        f"{url}/v1/chat/completions",
        json={**CHAT, "model": model},
        headers={"Authorization": f"Bearer {key}"},
    ) as resp:
        await resp.read()
        return resp.status


async def test_writes_are_seen_by_another_process_on_the_next_request(env, stack):
    mock = await stack.mock(free_port())
    seeded = await seed(env, mock.url, tokens=1, quota=10**8)
    a = await stack.relay(free_port())
    b = await stack.relay(free_port())
    tid, key = seeded.token_ids[0], seeded.keys[0]
    admin = env.admin
    async with aiohttp.ClientSession() as s:
        assert await _status(s, a.url, key) == 200
        assert await _status(s, b.url, key) == 200  # both caches warm

        await admin.update_token(tid, {"status": 2})
        assert await _status(s, b.url, key) == 401
        await admin.update_token(tid, {"status": 1})
        assert await _status(s, b.url, key) == 200

        await admin.update_token(tid, {"model_limits": "gpt-4o", "model_limits_enabled": True})
        assert await _status(s, b.url, key) == 403
        assert await _status(s, b.url, key, "gpt-4o") == 200
        await admin.update_token(tid, {"model_limits_enabled": False})
        assert await _status(s, b.url, key) == 200

        await admin.update_token(tid, {"allow_ips": "10.1.2.3"})
        assert await _status(s, b.url, key) == 403
        await admin.update_token(tid, {"allow_ips": "127.0.0.0/8"})
        assert await _status(s, b.url, key) == 200

        await admin.update_token(tid, {"remain_quota": 0})
        assert await _status(s, b.url, key) == 429
        await admin.update_token(tid, {"remain_quota": 10**6})
        assert await _status(s, b.url, key) == 200

        await admin.update_token(tid, {"expired_time": int(time.time()) - 1})
        assert await _status(s, b.url, key) == 401
        await admin.update_token(tid, {"expired_time": -1})
        assert await _status(s, b.url, key) == 200

        await admin.set_user_status(seeded.user_id, 2)
        assert await _status(s, b.url, key) == 403
        await admin.set_user_status(seeded.user_id, 1)
        assert await _status(s, b.url, key) == 200

        await admin.delete_token(tid)
        assert await _status(s, b.url, key) == 401
        assert await _status(s, a.url, key) == 401
