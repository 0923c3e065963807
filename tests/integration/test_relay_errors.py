"""Every refusal of the relay: status code, OpenAI error shape, no key in the body, no charge."""

from __future__ import annotations

import time

import pytest

from .helpers import CHAT, bearer, ledger, refresh


def _shape(body: dict, code: str | None = None) -> dict:
    assert set(body) == {"error"}
    err = body["error"]
    assert set(err) >= {"message", "type", "code"}
    assert isinstance(err["message"], str) and err["message"]
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.fixture
async def world(env, mock_upstream, relay):
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", mock_upstream, "upstream-secret", "gpt-4o-mini,gpt-4o")
    await refresh(relay)
    return uid


async def _post(relay, key: str | None, body=CHAT, raw: bytes | None = None, headers=None):
    h = dict(headers or {})
    if key is not None:
        h.update(bearer(key))
    if raw is not None:
        resp = await relay.post("/v1/chat/completions", data=raw, headers=h)
    else:
        resp = await relay.post("/v1/chat/completions", json=body, headers=h)
    text = await resp.text()
    if key:
        assert key.removeprefix("sk-") not in text, "a key leaked into an error body"
    return resp.status, await resp.json()


async def test_missing_and_unknown_key_401(world, relay):
    status, body = await _post(relay, None)
    assert status == 401
    _shape(body, "missing_api_key")
    status, body = await _post(relay, "sk-" + "x" * 48)
    assert status == 401
    assert _shape(body, "invalid_api_key")["type"] == "invalid_request_error"


async def test_key_sources_claude_and_gemini_headers(world, env, relay):
    tok = await env.admin.create_token(world, "t", remain_quota=10**6)
    for headers in ({"x-api-key": f"sk-{tok.key}"}, {"x-goog-api-key": tok.key}):
        resp = await relay.post("/v1/chat/completions", json=CHAT, headers=headers)
        assert resp.status == 200
    resp = await relay.post(f"/v1/chat/completions?key={tok.key}", json=CHAT)
    assert resp.status == 200


async def test_disabled_expired_deleted_401(world, env, relay):
    disabled = await env.admin.create_token(world, "d", remain_quota=10**6)
    await env.admin.update_token(disabled.id, {"status": 2})
    status, body = await _post(relay, f"sk-{disabled.key}")
    assert status == 401
    _shape(body, "token_disabled")

    expired = await env.admin.create_token(
        world, "e", remain_quota=10**6, expired_time=int(time.time()) - 10
    )
    status, body = await _post(relay, f"sk-{expired.key}")
    assert status == 401
    _shape(body, "token_expired")

    deleted = await env.admin.create_token(world, "x", remain_quota=10**6)
    assert (await _post(relay, f"sk-{deleted.key}"))[0] == 200
    await env.admin.delete_token(deleted.id)
    status, body = await _post(relay, f"sk-{deleted.key}")
    assert status == 401
    _shape(body, "invalid_api_key")


async def test_ip_model_and_user_disabled_403(world, env, relay):
    ip_tok = await env.admin.create_token(world, "ip", remain_quota=10**6, allow_ips="10.0.0.0/8")
    status, body = await _post(relay, f"sk-{ip_tok.key}")
    assert status == 403
    _shape(body, "access_denied")
    ok_ip = await env.admin.create_token(
        world, "ip2", remain_quota=10**6, allow_ips="10.0.0.0/8\n127.0.0.1"
    )
    assert (await _post(relay, f"sk-{ok_ip.key}"))[0] == 200

    model_tok = await env.admin.create_token(world, "m", remain_quota=10**6, models=["gpt-4o"])
    status, body = await _post(relay, f"sk-{model_tok.key}")
    assert status == 403
    _shape(body, "model_not_allowed")
    assert (await _post(relay, f"sk-{model_tok.key}", {**CHAT, "model": "gpt-4o"}))[0] == 200

    user2, _ = await env.admin.create_user("bob", quota=10**9)
    bob_tok = await env.admin.create_token(user2, "b", remain_quota=10**6)
    await env.admin.set_user_status(user2, 2)
    status, body = await _post(relay, f"sk-{bob_tok.key}")
    assert status == 403
    _shape(body, "user_disabled")


async def test_quota_daily_monthly_exhausted_429(world, env, relay):
    empty = await env.admin.create_token(world, "q", remain_quota=0)
    status, body = await _post(relay, f"sk-{empty.key}")
    assert status == 429
    assert _shape(body, "insufficient_quota")["type"] == "insufficient_quota"

    daily = await env.admin.create_token(world, "d", remain_quota=10**9, daily_quota=1)
    status, body = await _post(relay, f"sk-{daily.key}")
    assert status == 429
    assert _shape(body, "daily_quota_exceeded")["type"] == "insufficient_quota"

    monthly = await env.admin.create_token(world, "m", remain_quota=10**9, monthly_quota=1)
    status, body = await _post(relay, f"sk-{monthly.key}")
    assert status == 429
    assert _shape(body, "monthly_quota_exceeded")["type"] == "insufficient_quota"
    for t in (empty, daily, monthly):
        assert (await ledger(env, world, t.id))[1] == 0


async def test_malformed_json_and_missing_model_400(world, env, relay):
    tok = await env.admin.create_token(world, "t", remain_quota=10**6)
    key = f"sk-{tok.key}"
    for raw in (b"{not json", b"", b"[1,2]", b'"text"'):
        status, body = await _post(
            relay, key, raw=raw, headers={"Content-Type": "application/json"}
        )
        assert status == 400, raw
        _shape(body, "invalid_json")
    status, body = await _post(relay, key, {"messages": []})
    assert status == 400
    _shape(body, "missing_model")
    status, body = await _post(relay, key, {**CHAT, "max_tokens": -5})
    assert status == 400
    _shape(body, "invalid_max_tokens")
    assert (await ledger(env, world, tok.id))[1] == 0


async def test_unknown_model_and_no_channel(world, env, relay):
    tok = await env.admin.create_token(world, "t", remain_quota=10**6)
    status, body = await _post(relay, f"sk-{tok.key}", {**CHAT, "model": "no-such-model"})
    assert status == 503
    _shape(body, "model_not_found")


async def test_upstream_unreachable_502_and_refund(env, relay):
    uid, _ = await env.root_user()
    await env.admin.create_channel("dead", "http://127.0.0.1:9", "k", "gpt-4o-mini")
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**6)
    status, body = await _post(relay, f"sk-{tok.key}")
    assert status == 502
    _shape(body, "bad_gateway")
    assert await ledger(env, uid, tok.id) == (10**6, 0)
    assert await env.redis.zcard(env.keys.reservations(uid)) == 0


async def test_upstream_error_status_passes_through_with_refund(world, env, relay, mock_upstream):
    await env.admin.create_channel("mock-fail", mock_upstream, "k", "m-fail-500,m-no-usage")
    await env.admin.set_option("ModelRatio", '{"m-fail-500": 1, "m-no-usage": 1}')
    await refresh(relay)
    tok = await env.admin.create_token(world, "t", remain_quota=10**6)
    status, body = await _post(relay, f"sk-{tok.key}", {**CHAT, "model": "m-fail-500"})
    assert status == 500
    assert "error" in body
    assert (await ledger(env, world, tok.id))[1] == 0
    # An upstream that reports no usage is still charged, with an estimate.
    status, body = await _post(relay, f"sk-{tok.key}", {**CHAT, "model": "m-no-usage"})
    assert status == 200
    assert (await ledger(env, world, tok.id))[1] > 0
