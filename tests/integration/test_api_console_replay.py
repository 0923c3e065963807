"""Issue 12 "Done when": replay every ``/api/`` call New API's web console makes
(tests/fixtures/newapi_console_calls.json, from NA-0718's classic console) against the real
app, PostgreSQL and Redis: method, path with and without the trailing slash, query, body
and ``New-Api-User``, once as a session-cookie client (logged in through
``/api/user/login``) and once as an access-token client (the token generated from that
session). Every answer must be New API's JSON envelope (never a 404/405 or plain text),
served calls must succeed with the fields the console reads, and calls relaygate does not
serve must say so (``Not supported by relaygate: ...``, listed in docs/api.md)."""

from __future__ import annotations

import json
import pathlib
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from relaygate.admin import ROLE_ROOT, ROLE_USER
from relaygate.api.slashes import toggled
from relaygate.api.tokens import MSG_KEY_SHOWN_ONCE
from relaygate.api.unsupported import PREFIX, UNSUPPORTED
from relaygate.app import init_app
from relaygate.sessions import COOKIE_NAME

FIXTURE = pathlib.Path(__file__).parents[1] / "fixtures" / "newapi_console_calls.json"
CALLS: list[dict[str, Any]] = json.loads(FIXTURE.read_text())["calls"]
PASSWORD = "replay-pass-1"
MISSING = "999999"
# served, but refused by design or by the state of this test instance (docs/api.md)
REFUSED_BY_DESIGN = {
    ("POST", "/api/token/{token_id}/key"),  # keys are stored hashed: shown once, at creation
    ("POST", "/api/user/register"),  # registration is off by default
    ("GET", "/api/channel/test/{channel_id}"),  # the replay's channel has no live upstream
    ("GET", "/api/channel/test"),  # a second run while the first one is still going
    ("POST", "/api/user/"),  # the slashless replay reuses the name
    ("POST", "/api/token/batch"),  # deletes only missing ids here
}
TYPES = {"list": list, "object": dict, "string": str, "int": int}


@pytest.fixture
async def replay_relay(settings: Any) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    """No login or failed-auth limits: the replay logs in and authenticates hundreds of
    times from one address."""
    changed = settings.replace(login_attempts=0, auth_failures_per_minute=0)
    client = TestClient(TestServer(init_app(changed), host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


class Replayer:
    """Fills the fixture's placeholders and checks each answer."""

    def __init__(self, client: TestClient, ids: dict[str, str], headers: dict[str, str]) -> None:  # type: ignore[type-arg]
        self.client = client
        self.ids = ids
        self.headers = headers
        self.counter = 0
        self.problems: list[str] = []
        self.unsupported: set[tuple[str, str]] = set()
        self.succeeded = 0

    def fill(self, text: str, method: str) -> str:
        now = int(time.time())
        values = {
            **self.ids,
            "password": PASSWORD,
            "now": str(now),
            "hour_ago": str(now - 3600),
            "unique": f"replay{self.counter}",
        }
        if method == "DELETE":  # never delete the ids the later calls use
            values |= {k: MISSING for k in ("token_id", "channel_id", "user_id")}
        for name, value in values.items():
            text = text.replace("{" + name + "}", value)
        return text

    def body_of(self, call: dict[str, Any]) -> Any:
        if "body" not in call:
            return None
        raw = json.dumps(call["body"])
        filled = json.loads(self.fill(raw, call["method"]))
        for key in ("id", "channel_id", "token_id", "user_id"):
            if isinstance(filled.get(key), str) and filled[key].isdigit():
                filled[key] = int(filled[key])
        if isinstance(filled.get("ids"), list):
            filled["ids"] = [int(i) if str(i).isdigit() else i for i in filled["ids"]]
        return filled

    async def run(self, call: dict[str, Any], slash_variant: bool) -> None:
        self.counter += 1
        method, template = call["method"], call["path"]
        path = self.fill(template, method)
        if slash_variant:
            path = toggled(path)
        url = path + ("?" + self.fill(call["query"], method) if call["query"] else "")
        where = f"{method} {url} ({call['source']})"
        resp = await self.client.request(
            method, url, json=self.body_of(call), headers=self.headers, allow_redirects=False
        )
        if resp.status != 200:
            self.problems.append(f"{where}: HTTP {resp.status} {await resp.text()}")
            return
        if resp.content_type != "application/json":
            self.problems.append(f"{where}: {resp.content_type}")
            return
        body = await resp.json()
        if not isinstance(body.get("success"), bool) or not isinstance(body.get("message"), str):
            self.problems.append(f"{where}: not New API's envelope: {str(body)[:200]}")
            return
        rotated = method == "GET" and template == "/api/user/token" and body["success"]
        if rotated and "Authorization" in self.headers:  # keep using the newest token
            self.headers["Authorization"] = f"Bearer {body['data']}"
        self._check(call, where, body)

    def _check(self, call: dict[str, Any], where: str, body: dict[str, Any]) -> None:
        key = (call["method"], call["path"])
        message = body["message"]
        if not body["success"] and message.startswith(PREFIX):
            self.unsupported.add((call["method"], where.split()[1].split("?")[0]))
            return
        if not body["success"]:
            if key in REFUSED_BY_DESIGN or message == MSG_KEY_SHOWN_ONCE:
                return
            if call["method"] == "DELETE" and MISSING in where and "not" in message:
                return  # reached the handler: the missing id is not found
            self.problems.append(f"{where}: success false: {message}")
            return
        self.succeeded += 1
        data = body.get("data")
        if "data_type" in call and not isinstance(data, TYPES[call["data_type"]]):
            self.problems.append(f"{where}: data is {type(data).__name__}, not {call['data_type']}")
        missing = [f for f in call.get("fields", []) if not isinstance(data, dict) or f not in data]
        if missing:
            self.problems.append(f"{where}: data lacks {missing}")


async def _instance(env: Any, client: TestClient) -> tuple[dict[str, str], str, int]:  # type: ignore[type-arg]
    """Root (with a password), another user, a channel and a token of root's."""
    root_id, _ = await env.admin.create_user("root", ROLE_ROOT, 10**12, password=PASSWORD)
    other_id, _ = await env.admin.create_user("other", ROLE_USER, 10**9)
    channel_id = await env.admin.create_channel(
        "replay", "http://127.0.0.1:9", "sk-upstream", "gpt-4o-mini"
    )
    resp = await client.post("/api/user/login", json={"username": "root", "password": PASSWORD})
    assert (await resp.json())["success"], "login"
    cookie = resp.cookies[COOKIE_NAME].value
    client.session.cookie_jar.clear()
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}", "New-Api-User": str(root_id)}
    token = await client.post(
        "/api/token/", json={"name": "replay", "expired_time": -1}, headers=headers
    )
    token_id = (await token.json())["data"]["id"]
    ids = {
        "token_id": str(token_id),
        "channel_id": str(channel_id if isinstance(channel_id, int) else channel_id[0]),
        "user_id": str(root_id),
        "other_id": str(other_id),
    }
    return ids, cookie, int(root_id)


def _ordered() -> list[dict[str, Any]]:
    """Logout last: it ends the session the session client replays with."""
    return sorted(CALLS, key=lambda c: c["path"] == "/api/user/logout")


async def _replay(replayer: Replayer) -> None:
    for call in _ordered():
        await replayer.run(call, slash_variant=False)
        await replayer.run(call, slash_variant=True)


async def test_console_replay_as_session_and_as_access_token_client(env, replay_relay):
    client = replay_relay
    ids, cookie, root_id = await _instance(env, client)
    session = Replayer(
        client, ids, {"Cookie": f"{COOKIE_NAME}={cookie}", "New-Api-User": str(root_id)}
    )
    await _replay(session)
    # the access token comes from a session: the seeds' "System Access Token" flow (a new
    # login, as the replay ended with a logout)
    resp = await client.post("/api/user/login", json={"username": "root", "password": PASSWORD})
    fresh = {
        "Cookie": f"{COOKIE_NAME}={resp.cookies[COOKIE_NAME].value}",
        "New-Api-User": str(root_id),
    }
    client.session.cookie_jar.clear()
    access = (await (await client.get("/api/user/token", headers=fresh)).json())["data"]
    tokens = Replayer(
        client, ids, {"Authorization": f"Bearer {access}", "New-Api-User": str(root_id)}
    )
    await _replay(tokens)
    assert not session.problems, "\n".join(session.problems)
    assert not tokens.problems, "\n".join(tokens.problems)
    # every "not supported" answer comes from a route in the documented list
    patterns = [
        (m, re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(p.rstrip("/"))) + "/?$"))
        for m, p, _, _ in UNSUPPORTED
    ]
    for replayer in (session, tokens):
        for method, path in replayer.unsupported:
            assert any(m == method and rx.match(path) for m, rx in patterns), (method, path)
    assert session.unsupported and tokens.unsupported
    # (~50 served calls x 2 slash forms, a few refused by design)
    assert session.succeeded >= 80 and tokens.succeeded >= 80, (
        session.succeeded,
        tokens.succeeded,
    )
    assert len(CALLS) >= 200
