"""Claude (/v1/messages) and Gemini (/v1beta/models/...) requests pass through with the same
accounting as OpenAI ones, and refusals answer in the caller's dialect."""

from __future__ import annotations

import orjson

from .helpers import flush_all, ledger, refresh

CLAUDE = "claude-3-5-sonnet-20241022"
GEMINI = "gemini-2.0-flash"
MSG = {"model": CLAUDE, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
GEN = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}


async def _setup(env, relay, upstream):
    uid, _ = await env.root_user()
    await env.admin.create_channel("claude", upstream, "anthropic-secret", CLAUDE, type_=14)
    await env.admin.create_channel("gemini", upstream, "google-secret", GEMINI, type_=24)
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**7)
    return uid, tok


async def test_claude_messages_with_x_api_key(env, relay, mock_upstream):
    uid, tok = await _setup(env, relay, mock_upstream)
    headers = {"x-api-key": f"sk-{tok.key}", "anthropic-version": "2023-06-01"}
    resp = await relay.post("/v1/messages", json=MSG, headers=headers)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["type"] == "message" and body["usage"]["output_tokens"] > 0
    resp = await relay.post("/v1/messages", json={**MSG, "stream": True}, headers=headers)
    text = await resp.text()
    assert "message_stop" in text
    assert await flush_all(env) == 2
    async with env.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT prompt_tokens, completion_tokens, is_stream, content FROM logs ORDER BY id"
        )
    assert [(r["prompt_tokens"], r["completion_tokens"]) for r in rows] == [(10, 20), (10, 20)]
    assert all(r["content"] == "" for r in rows)  # real usage, not estimated
    assert (await ledger(env, uid, tok.id))[1] > 0


async def test_gemini_generate_and_stream(env, relay, mock_upstream):
    _, tok = await _setup(env, relay, mock_upstream)
    resp = await relay.post(
        f"/v1beta/models/{GEMINI}:generateContent", json=GEN, headers={"x-goog-api-key": tok.key}
    )
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["usageMetadata"]["candidatesTokenCount"] == 20
    resp = await relay.post(
        f"/v1beta/models/{GEMINI}:streamGenerateContent?alt=sse&key={tok.key}", json=GEN
    )
    assert resp.status == 200
    assert "usageMetadata" in await resp.text()
    assert await flush_all(env) == 2
    async with env.pool.acquire() as conn:
        rows = await conn.fetch("SELECT completion_tokens, model_name FROM logs")
    assert {(r["completion_tokens"], r["model_name"]) for r in rows} == {(20, GEMINI)}


async def test_refusals_in_the_callers_dialect(env, relay, mock_upstream):
    _, tok = await _setup(env, relay, mock_upstream)
    resp = await relay.post("/v1/messages", json=MSG, headers={"x-api-key": "sk-nope"})
    assert resp.status == 401
    body = orjson.loads(await resp.read())
    assert body["type"] == "error" and body["error"]["type"] == "authentication_error"
    resp = await relay.post(f"/v1beta/models/{GEMINI}:generateContent?key=nope", json=GEN)
    assert resp.status == 401
    assert (await resp.json())["error"]["status"] == "UNAUTHENTICATED"
    resp = await relay.post(
        f"/v1beta/models/{GEMINI}:explode", json=GEN, headers={"x-goog-api-key": tok.key}
    )
    assert resp.status == 400
