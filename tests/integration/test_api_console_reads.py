"""Issue 12 items 2-4 against the real PostgreSQL and Redis: trailing slashes, the routes
``/{id}`` used to swallow, and the read endpoints New API's console loads (usage charts
derived from the logs table, groups, models, pricing, status, options)."""

from __future__ import annotations

import time

from relaygate.admin import ROLE_ADMIN, ROLE_ROOT
from relaygate.appkeys import RUNTIME
from relaygate.store.logs import PartitionKeeper

from .api_fixtures import Api, make_user, three_users

HOUR = 3600


async def _log(env, user_id, username, model, created_at, quota, tokens=(10, 5), type_=2):
    async with env.pool.acquire() as conn:
        await PartitionKeeper().ensure(conn, [created_at])
        await conn.execute(
            "INSERT INTO logs (request_id, created_at, type, user_id, username, model_name,"
            " quota, prompt_tokens, completion_tokens) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
            f"r{created_at}{user_id}{model}{quota}",
            created_at,
            type_,
            user_id,
            username,
            model,
            quota,
            tokens[0],
            tokens[1],
        )


async def test_usage_charts_are_hourly_buckets_from_the_logs(env, relay):
    root, _, user = await three_users(env)
    alice, admin_api = Api(relay, user), Api(relay, root)
    bob = await make_user(env, "bob")
    base = (int(time.time()) // HOUR - 5) * HOUR  # an hour boundary five hours ago
    await _log(env, user.id, "alice", "gpt-4o", base + 10, 100)
    await _log(env, user.id, "alice", "gpt-4o", base + 3000, 50, (1, 1))
    await _log(env, user.id, "alice", "gpt-4o-mini", base + HOUR + 5, 7)
    await _log(env, user.id, "alice", "gpt-4o", base + 20, 999, type_=5)  # not a consume row
    await _log(env, bob.id, "bob", "gpt-4o", base + 30, 1000)
    query = f"?start_timestamp={base}&end_timestamp={base + 2 * HOUR}"
    mine = await alice.ok("GET", "/api/data/self" + query)
    assert [
        (r["model_name"], r["created_at"], r["count"], r["quota"], r["token_used"]) for r in mine
    ] == [
        ("gpt-4o", base, 2, 150, 17),
        ("gpt-4o-mini", base + HOUR, 1, 7, 15),
    ]
    assert {r["user_id"] for r in mine} == {user.id} and mine[0]["username"] == "alice"
    everyone = await admin_api.ok("GET", "/api/data/" + query)
    assert [(r["model_name"], r["created_at"], r["count"], r["quota"]) for r in everyone] == [
        ("gpt-4o", base, 3, 1150),
        ("gpt-4o-mini", base + HOUR, 1, 7),
    ]
    bobs = await admin_api.ok("GET", "/api/data/" + query + "&username=bob")
    assert [(r["username"], r["quota"]) for r in bobs] == [("bob", 1000)]
    # the trailing-slash form the console sends, and the refusals
    assert await alice.ok("GET", "/api/data/self/" + query) == mine
    span = f"?start_timestamp={base - 40 * 86400}&end_timestamp={base}"
    assert await alice.refused("GET", "/api/data/self" + span) == "Time span cannot exceed 1 month"
    assert "must be an integer" in await alice.refused("GET", "/api/data/self?start_timestamp=x")
    assert "privileges" in await alice.refused("GET", "/api/data/" + query)


async def test_routes_that_id_routes_used_to_swallow(env, relay):
    root, _, user = await three_users(env)
    root_api, alice = Api(relay, root), Api(relay, user)
    await env.admin.create_channel("c1", "http://127.0.0.1:9", "sk-up", "gpt-4o,gpt-4o-mini")
    off = await env.admin.create_channel("c2", "http://127.0.0.1:9", "sk-up", "o1", status=2)
    await relay.app[RUNTIME].catalog.reload()  # (the invalidation would, a moment later)
    assert await alice.ok("GET", "/api/user/models") == ["gpt-4o", "gpt-4o-mini"]
    assert await alice.ok("GET", "/api/user/models?group=vip") == []  # not usable by alice
    groups = await alice.ok("GET", "/api/user/self/groups")
    assert groups == {"default": {"ratio": 1.0, "desc": "Default group"}}
    listed = await root_api.ok("GET", "/api/channel/models")
    assert all(m["object"] == "model" and m["owned_by"] for m in listed)
    assert "gpt-4o" in {m["id"] for m in listed}
    assert await root_api.ok("GET", "/api/channel/models_enabled") == ["gpt-4o", "gpt-4o-mini"]
    assert await root_api.ok("DELETE", "/api/channel/disabled") == 1
    assert await root_api.refused("GET", f"/api/channel/{off}") == "Channel does not exist"
    status, body = await root_api.call("GET", "/api/channel/test")
    assert (status, body["success"]) == (200, True)
    assert "privileges" in await alice.refused("GET", "/api/channel/models")


async def test_trailing_slashes_either_way(env, relay):
    alice = Api(relay, await make_user(env, "alice"))
    created = await alice.ok("POST", "/api/token", {"name": "noslash", "expired_time": -1})
    assert (await alice.ok("GET", "/api/token"))["total"] == 1
    assert (await alice.ok("GET", f"/api/token/{created['id']}/"))["name"] == "noslash"
    assert (await alice.ok("GET", "/api/log/self/?p=1"))["items"] == []
    assert await alice.ok("DELETE", f"/api/token/{created['id']}/") is None
    assert (await alice.ok("GET", "/api/token/?p=1"))["total"] == 0
    # an unknown /api/ path is New API's envelope, not plain text
    resp = await relay.get("/api/nope", headers=alice.user.headers())
    assert resp.status == 404 and resp.content_type == "application/json"
    assert await resp.json() == {"success": False, "message": "Invalid URL (GET /api/nope)"}


async def test_status_pricing_groups_models_and_options(env, relay):
    root, admin, user = await three_users(env)
    await env.admin.create_channel("c1", "http://127.0.0.1:9", "sk-up", "gpt-4o,unpriced-x")
    await env.admin.set_option("SomeSecretKey", "hidden")
    await relay.app[RUNTIME].catalog.reload()
    status = await (await relay.get("/api/status")).json()
    data = status["data"]
    assert data["quota_per_unit"] == 500000 and data["password_login_enabled"] is True
    assert data["register_enabled"] is False and data["setup"] is True
    pricing = await (await relay.get("/api/pricing")).json()
    assert pricing["success"] is True
    assert [p["model_name"] for p in pricing["data"]] == ["gpt-4o"]  # unpriced: hidden
    assert pricing["data"][0]["enable_groups"] == ["default"]
    assert pricing["group_ratio"]["default"] == 1.0
    admin_api, root_api, alice = Api(relay, admin), Api(relay, root), Api(relay, user)
    assert "default" in await admin_api.ok("GET", "/api/group/")
    assert "default" in await admin_api.ok("GET", "/api/group")
    presets = await alice.ok("GET", "/api/models")
    assert "gpt-4o" in presets["1"] and any(m.startswith("claude") for m in presets["14"])
    options = await root_api.ok("GET", "/api/option/")
    assert "SomeSecretKey" not in {o["key"] for o in options}
    assert "privileges" in await admin_api.refused("GET", "/api/option/")
    assert admin.role == ROLE_ADMIN and root.role == ROLE_ROOT
