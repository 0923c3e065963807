"""Issue 12 item 1: login, logout, registration, session refresh, self-service profile and
password change, against the real PostgreSQL and Redis, answered as New API's
``controller/user.go`` answers (NA-0718)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from relaygate.admin import ROLE_ADMIN, ROLE_ROOT, ROLE_USER, passwords
from relaygate.api.account import (
    MSG_INVALID_PARAMS,
    MSG_LOGIN_FAILED,
    MSG_ORIGINAL_PASSWORD,
    MSG_REGISTER_DISABLED,
    MSG_TOO_MANY_ATTEMPTS,
    MSG_USER_EXISTS,
)
from relaygate.api.auth import MSG_NO_TOKEN, MSG_NO_USER_HEADER
from relaygate.app import init_app
from relaygate.sessions import COOKIE_NAME

PASSWORD = "correct-horse-1"


async def _user(env: Any, name: str, role: int = ROLE_USER, password: str = PASSWORD) -> int:
    uid, _access = await env.admin.create_user(name, role, 10**9, password=password)
    return int(uid)


async def login(client: TestClient, username: str, password: str) -> tuple[int, Any, str]:
    """(status, body, session cookie value or "") — the jar is cleared so that every later
    call states its credentials explicitly."""
    resp = await client.post("/api/user/login", json={"username": username, "password": password})
    body = await resp.json()
    cookie = resp.cookies.get(COOKIE_NAME)
    client.session.cookie_jar.clear()
    return resp.status, body, cookie.value if cookie is not None else ""


def as_session(cookie: str, uid: int) -> dict[str, str]:
    return {"Cookie": f"{COOKIE_NAME}={cookie}", "New-Api-User": str(uid)}


async def test_login_answers_new_apis_shape_and_sets_a_safe_cookie(env, relay):
    uid = await _user(env, "alice")
    resp = await relay.post("/api/user/login", json={"username": "alice", "password": PASSWORD})
    assert resp.status == 200
    body = await resp.json()
    assert body == {
        "success": True,
        "message": "",
        "data": {
            "id": uid,
            "username": "alice",
            "display_name": "alice",  # relaygate defaults it to the username
            "role": ROLE_USER,
            "status": 1,
            "group": "default",
        },
    }
    morsel = resp.cookies[COOKIE_NAME]
    assert morsel["httponly"] and morsel["samesite"] == "Lax" and morsel["path"] == "/"
    assert not morsel["secure"]  # plain HTTP here; Secure when served over TLS
    assert int(morsel["max-age"]) == env.settings.session_ttl
    relay.session.cookie_jar.clear()
    # the session authenticates every user route, New-Api-User checked as New API does
    me = await relay.get("/api/user/self", headers=as_session(morsel.value, uid))
    assert (await me.json())["data"]["username"] == "alice"


async def test_session_cookie_needs_new_api_user(env, relay):
    uid = await _user(env, "alice")
    _, _, cookie = await login(relay, "alice", PASSWORD)
    resp = await relay.get("/api/user/self", headers={"Cookie": f"{COOKIE_NAME}={cookie}"})
    assert resp.status == 401
    assert (await resp.json())["message"] == MSG_NO_USER_HEADER
    other = await relay.get("/api/user/self", headers=as_session(cookie, uid + 1))
    assert other.status == 401


@pytest.mark.parametrize(
    "case",
    ["wrong_password", "unknown_user", "disabled_user", "no_password_set"],
)
async def test_login_failures_get_new_apis_one_answer(env, relay, case):
    uid = await _user(env, "alice")
    await env.admin.create_user("nopass", ROLE_USER, 0)
    username, password = "alice", PASSWORD
    if case == "wrong_password":
        password = "wrong-password-1"
    elif case == "unknown_user":
        username = "nobody"
    elif case == "disabled_user":
        await env.admin.set_user_status(uid, 2)
    else:
        username = "nopass"
    status, body, cookie = await login(relay, username, password)
    assert status == 200
    assert body == {"success": False, "message": MSG_LOGIN_FAILED}
    assert cookie == ""


@pytest.mark.parametrize(
    "payload",
    [{}, {"username": "alice"}, {"username": "", "password": "x"}, {"username": 1, "password": 2}],
)
async def test_login_with_missing_fields_is_invalid_params(env, relay, payload):
    resp = await relay.post("/api/user/login", json=payload)
    assert (resp.status, await resp.json()) == (
        200,
        {"success": False, "message": MSG_INVALID_PARAMS},
    )
    bad_json = await relay.post("/api/user/login", data=b"{nope")
    assert (await bad_json.json())["message"] == MSG_INVALID_PARAMS


async def _client(settings, **changes):
    client = TestClient(TestServer(init_app(settings.replace(**changes)), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def strict_relay(settings):
    """The app with a small login budget: 3 attempts per window."""
    client = await _client(settings, login_attempts=3)
    yield client
    await client.close()


@pytest.fixture
async def open_relay(settings):
    """The app with registration on."""
    client = await _client(settings, register_enabled=True)
    yield client
    await client.close()


async def test_too_many_attempts_per_username_and_per_address(env, strict_relay):
    await _user(env, "alice")
    for _ in range(3):
        status, body, _ = await login(strict_relay, "alice", "wrong-password-1")
        assert body["message"] == MSG_LOGIN_FAILED
    # the fourth attempt is refused before the password is looked at, even the right one
    status, body, cookie = await login(strict_relay, "alice", PASSWORD)
    assert (status, body, cookie) == (429, {"success": False, "message": MSG_TOO_MANY_ATTEMPTS}, "")
    # the address is over its budget too (shared by login, registration and password
    # checks, as New API's CriticalRateLimit): another username from it is refused as well
    status, body, _ = await login(strict_relay, "bob", PASSWORD)
    assert status == 429 and body["success"] is False


async def test_logout_revokes_the_session_server_side(env, relay):
    uid = await _user(env, "alice")
    _, _, cookie = await login(relay, "alice", PASSWORD)
    headers = as_session(cookie, uid)
    assert (await (await relay.get("/api/user/self", headers=headers)).json())["success"]
    out = await relay.get("/api/user/logout", headers=headers)
    assert (out.status, await out.json()) == (200, {"success": True, "message": ""})
    assert out.cookies[COOKIE_NAME].value == ""  # the browser drops it
    # a copy of the cookie kept by the client is refused from now on
    again = await relay.get("/api/user/self", headers=headers)
    assert again.status == 401
    assert (await again.json()) == {"success": False, "message": MSG_NO_TOKEN}
    # logout without a session succeeds, as in New API
    relay.session.cookie_jar.clear()
    bare = await relay.get("/api/user/logout")
    assert (await bare.json())["success"] is True


async def test_a_disabled_user_s_session_stops_working(env, relay):
    uid = await _user(env, "alice")
    _, _, cookie = await login(relay, "alice", PASSWORD)
    await env.admin.set_user_status(uid, 2)
    resp = await relay.get("/api/user/self", headers=as_session(cookie, uid))
    assert (await resp.json()) == {"success": False, "message": "User has been banned"}


async def test_password_hashing_runs_off_the_event_loop_thread(env, relay, monkeypatch):
    threads: list[int] = []
    real = passwords._scrypt

    def spy(password: str, salt: bytes) -> bytes:
        threads.append(threading.get_ident())
        return real(password, salt)

    monkeypatch.setattr(passwords, "_scrypt", spy)
    loop_thread = threading.get_ident()  # the test and the in-process server share the loop
    uid = await _user(env, "alice")  # hash at creation
    await login(relay, "alice", PASSWORD)  # verify at login
    await login(relay, "nobody", PASSWORD)  # the unknown user's dummy verify
    _, _, cookie = await login(relay, "alice", PASSWORD)
    await relay.put(
        "/api/user/self",
        json={"password": "another-pass-2", "original_password": PASSWORD},
        headers=as_session(cookie, uid),
    )  # verify the old one, hash the new one
    assert len(threads) >= 6
    assert loop_thread not in threads


async def test_register_is_off_by_default(env, relay):
    resp = await relay.post("/api/user/register", json={"username": "eve", "password": PASSWORD})
    assert (await resp.json()) == {"success": False, "message": MSG_REGISTER_DISABLED}


async def test_register_when_enabled_then_login(env, open_relay):
    resp = await open_relay.post(
        "/api/user/register", json={"username": "eve", "password": PASSWORD, "password2": PASSWORD}
    )
    assert (await resp.json()) == {"success": True, "message": ""}
    again = await open_relay.post(
        "/api/user/register", json={"username": "eve", "password": PASSWORD}
    )
    assert (await again.json()) == {"success": False, "message": MSG_USER_EXISTS}
    short = await open_relay.post(
        "/api/user/register", json={"username": "mallory", "password": "short"}
    )
    assert (await short.json())["success"] is False
    _, body, cookie = await login(open_relay, "eve", PASSWORD)
    assert body["success"] and body["data"]["role"] == ROLE_USER and cookie
    assert body["data"]["display_name"] == "eve"


async def test_refresh_swaps_the_session(env, relay):
    uid = await _user(env, "alice")
    _, _, cookie = await login(relay, "alice", PASSWORD)
    resp = await relay.post("/api/user/auth/refresh", headers=as_session(cookie, uid))
    body = await resp.json()
    assert body["success"] and body["data"]["id"] == uid
    fresh = resp.cookies[COOKIE_NAME].value
    relay.session.cookie_jar.clear()
    assert fresh and fresh != cookie
    old = await relay.get("/api/user/self", headers=as_session(cookie, uid))
    assert old.status == 401
    new = await relay.get("/api/user/self", headers=as_session(fresh, uid))
    assert (await new.json())["success"] is True


async def test_profile_and_password_change(env, relay):
    uid = await _user(env, "alice")
    _, _, cookie = await login(relay, "alice", PASSWORD)
    _, _, other_cookie = await login(relay, "alice", PASSWORD)  # a second browser
    headers = as_session(cookie, uid)
    resp = await relay.put("/api/user/self", json={"display_name": "Alice A."}, headers=headers)
    assert (await resp.json()) == {"success": True, "message": ""}
    me = await (await relay.get("/api/user/self", headers=headers)).json()
    assert me["data"]["display_name"] == "Alice A."
    wrong = await relay.put(
        "/api/user/self",
        json={"password": "another-pass-2", "original_password": "nope-nope-1"},
        headers=headers,
    )
    assert (await wrong.json()) == {"success": False, "message": MSG_ORIGINAL_PASSWORD}
    changed = await relay.put(
        "/api/user/self",
        json={"password": "another-pass-2", "original_password": PASSWORD},
        headers=headers,
    )
    assert (await changed.json())["success"] is True
    # this session stays, the other browser's ends, the old password no longer logs in
    assert (await relay.get("/api/user/self", headers=headers)).status == 200
    assert (await relay.get("/api/user/self", headers=as_session(other_cookie, uid))).status == 401
    assert (await login(relay, "alice", PASSWORD))[1]["message"] == MSG_LOGIN_FAILED
    assert (await login(relay, "alice", "another-pass-2"))[1]["success"] is True


async def test_access_token_from_the_session_is_shown_once_and_works(env, relay):
    """The seeds' flow: log in, Personal Settings -> System Access Token -> generate."""
    uid = await _user(env, "root", ROLE_ROOT)
    _, _, cookie = await login(relay, "root", PASSWORD)
    resp = await relay.get("/api/user/token", headers=as_session(cookie, uid))
    access = (await resp.json())["data"]
    assert isinstance(access, str) and len(access) >= 28
    headers = {"Authorization": f"Bearer {access}", "New-Api-User": str(uid)}
    users = await relay.get("/api/user/", headers=headers)
    assert (await users.json())["success"] is True
    # admin routes work from the session too
    admin_id = await _user(env, "admin", ROLE_ADMIN)
    listed = await relay.get(f"/api/user/{admin_id}", headers=as_session(cookie, uid))
    assert (await listed.json())["data"]["username"] == "admin"


async def test_first_root_from_the_cli_can_log_in(env, relay, monkeypatch):
    """``relaygate admin create-user --role root --password-stdin`` makes the first root
    (the password is read from stdin, never from the command line)."""
    import argparse
    import io

    from relaygate.cli.admin import create_user

    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    args = argparse.Namespace(
        username="boss", role="root", quota=0, group="default", password_stdin=True
    )
    made = await create_user(env.admin, args)
    _, body, cookie = await login(relay, "boss", PASSWORD)
    assert body["data"]["id"] == made["id"] and body["data"]["role"] == ROLE_ROOT and cookie
