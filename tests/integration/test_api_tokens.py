"""Tokens through the management API: enforcement by the relay on the very next request
(done-when 2), the key shown exactly once and never stored in plain text (done-when 3),
validation, New API's status rules, live figures, usage endpoints and logs."""

from __future__ import annotations

import asyncio
import os
import shutil
import time

from relaygate.admin import ROLE_ROOT

from .api_fixtures import Api, make_user
from .helpers import CHAT, bearer, flush_all, ledger, refresh

MINI = {**CHAT, "max_tokens": 20}


async def setup_channel(env, relay, mock_upstream, models="gpt-4o-mini,gpt-4o") -> None:
    await env.admin.create_channel("mock", mock_upstream, "upstream-secret", models)
    await refresh(relay)


async def chat(relay, key: str, body=MINI) -> tuple[int, dict]:
    resp = await relay.post("/v1/chat/completions", json=body, headers=bearer(key))
    return resp.status, await resp.json()


async def test_api_token_is_enforced_by_the_relay(env, relay, mock_upstream):
    await setup_channel(env, relay, mock_upstream)
    me = await make_user(env, "boss", ROLE_ROOT)
    api = Api(relay, me)
    created = await api.ok(
        "POST",
        "/api/token/",
        {
            "name": "scoped",
            "models": ["gpt-4o-mini"],
            "model_limits_enabled": True,
            "allow_ips": "127.0.0.1\n::1",
            "expired_time": int(time.time()) + 3600,
            "remain_credits": 1,  # 2500 quota
            "daily_credits": 0.02,  # 50 quota a day
        },
    )
    key, tid = created["key"], created["id"]
    assert (created["remain_quota"], created["daily_quota"]) == (2500, 50)

    status, body = await chat(relay, key)
    assert status == 200, body
    status, body = await chat(relay, key, {**MINI, "model": "gpt-4o"})
    assert status == 403 and body["error"]["code"] == "model_not_allowed"

    await api.ok("PUT", "/api/token/", {"id": tid, "allow_ips": "10.0.0.0/8"})
    status, body = await chat(relay, key)
    assert status == 403 and body["error"]["code"] == "access_denied"
    await api.ok("PUT", "/api/token/", {"id": tid, "allow_ips": "127.0.0.0/8, ::1"})

    # the daily quota stops the token well before its 2500 remain
    codes = []
    for _ in range(40):
        status, body = await chat(relay, key)
        if status != 200:
            codes.append((status, body["error"]["code"]))
            break
    assert codes == [(429, "daily_quota_exceeded")]

    # lift the daily limit, then squeeze the remain: refused with insufficient_quota
    await api.ok("PUT", "/api/token/", {"id": tid, "daily_quota": 0, "remain_quota": 10})
    for _ in range(20):
        status, body = await chat(relay, key)
        if status != 200:
            break
    assert status == 429 and body["error"]["type"] == "insufficient_quota"
    view = await api.ok("GET", f"/api/token/{tid}")
    assert view["remain_quota"] >= 0  # never past the quota
    assert view["status"] in (1, 4)

    await api.ok("PUT", "/api/token/", {"id": tid, "remain_credits": 1})
    assert (await chat(relay, key))[0] == 200

    await api.ok("PUT", "/api/token/", {"id": tid, "expired_time": int(time.time()) - 5})
    status, body = await chat(relay, key)
    assert status == 401 and body["error"]["code"] == "token_expired"
    # an expired token cannot be re-enabled before its expiry is fixed (New API's rule)
    msg = await api.refused("PUT", "/api/token/?status_only=1", {"id": tid, "status": 1})
    assert "expired" in msg
    await api.ok("PUT", "/api/token/", {"id": tid, "expired_time": -1})
    assert (await chat(relay, key))[0] == 200

    await api.ok("PUT", "/api/token/?status_only=1", {"id": tid, "status": 2})
    status, body = await chat(relay, key)
    assert status == 401 and body["error"]["code"] == "token_disabled"
    await api.ok("PUT", "/api/token/", {"id": tid, "status": 1})  # {id, status}: a toggle
    assert (await chat(relay, key))[0] == 200

    await api.ok("DELETE", f"/api/token/{tid}")
    status, body = await chat(relay, key)
    assert status == 401


async def test_full_key_shown_once_and_nothing_plain_in_pg_dump(env, relay, settings):
    me = await make_user(env, "keeper")
    texts: list[str] = []

    async def call(method, path, body=None, headers=None):
        resp = await relay.request(method, path, json=body, headers=headers or me.headers())
        texts.append(await resp.text())
        return await resp.json()

    created = (await call("POST", "/api/token/", {"name": "secret", "remain_quota": 100}))["data"]
    full = created["key"]
    raw = full[3:]
    tid = created["id"]
    await call("GET", "/api/token/")
    await call("GET", f"/api/token/{tid}")
    await call("GET", "/api/token/search?keyword=sec")
    found = await call("GET", f"/api/token/search?token={full}")
    assert [t["id"] for t in found["data"]["items"]] == [tid]
    await call("PUT", "/api/token/", {"id": tid, "name": "secret2"})
    refused = await call("POST", f"/api/token/{tid}/key")
    assert refused["success"] is False and "only once" in refused["message"]
    await call("GET", "/api/usage/token/", headers=bearer(full))
    await call("GET", "/api/log/token", headers=bearer(full))
    assert sum(t.count(raw) for t in texts) == 1

    first_access = me.access
    rotated = await call("GET", "/api/user/token")
    new_access = rotated["data"]
    assert isinstance(new_access, str) and len(new_access) >= 20
    # the old access token stops working at once
    old = await relay.get("/api/user/self", headers=me.headers())
    assert (await old.json())["message"] == "Unauthorized, invalid access token"
    me.access = new_access
    assert (await call("GET", "/api/user/self"))["success"] is True

    pg_dump = shutil.which("pg_dump") or "/usr/lib/postgresql/15/bin/pg_dump"
    proc = await asyncio.create_subprocess_exec(
        pg_dump,
        "--no-owner",
        "--inserts",
        settings.database_url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    dump = out.decode()
    assert "secret2" in dump  # the dump does hold the token row
    assert raw not in dump
    assert new_access not in dump
    assert first_access not in dump


async def test_validation_messages(env, relay):
    me = await make_user(env, "val")
    api = Api(relay, me)
    cases = [
        ({"name": "é" * 26}, "Token name is too long"),  # 52 bytes, 26 characters
        ({"name": "a", "remain_quota": -1}, "cannot be negative"),
        ({"name": "a", "remain_quota": "10"}, "remain_quota must be an integer"),
        ({"name": "a", "remain_quota": 10**18}, "exceeds valid range"),
        ({"name": "a", "unlimited_quota": "yes"}, "unlimited_quota must be true or false"),
        ({"name": "a", "expired_time": -5}, "expired_time"),
        ({"name": "a", "allow_ips": "10.0.0.1, 300.1.1.1"}, "'300.1.1.1'"),
        ({"name": "a", "allow_ips": "10.0.0.0/33"}, "'10.0.0.0/33'"),
        ({"name": "a", "models": "x" * 300}, "too long"),
        ({"name": "a", "models": [1, 2]}, "only strings"),
        ({"name": "a", "remain_credits": "lots"}, "remain_credits must be a number"),
        ({"name": "a", "group": "a,b"}, "single group"),
        ({"remain_quota": 1}, "name is required"),
    ]
    for body, expected in cases:
        msg = await api.refused("POST", "/api/token/", body)
        assert expected in msg, (body, msg)
    for raw in (b"", b"{", b"[1,2]", b'"x"', b"null"):
        resp = await relay.post(
            "/api/token/", data=raw, headers={**me.headers(), "Content-Type": "application/json"}
        )
        data = await resp.json()
        assert (
            resp.status == 200
            and data["success"] is False
            and "Invalid parameters" in (data["message"])
        )
    assert "Invalid ID" in await api.refused("GET", "/api/token/abc")
    assert "Invalid ID" in await api.refused("GET", "/api/token/99999999999999999999999")
    assert "p must be an integer" in await api.refused("GET", "/api/token/?p=x")
    # pagination clamps as New API
    page = await api.ok("GET", "/api/token/?p=-3&page_size=1000")
    assert (page["page"], page["page_size"]) == (1, 100)
    page = await api.ok("GET", "/api/token/?ps=7")
    assert page["page_size"] == 7
    page = await api.ok("GET", "/api/token/")
    assert page["page_size"] == 10


async def test_ownership_and_search(env, relay):
    alice = await make_user(env, "alice")
    bob = await make_user(env, "bob")
    a, b = Api(relay, alice), Api(relay, bob)
    mine = await a.ok("POST", "/api/token/", {"name": "prod-one"})
    await a.ok("POST", "/api/token/", {"name": "prod-two"})
    await a.ok("POST", "/api/token/", {"name": "dev_x"})
    tid = mine["id"]
    missing = await b.refused("GET", "/api/token/999")
    for method, path, body in (
        ("GET", f"/api/token/{tid}", None),
        ("PUT", "/api/token/", {"id": tid, "name": "stolen"}),
        ("PUT", "/api/token/?status_only=1", {"id": tid, "status": 2}),
        ("DELETE", f"/api/token/{tid}", None),
        ("POST", f"/api/token/{tid}/key", None),
    ):
        assert await b.refused(method, path, body) == missing
    assert (await b.ok("GET", "/api/token/"))["total"] == 0
    assert (await b.ok("POST", "/api/token/batch", {"ids": [tid]})) == 0
    assert (await a.ok("GET", f"/api/token/{tid}"))["name"] == "prod-one"

    names = lambda page: sorted(t["name"] for t in page["items"])  # noqa: E731
    assert names(await a.ok("GET", "/api/token/search?keyword=prod")) == ["prod-one", "prod-two"]
    assert names(await a.ok("GET", "/api/token/search?keyword=%25two")) == ["prod-two"]
    assert names(await a.ok("GET", "/api/token/search?keyword=dev_")) == ["dev_x"]
    assert names(await a.ok("GET", "/api/token/search?keyword=dev%5F")) == ["dev_x"]
    assert names(await a.ok("GET", "/api/token/search?keyword=_")) == []  # _ is literal
    assert "consecutive" in await a.refused("GET", "/api/token/search?keyword=a%25%25b")
    assert names(await b.ok("GET", "/api/token/search?keyword=prod")) == []


async def test_live_figures_usage_endpoints_and_logs(env, relay, mock_upstream):
    await setup_channel(env, relay, mock_upstream)
    me = await make_user(env, "spender")
    api = Api(relay, me)
    created = await api.ok(
        "POST", "/api/token/", {"name": "meter", "remain_quota": 100_000, "models": "gpt-4o-mini"}
    )
    key, tid = created["key"], created["id"]
    for _ in range(3):
        assert (await chat(relay, key))[0] == 200
    _, used = await ledger(env, me.id, tid)
    assert used > 0
    # reads are live from the ledger, before any flush
    view = await api.ok("GET", f"/api/token/{tid}")
    assert (view["used_quota"], view["remain_quota"]) == (used, 100_000 - used)
    listed = (await api.ok("GET", "/api/token/"))["items"][0]
    assert listed["used_quota"] == used
    me_view = await api.ok("GET", "/api/user/self")
    assert me_view["used_quota"] == used and me_view["quota"] == 10**12 - used
    assert me_view["role"] == 1 and me_view["group"] == "default"

    resp = await relay.get("/api/usage/token/", headers=bearer(key))
    usage = await resp.json()
    assert usage["code"] is True and usage["message"] == "ok"
    assert usage["data"]["total_granted"] == 100_000
    assert usage["data"]["total_used"] == used
    assert usage["data"]["total_available"] == 100_000 - used
    assert usage["data"]["model_limits"] == {"gpt-4o-mini": True}
    assert usage["data"]["expires_at"] == 0
    sub = await (await relay.get("/v1/dashboard/billing/subscription", headers=bearer(key))).json()
    assert sub["object"] == "billing_subscription" and sub["hard_limit_usd"] == 0.2
    use = await (await relay.get("/v1/dashboard/billing/usage", headers=bearer(key))).json()
    assert abs(use["total_usage"] - used / 500_000 * 100) < 1e-9
    resp = await relay.get("/api/usage/token/")
    assert resp.status == 401 and (await resp.json())["success"] is False
    resp = await relay.get("/api/usage/token/", headers=bearer("sk-" + "x" * 48))
    assert resp.status == 401
    resp = await relay.get("/v1/dashboard/billing/usage", headers=bearer("sk-nope"))
    assert resp.status == 401 and "error" in await resp.json()

    assert await flush_all(env) == 3
    logs = await api.ok("GET", "/api/log/self?p=1&page_size=2")
    assert logs["total"] == 3 and [r["id"] for r in logs["items"]] == [1, 2]
    row = logs["items"][0]
    assert row["token_name"] == "meter" and row["model_name"] == "gpt-4o-mini"
    assert (row["prompt_tokens"], row["completion_tokens"]) == (10, 20)
    assert row["type"] == 2 and row["is_stream"] is False and row["channel_name"] == ""
    assert row["use_time"] == row["use_time_ms"] // 1000
    assert (await api.ok("GET", "/api/log/self?page_size=2&p=2"))["items"][0]["id"] == 3
    assert (await api.ok("GET", "/api/log/self?token_name=other"))["total"] == 0
    assert (await api.ok("GET", "/api/log/self?model_name=gpt-4o%25"))["total"] == 3
    future = int(time.time()) + 100
    assert (await api.ok("GET", f"/api/log/self?start_timestamp={future}"))["total"] == 0
    stat = await api.ok("GET", "/api/log/self/stat")
    assert stat == {"quota": used, "rpm": 3, "tpm": 90}
    detail = await api.ok("GET", f"/api/token/{tid}")
    assert len(detail["recent_activity"]) == 3
    by_key = await (await relay.get("/api/log/token", headers=bearer(key))).json()
    assert by_key["success"] is True and len(by_key["data"]) == 3

    # another user sees none of it
    other = Api(relay, await make_user(env, "other"))
    assert (await other.ok("GET", "/api/log/self"))["total"] == 0
    assert (await other.ok("GET", "/api/log/self/stat"))["quota"] == 0
