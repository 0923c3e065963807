"""PostgreSQL unreachable for longer than the cache TTL: warm tokens keep working."""

from __future__ import annotations

import asyncio

from aiohttp.test_utils import TestClient

from relaygate.app import init_app
from relaygate.appkeys import RUNTIME
from tests.prodserver import ProductionServer

from .helpers import CHAT, bearer


async def test_expired_cache_entries_are_served_while_postgres_is_down(env, mock_upstream):
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", mock_upstream, "k", "gpt-4o-mini")
    tok = await env.admin.create_token(uid, "t", remain_quota=10**6)
    client = TestClient(
        ProductionServer(init_app(env.settings.replace(cache_ttl=0.2)), host="127.0.0.1")
    )
    await client.start_server()
    try:
        assert (
            await client.post("/v1/chat/completions", json=CHAT, headers=bearer(tok.key))
        ).status == 200
        rt = client.app[RUNTIME]

        async def down(_key_hash: bytes) -> None:
            raise OSError("connection refused")

        rt.cache._loader = down  # PostgreSQL goes away
        await asyncio.sleep(0.3)  # the entry's TTL has passed
        for _ in range(3):
            resp = await client.post("/v1/chat/completions", json=CHAT, headers=bearer(tok.key))
            assert resp.status == 200
        assert rt.cache.stale_served >= 1
        # an unknown key cannot be checked: refused with 503, not mistaken for invalid
        resp = await client.post("/v1/chat/completions", json=CHAT, headers=bearer("x" * 48))
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "metadata_unavailable"
        # a disable written while PostgreSQL was down for us is still enforced via Redis
        await env.redis.hset(env.keys.token(uid, tok.id), "status", 2)
        assert (
            await client.post("/v1/chat/completions", json=CHAT, headers=bearer(tok.key))
        ).status == 401
    finally:
        await client.close()
