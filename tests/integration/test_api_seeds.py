"""Done-when 1: the curl examples of the product docs (../shared/seeds/002_*, 004_*) run
verbatim, with only the base URL and the access token substituted (no New-Api-User header:
the seeds send none, and user-level routes accept that)."""

from __future__ import annotations

import pathlib
import re
import shlex
from typing import Any

import aiohttp
import orjson
import pytest

from .api_fixtures import make_user

# Copies of ../shared/seeds/002_* and 004_* (the product documents), so a clean clone has them.
SEEDS = pathlib.Path(__file__).resolve().parents[1] / "fixtures" / "seeds"


def seed(prefix: str) -> str:
    found = sorted(SEEDS.glob(f"{prefix}_*.txt"))
    if not found:
        pytest.skip(f"seed {prefix} not available at {SEEDS}")
    return found[0].read_text()


def curl_blocks(text: str) -> list[str]:
    """The text of each curl command: it goes on while a line ends with a backslash or a
    single-quoted argument (the JSON body) is still open."""
    blocks, current = [], None
    for line in text.splitlines():
        if current is None:
            if line.lstrip().startswith("curl "):
                current = [line]
            else:
                continue
        else:
            current.append(line)
        joined = "\n".join(current)
        if not line.rstrip().endswith("\\") and joined.count("'") % 2 == 0:
            blocks.append(joined)
            current = None
    return blocks


def parse_curls(text: str) -> list[dict[str, Any]]:
    """Every curl command of a seed: method, URL, headers, JSON body."""
    out = []
    for block in curl_blocks(text):
        argv = shlex.split(block.replace("\\\n", " "))
        method, url, headers, body = "GET", "", {}, None
        i = 1
        while i < len(argv):
            arg = argv[i]
            if arg == "-X":
                method = argv[i + 1]
                i += 2
            elif arg == "-H":
                name, _, value = argv[i + 1].partition(":")
                headers[name.strip()] = value.strip()
                i += 2
            elif arg in ("-d", "--data"):
                body = orjson.loads(argv[i + 1])
                i += 2
            else:
                url = arg
                i += 1
        out.append({"method": method, "url": url, "headers": headers, "body": body})
    return out


async def replay(
    session: aiohttp.ClientSession, base: str, access: str, uid: int, ex: dict[str, Any]
) -> tuple[int, Any]:
    url = ex["url"].replace("https://YOUR_NEWAPI_BASE_URL", base)
    headers = {k: v.replace("your-access-token", access) for k, v in ex["headers"].items()}
    kwargs: dict[str, Any] = {"headers": headers}
    if ex["body"] is not None:
        kwargs["data"] = orjson.dumps(ex["body"])
    async with session.request(ex["method"], url, **kwargs) as resp:
        return resp.status, await resp.json()


async def test_seed_002_token_examples_replay(env, relay):
    examples = parse_curls(seed("002"))
    assert [(e["method"], e["url"].split("YOUR_NEWAPI_BASE_URL")[1]) for e in examples] == [
        ("GET", "/api/token/?p=1&page_size=20"),
        ("POST", "/api/token/"),
        ("GET", "/api/token/42"),
        ("PUT", "/api/token/"),
        ("DELETE", "/api/token/42"),
    ]
    me = await make_user(env, "seed")
    for name in ("older", "newer"):
        await env.admin.create_token(me.id, name, remain_quota=1000)
    async with env.pool.acquire() as conn:  # so that the create example makes token 42
        await conn.execute("SELECT setval('tokens_id_seq', 41)")
    base = str(relay.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as session:
        results = [await replay(session, base, me.access, me.id, ex) for ex in examples]

    (s1, listed), (s2, created), (s3, got), (s4, updated), (s5, deleted) = results
    assert {s1, s2, s3, s4, s5} == {200}
    assert listed["success"] is True
    page = listed["data"]
    assert (page["page"], page["page_size"], page["total"]) == (1, 20, 2)
    assert [t["name"] for t in page["items"]] == ["newer", "older"]
    assert all(re.fullmatch(r"[0-9A-Za-z]{4}\*{10}[0-9A-Za-z]{4}", t["key"]) for t in page["items"])

    assert created["success"] is True, created
    token = created["data"]
    assert token["id"] == 42
    assert re.fullmatch(r"[0-9A-Za-z]{48}", token["key"])
    assert token["name"] == "production-app"
    assert token["remain_quota"] == 500000 and token["used_quota"] == 0
    assert token["expired_time"] == -1 and token["unlimited_quota"] is False
    assert token["model_limits_enabled"] is True
    assert token["model_limits"] == "gpt-4o,gpt-4o-mini"
    assert token["status"] == 1

    assert got["success"] is True
    assert got["data"]["id"] == 42 and got["data"]["name"] == "production-app"
    assert got["data"]["key"] == token["key"][:4] + "*" * 10 + token["key"][-4:]
    assert got["data"]["recent_activity"] == []

    assert updated["success"] is True, updated
    assert updated["data"]["name"] == "production-app-v2"
    assert updated["data"]["unlimited_quota"] is True
    # fields the example left out keep their values
    assert updated["data"]["remain_quota"] == 500000
    assert updated["data"]["model_limits"] == "gpt-4o,gpt-4o-mini"

    assert deleted == {"success": True, "message": ""}
    status, after = await relay.get("/api/token/42", headers=me.headers()), None
    after = await status.json()
    assert after["success"] is False


async def test_seed_004_create_token_fields(env, relay):
    """Seed 004 documents the create body by field examples (it has no curl line); send
    exactly those examples and check the documented conversions."""
    text = seed("004")
    for example in (
        '"My New Token"',
        "1738483200",
        "500000",
        "200",
        "100",
        "1000",
        '"gpt-4o,gpt-4o-mini,claude-3-5-sonnet"',
        '"default"',
    ):
        assert example in text
    me = await make_user(env, "seed4")
    body = {
        "name": "My New Token",
        "expired_time": 1738483200,
        "remain_quota": 500000,
        "remain_credits": 200,
        "daily_credits": 100,
        "monthly_credits": 1000,
        "unlimited_quota": False,
        "model_limits_enabled": False,
        "model_limits": "gpt-4o,gpt-4o-mini,claude-3-5-sonnet",
        "group": "default",
    }
    resp = await relay.post("/api/token/", json=body, headers=me.headers())
    assert resp.status == 200
    data = await resp.json()
    assert data["success"] is True, data
    token = data["data"]
    assert re.fullmatch(r"[0-9A-Za-z]{48}", token["key"])  # 48 random chars; add sk- to use
    assert token["remain_quota"] == 500000  # 200 credits = $1
    assert token["daily_quota"] == 250000  # 100 credits = $0.5
    assert token["monthly_quota"] == 2500000  # 1000 credits = $5
    assert token["expired_time"] == 1738483200
    assert token["status"] == 3  # that example date is in the past: expired
    assert token["model_limits_enabled"] is False
    assert token["model_limits"] == "gpt-4o,gpt-4o-mini,claude-3-5-sonnet"
    assert token["group"] == "default"

    # credits override quota when both are given
    body2 = {"name": "c", "remain_quota": 7, "remain_credits": 1}
    data2 = await (await relay.post("/api/token/", json=body2, headers=me.headers())).json()
    assert data2["data"]["remain_quota"] == 2500

    # the documented error: a name over 50 characters
    long_name = {"name": "x" * 51, "expired_time": -1}
    resp = await relay.post("/api/token/", json=long_name, headers=me.headers())
    assert resp.status == 200
    err = await resp.json()
    assert err["success"] is False and "Token name is too long" in err["message"]
