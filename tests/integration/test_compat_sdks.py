"""The official SDKs, unchanged and on their default paths, against relaygate with the mock
upstream (issue 12 item 5): openai (chat, responses, embeddings, models.retrieve,
moderations), anthropic (messages) and google-genai (models.list, generate_content), stream
and non-stream where the API has it. Each answered call is logged once."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

from relaygate.appkeys import STATS

from .helpers import flush_all, refresh, wav

CLAUDE = "claude-3-5-sonnet-20241022"
GEMINI = "gemini-2.0-flash"
OPENAI_MODELS = (
    "Qwen/Qwen3-8B,gpt-4o-mini,text-embedding-3-small,omni-moderation-latest,tts-1,whisper-1"
)


async def _world(env: Any, relay: Any, upstream: str) -> tuple[int, Any, str]:
    uid, _ = await env.root_user()
    await env.admin.create_channel("oai", upstream, "k", OPENAI_MODELS)
    await env.admin.create_channel("claude", upstream, "anthropic-secret", CLAUDE, type_=14)
    await env.admin.create_channel("gemini", upstream, "google-secret", GEMINI, type_=24)
    await env.admin.set_option("ModelRatio", '{"Qwen/Qwen3-8B": 1}')  # a name with a slash
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**8)
    return uid, tok, str(relay.make_url("")).rstrip("/")


async def _log_count(env: Any) -> int:
    await flush_all(env)
    async with env.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT count(*) FROM logs"))


async def test_openai_sdk(env, relay, mock_upstream):
    import openai

    _, tok, base = await _world(env, relay, mock_upstream)
    oai = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=f"sk-{tok.key}", max_retries=0)
    try:
        chat = await oai.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert chat.usage is not None and chat.usage.completion_tokens == 20
        chunks = [
            c
            async for c in await oai.chat.completions.create(
                model="gpt-4o-mini", stream=True, messages=[{"role": "user", "content": "hi"}]
            )
        ]
        assert chunks and all(c.choices for c in chunks)  # relaygate's usage chunk stripped
        resp = await oai.responses.create(model="gpt-4o-mini", input="hi", max_output_tokens=64)
        assert resp.status == "completed" and resp.output_text.strip()
        assert resp.usage is not None and resp.usage.output_tokens == 20
        events = [
            e
            async for e in await oai.responses.create(model="gpt-4o-mini", input="hi", stream=True)
        ]
        assert events[-1].type == "response.completed"
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta").strip()
        async with oai.responses.stream(model="gpt-4o-mini", input="hi") as stream:
            final = await stream.get_final_response()
        assert final.usage is not None and final.usage.output_tokens == 20
        emb = await oai.embeddings.create(model="text-embedding-3-small", input="hi")
        assert emb.data and emb.data[0].embedding
        model = await oai.models.retrieve("gpt-4o-mini")
        assert model.id == "gpt-4o-mini"
        assert (await oai.models.retrieve("Qwen/Qwen3-8B")).id == "Qwen/Qwen3-8B"
        with pytest.raises(openai.NotFoundError):
            await oai.models.retrieve("no-such-model")
        mod = await oai.moderations.create(input=["hi", "there"])
        assert len(mod.results) == 2 and mod.results[0].flagged is False
        speech = await oai.audio.speech.create(model="tts-1", voice="alloy", input="hello")
        assert (await speech.aread()).startswith(b"ID3")
        text = await oai.audio.transcriptions.create(model="whisper-1", file=("a.wav", wav(2.5)))
        assert text.text
        with warnings.catch_warnings():  # the SDK marks translations deprecated; still served
            warnings.simplefilter("ignore", DeprecationWarning)
            english = await oai.audio.translations.create(
                model="whisper-1", file=("a.wav", wav(2.5))
            )
        assert english.text
    finally:
        await oai.close()
    # Every answered call once (two chats, three responses, embeddings, moderations, speech,
    # transcription, translation); the 404 and the model lookups are not relay calls.
    assert await _log_count(env) == 10
    async with env.pool.acquire() as conn:
        models = [r["model_name"] for r in await conn.fetch("SELECT model_name FROM logs")]
    assert models.count("gpt-4o-mini") == 5 and "omni-moderation-latest" in models


async def test_anthropic_sdk(env, relay, mock_upstream):
    import anthropic

    _, tok, base = await _world(env, relay, mock_upstream)
    claude = anthropic.AsyncAnthropic(base_url=base, api_key=f"sk-{tok.key}", max_retries=0)
    try:
        msg = await claude.messages.create(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
        assert msg.usage.output_tokens == 20
        async with claude.messages.stream(
            model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as s:
            final = await s.get_final_message()
        assert final.usage.output_tokens == 20
    finally:
        await claude.close()
    assert await _log_count(env) == 2


def _routes_hit(relay: Any) -> set[str]:
    return {route for route, _ in relay.app[STATS].counts}


# google-genai subclasses aiohttp's ClientSession, which aiohttp warns about (their issue).
@pytest.mark.filterwarnings("ignore:Inheritance class AiohttpClientSession:DeprecationWarning")
@pytest.mark.parametrize("api_version", [None, "v1beta"])
async def test_google_genai_sdk(env, relay, mock_upstream, api_version):
    """google-genai's default api_version is v1 (``/v1/models``, ``/v1/models/{m}:...``);
    ``v1beta`` is the other one clients set."""
    from google import genai
    from google.genai import types

    _, tok, base = await _world(env, relay, mock_upstream)
    options = types.HttpOptions(base_url=base, api_version=api_version)
    client = genai.Client(api_key=tok.key, http_options=options)
    names = [m.name async for m in await client.aio.models.list()]
    assert f"models/{GEMINI}" in names and f"models/{CLAUDE}" in names  # all usable ones
    got = await client.aio.models.get(model=GEMINI)
    assert got.name == f"models/{GEMINI}"
    answer = await client.aio.models.generate_content(model=GEMINI, contents="hi")
    assert answer.text and answer.usage_metadata is not None
    assert answer.usage_metadata.candidates_token_count == 20
    chunks = [
        c
        async for c in await client.aio.models.generate_content_stream(model=GEMINI, contents="hi")
    ]
    assert "".join(c.text or "" for c in chunks).strip()
    assert chunks[-1].usage_metadata is not None
    assert chunks[-1].usage_metadata.candidates_token_count == 20
    assert await _log_count(env) == 2
    prefix = "/v1beta" if api_version else "/v1"  # the SDK's own default is v1
    assert {f"{prefix}/models", f"{prefix}/models/{{target}}"} <= _routes_hit(relay)
