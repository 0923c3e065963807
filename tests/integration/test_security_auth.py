"""Issue 10 item 6 (red-team #22): made-up keys are answered without PostgreSQL (the key
index in Redis), and failed authentications are rate-limited per client address, on the
relay and on the management API. Real Redis and PostgreSQL."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp.test_utils import TestClient

from relaygate.app import init_app
from relaygate.appkeys import RUNTIME
from tests.prodserver import ProductionServer

from .helpers import CHAT, bearer

MINI = {**CHAT, "max_tokens": 5}


async def _app_on(settings: Any) -> TestClient:  # type: ignore[type-arg]
    client = TestClient(ProductionServer(init_app(settings), host="127.0.0.1"))
    await client.start_server()
    return client


class _CountingPool:
    """The app's pool, counting checkouts (asyncpg's Pool does not let a test patch it)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self.checkouts = 0

    def acquire(self, *args: Any, **kw: Any) -> Any:
        self.checkouts += 1
        return self._pool.acquire(*args, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def _count_pg(client: Any) -> _CountingPool:
    rt = client.app[RUNTIME]
    rt.pool = rt.tokens.pool = _CountingPool(rt.pool)
    return rt.pool  # type: ignore[no-any-return]


async def _status(client: Any, key: str) -> int:
    resp = await client.post("/v1/chat/completions", json=MINI, headers=bearer(key))
    await resp.read()
    return resp.status


async def test_made_up_keys_cost_no_postgres_query(env: Any, mock_upstream: str) -> None:
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", mock_upstream, "k", "gpt-4o-mini")
    assert await env.accounts.key_index.ensure()
    client = await _app_on(env.settings.replace(auth_failures_per_minute=0))
    try:
        pg = _count_pg(client)
        for _ in range(300):
            assert await _status(client, "sk-" + secrets.token_urlsafe(36)) == 401
        assert pg.checkouts == 0, f"{pg.checkouts} PostgreSQL checkouts for 300 made-up keys"

        # a key created now works at once: it entered the index before its row
        tok = await env.admin.create_token(uid, "fresh", unlimited=True)
        assert await _status(client, tok.key) == 200

        # Redis lost the index: PostgreSQL answers again (nothing refused wrongly) ...
        await env.redis.delete(env.keys.key_index)
        other = await env.admin.create_token(uid, "while-lost", unlimited=True)
        pg.checkouts = 0
        assert await _status(client, "sk-" + secrets.token_urlsafe(36)) == 401
        assert pg.checkouts >= 1
        assert await _status(client, other.key) == 200
        # ... until a worker rebuilds it, with every key, old and new
        assert await env.accounts.key_index.ensure()
        pg.checkouts = 0
        assert await _status(client, "sk-" + secrets.token_urlsafe(36)) == 401
        assert pg.checkouts == 0
        third = await env.admin.create_token(uid, "after", unlimited=True)
        client.app[RUNTIME].cache.invalidate_all()
        for key in (tok.key, other.key, third.key):
            assert await _status(client, key) == 200
    finally:
        await client.close()


async def test_failed_authentications_are_rate_limited_per_address(
    env: Any, mock_upstream: str
) -> None:
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", mock_upstream, "k", "gpt-4o-mini")
    warm = await env.admin.create_token(uid, "warm", unlimited=True)
    cold = await env.admin.create_token(uid, "cold", unlimited=True)
    client = await _app_on(env.settings.replace(auth_failures_per_minute=20))
    try:
        assert await _status(client, warm.key) == 200  # cached from now on
        statuses = [await _status(client, "sk-" + secrets.token_urlsafe(36)) for _ in range(25)]
        assert statuses[:20] == [401] * 20 and statuses[20:] == [429] * 5, statuses
        resp = await client.post(
            "/v1/chat/completions", json=MINI, headers=bearer("sk-" + secrets.token_urlsafe(36))
        )
        body = await resp.json()
        assert body["error"]["code"] == "too_many_failed_authentications"
        assert await _status(client, warm.key) == 200  # a key in use keeps working
        assert await _status(client, cold.key) == 429  # no lookups for this address now

        # the management API shares the budget of the address
        resp = await client.get("/api/user/self", headers={"Authorization": "Bearer nope"})
        body = await resp.json()
        assert resp.status == 429 and body["success"] is False, body
    finally:
        await client.close()


async def _models_status(client: Any, path: str, key: str) -> int:
    headers = {"x-goog-api-key": key} if path.startswith("/v1beta/") else bearer(key)
    resp = await client.get(path, headers=headers)
    await resp.read()
    return resp.status


async def test_model_routes_share_the_failed_authentication_limit(
    env: Any, mock_upstream: str
) -> None:
    """Listing models checks a key like a chat call does: guesses there count toward the
    address's budget and are refused once it is spent (no side door for key probing)."""
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", mock_upstream, "k", "gpt-4o-mini")
    warm = await env.admin.create_token(uid, "warm", unlimited=True)
    client = await _app_on(env.settings.replace(auth_failures_per_minute=9))
    try:
        assert await _models_status(client, "/v1/models", warm.key) == 200
        paths = ["/v1/models", "/v1beta/models", "/v1/models/gpt-4o-mini"] * 4
        statuses = [
            await _models_status(client, p, "sk-" + secrets.token_urlsafe(36)) for p in paths
        ]
        assert statuses[:9] == [401] * 9 and statuses[9:] == [429] * 3, statuses
        assert await _status(client, "sk-" + secrets.token_urlsafe(36)) == 429
        assert await _models_status(client, "/v1/models", warm.key) == 200
    finally:
        await client.close()


async def test_model_list_says_503_when_token_settings_cannot_load(
    env: Any, mock_upstream: str
) -> None:
    """A metadata outage on the model list is the relay's 503 in the caller's dialect, as
    on chat, not an unhandled 500."""
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", mock_upstream, "k", "gpt-4o-mini")
    tok = await env.admin.create_token(uid, "t", unlimited=True)
    client = await _app_on(env.settings)
    try:
        cache = client.app[RUNTIME].cache

        async def broken(key_hash: bytes) -> Any:
            raise OSError("metadata store down")

        cache.get = broken
        for path in ("/v1/models", "/v1beta/models", "/v1/models/gpt-4o-mini"):
            headers = (
                {"x-goog-api-key": tok.key} if path.startswith("/v1beta/") else bearer(tok.key)
            )
            resp = await client.get(path, headers=headers)
            body = await resp.json()
            assert resp.status == 503, (path, resp.status, body)
            assert "error" in body, body
    finally:
        await client.close()
