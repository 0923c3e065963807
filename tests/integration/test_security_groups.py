"""Issue 10 items 1 and 7 (red-team #1, #16, #21): a user cannot give a token a group they
may not use (on create, on update, and at relay time when the group is taken away later);
``/v1/models`` is no back door for dead tokens; the per-user token cap holds under a burst
of concurrent creates."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from relaygate.admin import ROLE_USER
from relaygate.api.tokens import MAX_USER_TOKENS

from .api_fixtures import Api, make_user
from .helpers import CHAT, bearer, refresh

MINI = {**CHAT, "max_tokens": 5}


async def _channels(env: Any, relay: Any, upstream: str) -> None:
    await env.admin.create_channel("std", upstream, "k-std", "gpt-4o-mini")
    await env.admin.create_channel("vip", upstream, "k-vip", "gpt-4o-mini", group="vip")
    await refresh(relay)


async def _chat(relay: Any, key: str) -> tuple[int, Any]:
    resp = await relay.post("/v1/chat/completions", json=MINI, headers=bearer(key))
    return resp.status, await resp.json()


async def _until(check: Any, seconds: float = 5.0) -> Any:
    """Invalidation reaches the in-process relay through Redis pub/sub: wait a little."""
    deadline = time.monotonic() + seconds
    while True:
        result = await check()
        if result[0] or time.monotonic() > deadline:
            return result[1]
        await asyncio.sleep(0.05)


async def test_user_cannot_put_a_group_they_may_not_use_on_a_token(
    env: Any, relay: Any, mock_upstream: str
) -> None:
    await _channels(env, relay, mock_upstream)
    alice = await make_user(env, "alice", ROLE_USER)
    api = Api(relay, alice)
    message = await api.refused("POST", "/api/token/", {"name": "t", "group": "vip"})
    assert "vip" in message
    created = await api.ok(
        "POST", "/api/token/", {"name": "t", "group": "default", "unlimited_quota": True}
    )
    tid, key = created["id"], created["key"]
    assert "vip" in await api.refused("PUT", "/api/token/", {"id": tid, "group": "vip"})
    # an edit that re-sends the unchanged group is fine (New API's console does so)
    await api.ok("PUT", "/api/token/", {"id": tid, "group": "default", "name": "t2"})
    status, body = await _chat(relay, key)
    assert status == 200, body

    # the operator opens vip to everyone (New API's UserUsableGroups option)
    await env.admin.set_option("UserUsableGroups", '{"default": "std", "vip": "vip"}')
    await refresh(relay)
    await api.ok("PUT", "/api/token/", {"id": tid, "group": "vip"})
    status, body = await _chat(relay, key)
    assert status == 200, body

    # ... and closes it again: the token stops on the next request (a relay-time check)
    await env.admin.set_option("UserUsableGroups", '{"default": "std"}')
    await refresh(relay)
    status, body = await _chat(relay, key)
    assert status == 403 and body["error"]["code"] == "group_forbidden", body
    assert "vip" in body["error"]["message"]
    resp = await relay.get("/v1/models", headers=bearer(key))
    assert resp.status == 403


async def test_token_group_taken_away_with_the_users_group_stops_working(
    env: Any, relay: Any, mock_upstream: str
) -> None:
    """A vip user's token pinned to vip; the user is moved to default: refused next time."""
    await _channels(env, relay, mock_upstream)
    uid, _ = await env.admin.create_user("bob", ROLE_USER, 10**9, group="vip")
    tok = await env.admin.create_token(uid, "t", unlimited=True, group="vip")
    status, body = await _chat(relay, tok.key)
    assert status == 200, body
    await env.admin.update_user(uid, {"group": "default"})

    async def refused() -> tuple[bool, tuple[int, Any]]:
        result = await _chat(relay, tok.key)
        return result[0] == 403, result

    status, body = await _until(refused)
    assert status == 403 and body["error"]["code"] == "group_forbidden", body


async def test_unpriced_group_is_refused_as_deprecated(
    env: Any, relay: Any, mock_upstream: str
) -> None:
    await env.admin.create_channel("old", mock_upstream, "k", "gpt-4o-mini", group="legacy")
    await env.admin.set_option("UserUsableGroups", '{"default": "", "legacy": ""}')
    await refresh(relay)
    uid, _ = await env.admin.create_user("carol", ROLE_USER, 10**9)
    tok = await env.admin.create_token(uid, "t", unlimited=True, group="legacy")
    status, body = await _chat(relay, tok.key)
    assert status == 403 and body["error"]["code"] == "group_deprecated", body


async def test_models_list_refuses_disabled_expired_and_banned(
    env: Any, relay: Any, mock_upstream: str
) -> None:
    await _channels(env, relay, mock_upstream)
    uid, _ = await env.admin.create_user("dave", ROLE_USER, 10**9)
    live = await env.admin.create_token(uid, "live", unlimited=True)
    off = await env.admin.create_token(uid, "off", unlimited=True)
    old = await env.admin.create_token(uid, "old", unlimited=True)
    await env.admin.update_token(off.id, {"status": 2})
    await env.admin.update_token(old.id, {"expired_time": int(time.time()) - 10})

    async def models(key: str) -> int:
        resp = await relay.get("/v1/models", headers=bearer(key))
        await resp.read()
        return resp.status

    assert await models(live.key) == 200
    assert await models(off.key) == 401
    assert await models(old.key) == 401
    await env.admin.set_user_status(uid, 2)

    async def banned() -> tuple[bool, int]:
        status = await models(live.key)
        return status == 403, status

    assert await _until(banned) == 403


async def test_concurrent_creates_never_pass_the_token_cap(env: Any, relay: Any) -> None:
    """Red-team #21: 100 concurrent creates at 990 tokens ended at 1019."""
    erin = await make_user(env, "erin", ROLE_USER)
    async with env.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO tokens (user_id, key_hash, key_mask, name, created_time)"
            " SELECT $1, decode(md5(g::text), 'hex'), 'sk-x', 'bulk', 0"
            " FROM generate_series(1, $2) g",
            erin.id,
            MAX_USER_TOKENS - 10,
        )
    api = Api(relay, erin)
    results = await asyncio.gather(
        *(api.call("POST", "/api/token/", {"name": f"t{i}"}) for i in range(100))
    )
    assert all(status == 200 for status, _ in results)
    created = sum(1 for _, body in results if body["success"])
    assert created == 10, [b for _, b in results if not b["success"]][:1]
    async with env.pool.acquire() as conn:
        count = await conn.fetchval(
            "SELECT count(*) FROM tokens WHERE user_id = $1 AND deleted_at IS NULL", erin.id
        )
    assert count == MAX_USER_TOKENS
