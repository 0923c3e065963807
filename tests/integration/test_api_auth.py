"""Done-when 4: the role and ownership matrix against every registered route, plus New API's
user-management role rules, and the OpenAPI document listing exactly the routes."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi_spec_validator import validate

from relaygate.admin import ROLE_ADMIN, ROLE_ROOT, ROLE_USER
from relaygate.api import all_routes
from relaygate.api.auth import Level
from relaygate.api.openapi import DOCUMENT
from relaygate.api.unsupported import is_unsupported
from relaygate.app import init_app

from .api_fixtures import Api, ApiUser, make_user, three_users

NO_PRIVILEGE = "Unauthorized, insufficient privileges"
INVALID = "Unauthorized, invalid access token"
MISSING_ID = "999999"
# public routes that take credentials in their body, and their answer to an empty one
CREDENTIAL_FORMS = {
    "/api/user/login": "Invalid parameters",
    "/api/user/register": "New user registration has been disabled by administrator",
}


def concrete(path: str) -> str:
    return path.replace("{id}", MISSING_ID)


async def send(relay, route, headers):
    body = {} if route.method in ("POST", "PUT") else None
    resp = await relay.request(route.method, concrete(route.path), json=body, headers=headers)
    return resp.status, await resp.json()


def test_openapi_lists_exactly_the_registered_routes(relay):
    validate(DOCUMENT)  # a well-formed OpenAPI 3.1 document
    registered = set()
    for r in relay.app.router.routes():
        path = r.resource.canonical if r.resource else ""
        # OPTIONS: the CORS preflight cors.install adds to every resource, not an operation
        if r.method != "OPTIONS" and path.startswith(("/api/", "/v1/dashboard/", "/dashboard/")):
            registered.add((r.method.lower(), path))
    documented = {(m, p) for p, ops in DOCUMENT["paths"].items() for m in ops}
    assert registered == documented
    assert {(r.method.lower(), r.path) for r in all_routes()} == documented
    # every documented operation states its permission level
    levels = {"Public", "Key", "User", "Admin", "Root"}
    assert all(
        op["x-permission"] in levels for ops in DOCUMENT["paths"].values() for op in ops.values()
    )


@pytest.fixture
async def matrix_relay(settings):
    """The app without the failed-authentication limit: the matrix sends an unknown access
    token to each of its ~200 routes, past the 60 a minute one address may send."""
    client = TestClient(TestServer(init_app(settings.replace(auth_failures_per_minute=0))))
    await client.start_server()
    yield client
    await client.close()


async def test_every_route_against_every_role(env, matrix_relay):
    relay = matrix_relay
    root, admin, user = await three_users(env)
    banned = await make_user(env, "banned")
    await env.admin.set_user_status(banned.id, 2)
    callers = {ROLE_ROOT: root, ROLE_ADMIN: admin, ROLE_USER: user}
    checked = 0
    for route in all_routes():
        if route.level in (Level.PUBLIC, Level.KEY):
            status, data = await send(relay, route, user.headers())
            if route.level == Level.PUBLIC and route.path in CREDENTIAL_FORMS:
                # login/register with an empty body: refused for the body, not the caller
                assert (status, data["success"]) == (200, False), route
                assert data["message"] == CREDENTIAL_FORMS[route.path], route
            elif route.level == Level.PUBLIC and is_unsupported(route.handler):
                assert (status, data["success"]) == (200, False), route
                assert data["message"].startswith("Not supported by relaygate: "), route
            elif route.level == Level.PUBLIC:
                assert status == 200 and (data.get("success", True) is True), route
            else:  # an access token is not an sk- key
                assert status == 401, (route, data)
            continue
        # missing credentials / New-Api-User problems: 401 with New API's messages
        status, data = await send(relay, route, {})
        assert (status, data["success"]) == (401, False), route
        assert data["message"] == "Unauthorized, not logged in and no access token provided"
        for header, message in (
            (None, "Unauthorized, New-Api-User header not provided"),
            ("abc", "Unauthorized, New-Api-User header format error"),
            (str(admin.id), "Unauthorized, New-Api-User does not match logged in user"),
        ):
            headers = user.headers()
            if header is None:
                del headers["New-Api-User"]
            else:
                headers["New-Api-User"] = header
            status, data = await send(relay, route, headers)
            if header is None and route.level == Level.USER:
                # tolerated on user-level routes (the seeds' examples send no such header)
                assert status == 200 and data.get("message") != message, route
                if route.path == "/api/user/token":
                    user.access = data["data"]
                continue
            assert (status, data) == (401, {"success": False, "message": message}), route
        # bare token without "Bearer " works as in New API
        bare = {"Authorization": root.access, "New-Api-User": str(root.id)}
        status, data = await send(relay, route, bare)
        assert status == 200 and data.get("message") not in (NO_PRIVILEGE, INVALID), route
        if route.path == "/api/user/token":
            root.access = data["data"]  # rotated: keep using the new one
        # an unknown access token and a banned user: 200 success:false
        status, data = await send(relay, route, {**user.headers(), "Authorization": "Bearer nope"})
        assert (status, data) == (
            200,
            {"success": False, "message": "Unauthorized, invalid access token"},
        )
        status, data = await send(relay, route, banned.headers())
        assert (status, data) == (200, {"success": False, "message": "User has been banned"})
        for role, caller in callers.items():
            status, data = await send(relay, route, caller.headers())
            assert status == 200, (route, role, data)
            if role < int(route.level):
                assert data == {"success": False, "message": NO_PRIVILEGE}, (route, role)
            else:
                assert data.get("message") not in (NO_PRIVILEGE, INVALID), (route, role, data)
            if route.path == "/api/user/token" and data["success"]:
                caller.access = data["data"]  # rotated: keep using the new one
        checked += 1
    assert checked >= 25


async def test_user_management_role_rules(env, relay):
    root, admin, user = await three_users(env)
    admin2 = await make_user(env, "admin2", ROLE_ADMIN)
    as_root, as_admin = Api(relay, root), Api(relay, admin)

    # admins act on lower roles only; root on anyone, but root itself is protected
    assert "same or higher" in await as_admin.refused("GET", f"/api/user/{admin2.id}")
    assert "same or higher" in await as_admin.refused("GET", f"/api/user/{root.id}")
    assert (await as_admin.ok("GET", f"/api/user/{user.id}"))["username"] == "alice"
    for action in ("disable", "delete", "demote", "promote"):
        msg = await as_admin.refused(
            "POST", "/api/user/manage", {"id": admin2.id, "action": action}
        )
        assert "same or higher" in msg
    assert "Cannot disable" in await as_root.refused(
        "POST", "/api/user/manage", {"id": root.id, "action": "disable"}
    )
    assert "Cannot delete" in await as_root.refused("DELETE", f"/api/user/{root.id}")
    assert "Cannot demote" in await as_root.refused(
        "POST", "/api/user/manage", {"id": root.id, "action": "demote"}
    )
    assert "cannot promote" in await as_admin.refused(
        "POST", "/api/user/manage", {"id": user.id, "action": "promote"}
    )
    assert "equal to or higher" in await as_admin.refused(
        "POST", "/api/user/", {"username": "newadmin", "role": 10}
    )
    made = await as_root.ok(
        "POST",
        "/api/user/",
        {"username": "newadmin", "role": 10, "password": "longenough", "quota": 5000},
    )
    assert made["role"] == 10 and made["quota"] == 5000 and made["access_token"]
    newbie = ApiUser(made["id"], made["access_token"], 10)
    assert (await Api(relay, newbie).ok("GET", "/api/user/self"))["username"] == "newadmin"
    dup = await as_root.refused("POST", "/api/user/", {"username": "newadmin"})
    assert "already taken" in dup

    # promote / demote
    promoted = await as_root.ok("POST", "/api/user/manage", {"id": user.id, "action": "promote"})
    assert promoted["role"] == 10
    assert "already an administrator" in await as_root.refused(
        "POST", "/api/user/manage", {"id": user.id, "action": "promote"}
    )
    demoted = await as_root.ok("POST", "/api/user/manage", {"id": user.id, "action": "demote"})
    assert demoted["role"] == 1

    # disable / enable: a disabled user is refused by the API at once
    await as_admin.ok("POST", "/api/user/manage", {"id": user.id, "action": "disable"})
    assert await Api(relay, user).refused("GET", "/api/user/self") == "User has been banned"
    await as_admin.ok("POST", "/api/user/manage", {"id": user.id, "action": "enable"})
    assert (await Api(relay, user).ok("GET", "/api/user/self"))["status"] == 1

    # quota: add, subtract, override (set remain); bad values are refused clearly
    start = (await as_admin.ok("GET", f"/api/user/{user.id}"))["quota"]
    after = await as_admin.ok(
        "POST",
        "/api/user/manage",
        {"id": user.id, "action": "add_quota", "mode": "add", "value": 500},
    )
    assert after["quota"] == start + 500
    after = await as_admin.ok(
        "POST",
        "/api/user/manage",
        {"id": user.id, "action": "add_quota", "mode": "subtract", "value": 200},
    )
    assert after["quota"] == start + 300
    after = await as_admin.ok(
        "POST",
        "/api/user/manage",
        {"id": user.id, "action": "add_quota", "mode": "override", "value": 42},
    )
    assert after["quota"] == 42
    for bad in ({"value": 0, "mode": "add"}, {"value": "x"}, {"mode": "double", "value": 1}):
        await as_admin.refused(
            "POST", "/api/user/manage", {"id": user.id, "action": "add_quota", **bad}
        )
    assert "action must be" in await as_admin.refused(
        "POST", "/api/user/manage", {"id": user.id, "action": "explode"}
    )

    # full update: profile fields and quota (= set remain)
    updated = await as_admin.ok(
        "PUT", "/api/user/", {"id": user.id, "display_name": "Alice", "quota": 1000, "group": "vip"}
    )
    assert (updated["display_name"], updated["quota"], updated["group"]) == ("Alice", 1000, "vip")
    assert "same or higher" in await as_admin.refused(
        "PUT", "/api/user/", {"id": root.id, "remark": "x"}
    )

    # listing and search
    listed = await as_admin.ok("GET", "/api/user/?page_size=2")
    assert listed["total"] == 5 and len(listed["items"]) == 2
    found = await as_admin.ok("GET", "/api/user/search?keyword=dmin")
    assert sorted(u["username"] for u in found["items"]) == ["admin", "admin2", "newadmin"]
    assert (await as_admin.ok("GET", f"/api/user/search?keyword={user.id}"))["items"][0][
        "id"
    ] == user.id
    assert (await as_admin.ok("GET", "/api/user/search?role=100"))["total"] == 1

    # delete: the user's access token and tokens stop working
    await as_admin.ok("DELETE", f"/api/user/{user.id}")
    assert (
        await Api(relay, user).refused("GET", "/api/user/self")
        == "Unauthorized, invalid access token"
    )
    assert await as_admin.refused("GET", f"/api/user/{user.id}") == "User does not exist"
