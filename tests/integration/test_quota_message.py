"""A quota 429 says how much the request needed and how much was left (issue 14): in the
OpenAI error message, status and code unchanged. "Needed" is exact: the same request is
admitted once that much is there."""

from __future__ import annotations

import re

import pytest

from relaygate.relay.accounting import least_needed

from .helpers import CHAT, bearer, ledger, refresh

pytestmark = pytest.mark.integration

NEEDS = re.compile(r"needs at least (\d+) quota \(\$[\d.]+\), (\d+) left \(\$[\d.]+\)")


@pytest.fixture
async def world(env, mock_upstream, relay):
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", mock_upstream, "upstream-secret", "gpt-4o-mini")
    await refresh(relay)
    return uid


async def _post(relay, key: str) -> tuple[int, dict]:
    resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(key))
    return resp.status, await resp.json()


async def test_token_quota_429_names_needed_and_left(world, env, relay):
    tok = await env.admin.create_token(world, "small", remain_quota=3)
    status, body = await _post(relay, f"sk-{tok.key}")
    assert status == 429 and body["error"]["code"] == "insufficient_quota"
    assert body["error"]["type"] == "insufficient_quota"
    found = NEEDS.search(body["error"]["message"])
    assert found, body
    needed, left = int(found[1]), int(found[2])
    assert left == 3 and needed > left
    assert (await ledger(env, world, tok.id))[1] == 0  # nothing charged
    # One unit short of "needed" is still refused; exactly "needed" is admitted.
    await env.admin.update_token(tok.id, {"remain_quota": needed - 1})
    status, body = await _post(relay, f"sk-{tok.key}")
    assert status == 429 and NEEDS.search(body["error"]["message"])[2] == str(needed - 1)
    await env.admin.update_token(tok.id, {"remain_quota": needed})
    assert (await _post(relay, f"sk-{tok.key}"))[0] == 200


async def test_user_quota_429_names_needed_and_left(env, mock_upstream, relay):
    uid, _ = await env.admin.create_user("poor", quota=2)
    await env.admin.create_channel("mock", mock_upstream, "upstream-secret", "gpt-4o-mini")
    await refresh(relay)
    tok = await env.admin.create_token(uid, "u", unlimited=True)
    status, body = await _post(relay, f"sk-{tok.key}")
    assert status == 429 and body["error"]["code"] == "insufficient_user_quota"
    found = NEEDS.search(body["error"]["message"])
    assert found and int(found[2]) == 2 and int(found[1]) > 2, body


def test_least_needed_follows_the_reserve_rule():
    assert least_needed(100, 0, 50, clamp=True) == 100  # per-call price: the base
    assert least_needed(100, 1_500_000, 50, clamp=True) == 102  # base + one token, rounded up
    assert least_needed(100, 1_500_000, 50, clamp=False) == 175  # base + the whole bound
