"""Channels through the API: CRUD, the key never returned, status, test latency, and every
write honoured by the relay on its next request (``chan:<id>`` invalidation)."""

from __future__ import annotations

import asyncio

from relaygate.admin import ROLE_ADMIN

from .api_fixtures import Api, make_user
from .helpers import CHAT, bearer


async def eventually(check, timeout: float = 30.0) -> None:
    """Channel tables reload asynchronously on the invalidation message. The bound only
    turns a reload that never comes into a failure; it makes no claim on how fast one is."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():
            return
        assert asyncio.get_running_loop().time() < deadline, "relay never picked up the change"
        await asyncio.sleep(0.02)


async def test_channel_crud_key_write_only_and_relay_follows(env, relay, mock_upstream):
    admin = await make_user(env, "ops", ROLE_ADMIN)
    api = Api(relay, admin)
    secret = "upstream-secret-key-123"
    created = await api.ok(
        "POST",
        "/api/channel/",
        {
            "mode": "single",
            "channel": {
                "type": 1,
                "name": "mock",
                "key": secret,
                "base_url": mock_upstream,
                "models": "gpt-4o-mini,gpt-4o",
                "group": "default",
                "priority": 5,
                "weight": 2,
                "model_mapping": '{"gpt-4o": "gpt-4o-mini"}',
            },
        },
    )
    cid = created["id"]
    assert created["models"] == "gpt-4o-mini,gpt-4o" and created["priority"] == 5
    assert "key" not in created
    token = await env.admin.create_token(admin.id, "t", remain_quota=10**6)
    key = f"sk-{token.key}"

    async def chat_status(model: str = "gpt-4o-mini") -> int:
        resp = await relay.post(
            "/v1/chat/completions", json={**CHAT, "model": model}, headers=bearer(key)
        )
        await resp.read()
        return resp.status

    await eventually(lambda: _is(chat_status(), 200))
    assert await chat_status("gpt-4o") == 200  # mapped upstream

    texts = []
    for path in ("/api/channel/", f"/api/channel/{cid}", "/api/channel/search?keyword=mo"):
        resp = await relay.get(path, headers=admin.headers())
        texts.append(await resp.text())
    assert all(secret not in t for t in texts)
    listed = await api.ok("GET", "/api/channel/")
    assert listed["total"] == 1 and listed["type_counts"] == {"1": 1, "all": 1}
    found = await api.ok("GET", "/api/channel/search?model=gpt-4o")
    assert [c["id"] for c in found["items"]] == [cid]
    assert (await api.ok("GET", "/api/channel/search?model=nope"))["total"] == 0

    # the test endpoint: one small request, latency in seconds
    status, tested = await api.call("GET", f"/api/channel/test/{cid}")
    assert status == 200 and tested["success"] is True, tested
    assert isinstance(tested["time"], float) and 0 <= tested["time"] < 5
    assert (await api.ok("GET", f"/api/channel/{cid}"))["test_time"] > 0
    bad = await api.ok(
        "POST",
        "/api/channel/",
        {"name": "dead", "key": "k", "models": "m", "base_url": "http://127.0.0.1:9"},
    )
    status, failed = await api.call("GET", f"/api/channel/test/{bad['id']}")
    assert failed["success"] is False and "time" in failed

    # disable: the relay stops using it on its next request; enable again
    await api.ok("POST", f"/api/channel/{cid}/status", {"status": 2})
    await eventually(lambda: _is(chat_status(), 503))
    await api.ok("PUT", "/api/channel/?status_only=1", {"id": cid, "status": 1})
    await eventually(lambda: _is(chat_status(), 200))

    # update without a key keeps the stored key; models can be narrowed
    updated = await api.ok(
        "PUT", "/api/channel/", {"id": cid, "models": ["gpt-4o-mini"], "key": ""}
    )
    assert updated["models"] == "gpt-4o-mini"
    await eventually(lambda: _is(chat_status("gpt-4o"), 503))
    assert await chat_status() == 200
    async with env.pool.acquire() as conn:
        assert await conn.fetchval("SELECT key FROM channels WHERE id = $1", cid) == secret

    # validation and unknown ids
    for body, msg in (
        ({"name": "x", "models": "m"}, "key cannot be empty"),
        ({"key": "k"}, "models cannot be empty"),
        ({"key": "k", "models": "m", "base_url": "ftp://x"}, "http://"),
        ({"key": "k", "models": "m", "model_mapping": "[1]"}, "model_mapping"),
        ({"key": "k", "models": "m", "weight": -1}, "weight"),
    ):
        assert msg in await api.refused("POST", "/api/channel/", body)
    assert await api.refused("GET", "/api/channel/424242") == "Channel does not exist"
    assert await api.refused("DELETE", "/api/channel/424242") == "Channel does not exist"

    batch = await api.ok(
        "POST",
        "/api/channel/",
        {
            "mode": "batch",
            "channel": {
                "name": "multi",
                "key": "k1\nk2\nk3",
                "models": "gpt-4o-mini",
                "base_url": mock_upstream,
            },
        },
    )
    assert len(batch["ids"]) == 3

    await api.ok("DELETE", f"/api/channel/{cid}")
    assert await api.refused("GET", f"/api/channel/{cid}") == "Channel does not exist"


async def _is(coro, expected) -> bool:
    return (await coro) == expected
