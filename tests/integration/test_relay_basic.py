from __future__ import annotations

from relaygate.pricing import PriceBook, charge

from .helpers import CHAT, bearer, flush_all, ledger, pg_token, refresh


async def test_chat_roundtrip_is_charged_once(env, mock_upstream, relay):
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", mock_upstream, "upstream-secret", "gpt-4o-mini")
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=1_000_000)
    resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["usage"]["completion_tokens"] == 20
    expected = charge(PriceBook().model("gpt-4o-mini"), PriceBook().group_ratio("default"), 10, 20)
    assert await ledger(env, uid, tok.id) == (1_000_000, expected)
    assert await flush_all(env) == 1
    assert await pg_token(env, tok.id) == (1_000_000, expected)
