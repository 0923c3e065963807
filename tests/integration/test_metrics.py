from __future__ import annotations

from .helpers import CHAT, bearer, refresh


async def test_metrics_count_requests_and_cache(env, mock_upstream, relay):
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", mock_upstream, "k", "gpt-4o-mini")
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**6)
    for _ in range(3):
        assert (
            await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
        ).status == 200
    assert (await relay.post("/v1/chat/completions", json=CHAT)).status == 401
    text = await (await relay.get("/metrics")).text()
    assert 'relaygate_http_requests_total{route="/v1/chat/completions",status="200"} 3.0' in text
    assert 'relaygate_http_requests_total{route="/v1/chat/completions",status="401"} 1.0' in text
    assert "relaygate_token_cache_hits_total 2.0" in text
    assert "relaygate_usage_backlog 3" in text
    assert tok.key not in text
