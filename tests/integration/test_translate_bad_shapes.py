"""A request of the wrong shape for the channel's dialect is the caller's 400, in the
caller's dialect, not a 500 (red team, 2026-12-07: ``"tools": 5`` raised TypeError in the
translation and aiohttp answered its plain-text 500)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.integration.helpers import bearer, refresh

CASES = [
    (
        "claude caller, openai channel",
        "gpt-4o-mini",
        1,
        "/v1/messages",
        "x-api-key",
        {"model": "gpt-4o-mini", "max_tokens": 5, "tools": 5, "messages": []},
    ),
    (
        "gemini caller, openai channel: parts",
        "gpt-4o-mini",
        1,
        "/v1beta/models/gpt-4o-mini:generateContent",
        "x-goog-api-key",
        {"contents": [{"role": "user", "parts": [{"inlineData": "x"}]}]},
    ),
    (
        "gemini caller, openai channel: generationConfig",
        "gpt-4o-mini",
        1,
        "/v1beta/models/gpt-4o-mini:generateContent",
        "x-goog-api-key",
        {"contents": [{"role": "user", "parts": [{"text": "hi"}]}], "generationConfig": 1},
    ),
    (
        "openai caller, claude channel",
        "claude-x",
        14,
        "/v1/chat/completions",
        "bearer",
        {
            "model": "claude-x",
            "max_tokens": 5,
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "x", "tool_calls": [1]},
            ],
        },
    ),
    (
        "openai caller, gemini channel",
        "gemini-x",
        24,
        "/v1/chat/completions",
        "bearer",
        {
            "model": "gemini-x",
            "max_tokens": 5,
            "messages": [{"role": "assistant", "content": "x", "tool_calls": ["a"]}],
        },
    ),
]


@pytest.mark.parametrize(("name", "model", "type_", "path", "auth", "body"), CASES)
async def test_wrong_shape_is_a_400_in_the_callers_dialect(
    env: Any,
    relay: Any,
    mock_upstream: str,
    name: str,
    model: str,
    type_: int,
    path: str,
    auth: str,
    body: dict[str, Any],
) -> None:
    uid, _ = await env.root_user()
    await env.admin.create_channel("c", mock_upstream, "chan-key", model, type_=type_)
    await refresh(relay)
    t = await env.admin.create_token(uid, "t", remain_quota=10**7)
    headers = bearer(t.key) if auth == "bearer" else {auth: t.key}
    r = await relay.post(path, json=body, headers=headers)
    text = await r.text()
    assert r.status == 400 and r.headers["Content-Type"].startswith("application/json"), text
    data = await r.json()
    assert "error" in data, data
    key = env.keys.token(uid, t.id)
    assert int(await env.redis.hget(key, "used") or 0) == 0  # refunded
