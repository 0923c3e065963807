"""Text that broke /api/ routes with a 500 (red team, 2026-12-07): New API answers such
input with its envelope (200, success false), and nothing odd is stored."""

from __future__ import annotations

from typing import Any

from tests.integration.api_fixtures import Api, make_user


async def test_nul_and_control_characters_in_names(env: Any, relay: Any) -> None:
    user = await make_user(env, "bob")
    api = Api(relay, user)
    r = await relay.post("/api/user/login", json={"username": "bo\u0000b", "password": "whatever1"})
    assert r.status == 200 and (await r.json())["success"] is False
    for field, value in (("username", "b\u0000x"), ("display_name", "a\nb\x1b[31m")):
        status, data = await api.call("PUT", "/api/user/self", {field: value})
        assert status == 200 and data["success"] is False, (field, data)
    me = await api.ok("GET", "/api/user/self")
    assert me["username"] == "bob" and "\x1b" not in me["display_name"]


async def test_integers_int_cannot_read_are_refused(env: Any, relay: Any) -> None:
    """'²'.isdigit() is true and lstrip('-') let '--2' through: int() raised, a 500."""
    user = await make_user(env, "carol")
    api = Api(relay, user)
    for path in (
        "/api/token/?p=%C2%B2",
        "/api/token/?page_size=%C2%B9",
        "/api/log/self?type=%C2%B2",
        "/api/log/self?start_timestamp=%C2%B3",
        "/api/data/self?end_timestamp=%C2%B2",
        "/api/token/?p=--2",
        "/api/log/self?type=--2",
    ):
        status, data = await api.call("GET", path)
        assert status == 200 and data["success"] is False, (path, data)
    status, _ = await api.call("GET", "/api/user/self", headers={"New-Api-User": "--1"})
    assert status == 401
    status, data = await api.call("GET", "/api/token/?p=-2")  # New API: below 1 is page 1
    assert status == 200 and data["success"] is True
