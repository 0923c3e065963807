"""Issue 12 item 7: GET a token, change one field, PUT the object back: exactly that field
changes (New API scripts round-trip the object; the ``models`` array that GET adds must not
win over an edited ``model_limits``), and conflicting edits are refused clearly."""

from __future__ import annotations

import time
from typing import Any

import pytest

from relaygate.api.tokens import MSG_MODELS_CONFLICT

from .api_fixtures import Api, make_user

FUTURE = int(time.time()) + 86400 * 30
# what the edit does: (field, new value) and how GET must show it afterwards
EDITS: list[tuple[str, Any, dict[str, Any]]] = [
    ("name", "renamed", {"name": "renamed"}),
    ("remain_quota", 123_456, {"remain_quota": 123_456}),
    ("unlimited_quota", True, {"unlimited_quota": True}),
    ("expired_time", FUTURE, {"expired_time": FUTURE}),
    ("model_limits", "gpt-4o-mini", {"model_limits": "gpt-4o-mini", "models": ["gpt-4o-mini"]}),
    ("models", ["gpt-4o-mini"], {"model_limits": "gpt-4o-mini", "models": ["gpt-4o-mini"]}),
    ("model_limits_enabled", False, {"model_limits_enabled": False}),
    ("allow_ips", "10.0.0.0/8", {"allow_ips": "10.0.0.0/8"}),
    ("group", "default", {"group": "default"}),
    ("daily_quota", 5000, {"daily_quota": 5000}),
    ("monthly_quota", 90000, {"monthly_quota": 90000}),
    ("status", 2, {"status": 2}),
]
VOLATILE = {"accessed_time", "recent_activity"}


async def _token(api: Api) -> dict[str, Any]:
    created = await api.ok(
        "POST",
        "/api/token/",
        {
            "name": "roundtrip",
            "remain_quota": 500_000,
            "expired_time": -1,
            "model_limits_enabled": True,
            "model_limits": "gpt-4o,gpt-4o-mini",
            "allow_ips": "",
        },
    )
    return await api.ok("GET", f"/api/token/{created['id']}")


def _comparable(view: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in view.items() if k not in VOLATILE}


@pytest.mark.parametrize(("field", "value", "expect"), EDITS, ids=[e[0] for e in EDITS])
async def test_get_modify_put_changes_exactly_the_edited_field(env, relay, field, value, expect):
    api = Api(relay, await make_user(env, "alice"))
    before = await _token(api)
    edited = {**before, field: value}
    await api.ok("PUT", "/api/token/", edited)
    after = await api.ok("GET", f"/api/token/{before['id']}")
    want = {**_comparable(before), **expect}
    assert _comparable(after) == want


async def test_echoing_the_object_back_changes_nothing(env, relay):
    api = Api(relay, await make_user(env, "alice"))
    before = await _token(api)
    await api.ok("PUT", "/api/token/", before)
    after = await api.ok("GET", f"/api/token/{before['id']}")
    assert _comparable(after) == _comparable(before)


async def test_conflicting_models_and_model_limits_are_refused(env, relay):
    api = Api(relay, await make_user(env, "alice"))
    before = await _token(api)
    edited = {**before, "models": ["gpt-4o"], "model_limits": "gpt-4o-mini"}
    assert await api.refused("PUT", "/api/token/", edited) == MSG_MODELS_CONFLICT
    after = await api.ok("GET", f"/api/token/{before['id']}")
    assert _comparable(after) == _comparable(before)  # nothing applied


async def test_enable_and_extend_an_expired_token_in_one_put(env, relay):
    api = Api(relay, await make_user(env, "alice"))
    before = await _token(api)
    past = int(time.time()) - 10
    await api.ok("PUT", "/api/token/", {**before, "expired_time": past})
    expired = await api.ok("GET", f"/api/token/{before['id']}")
    assert expired["status"] == 3
    # echoing status 3 with a new expiry: the expiry applies, the status follows from it
    await api.ok("PUT", "/api/token/", {**expired, "expired_time": FUTURE})
    assert (await api.ok("GET", f"/api/token/{before['id']}"))["status"] == 1
    # asking to enable without fixing the expiry is refused, as New API
    await api.ok("PUT", "/api/token/", {**expired, "status": 2})
    disabled = await api.ok("GET", f"/api/token/{before['id']}")
    refused = await api.refused(
        "PUT", "/api/token/", {**disabled, "expired_time": past, "status": 1}
    )
    assert "expired" in refused
