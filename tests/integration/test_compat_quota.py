"""Every issue-12 relay route charges once and exactly (real Redis and PostgreSQL): one
reserve and one settle script call per request, no PostgreSQL round trip on a warm cache,
one usage log whose quota is New API's formula of the reported (or metered) usage, and the
ledger debited by exactly that, with no reservation left behind."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Any

import aiohttp
import orjson
import pytest

from relaygate import ledger
from relaygate.appkeys import RUNTIME

from .helpers import bearer, flush_all, refresh, wav
from .helpers import ledger as token_ledger
from .test_hot_path import CountingPool

GEMINI = "gemini-2.0-flash"
RERANKER = "jina-reranker-v2-base-multilingual"
# Ratios large enough that the charge is not rounded into nothing; completion ratios stay
# the defaults (gpt-4o-mini and gemini-2.0-flash: 4; the rest 1).
RATIOS = orjson.dumps(
    {"gpt-4o-mini": 2, "omni-moderation-latest": 1, RERANKER: 1, GEMINI: 1}
).decode()
TEXT = "hello moderation!"  # 17 bytes: an estimated 5 prompt tokens
SPEECH = "héllo wörld"  # 11 characters (13 bytes): tts-1 bills characters


@dataclass(frozen=True)
class Case:
    name: str
    path: str
    body: dict[str, Any]
    model: str
    prompt: int
    completion: int
    ratio: str  # model ratio
    completion_ratio: str = "1"
    stream: bool = False


GEN = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
CASES = [
    Case(
        "responses",
        "/v1/responses",
        {"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": 64},
        "gpt-4o-mini",
        10,
        20,
        "2",
        "4",
    ),
    Case(
        "responses-stream",
        "/v1/responses",
        {"model": "gpt-4o-mini", "input": "hi", "stream": True},
        "gpt-4o-mini",
        10,
        20,
        "2",
        "4",
        stream=True,
    ),
    Case(
        "moderations",
        "/v1/moderations",
        {"input": TEXT},
        "omni-moderation-latest",
        5,
        0,
        "1",
    ),
    Case(
        "speech",
        "/v1/audio/speech",
        {"model": "tts-1", "input": SPEECH, "voice": "alloy"},
        "tts-1",
        11,
        0,
        "7.5",
    ),
    Case(
        "rerank",
        "/v1/rerank",
        {"model": RERANKER, "query": "q", "documents": ["a", "b", "c"]},
        RERANKER,
        10,
        0,
        "1",
    ),
    Case(
        "gemini-v1",
        f"/v1/models/{GEMINI}:generateContent",
        GEN,
        GEMINI,
        10,
        20,
        "1",
        "4",
    ),
    Case(
        "gemini-v1-stream",
        f"/v1/models/{GEMINI}:streamGenerateContent?alt=sse",
        GEN,
        GEMINI,
        10,
        20,
        "1",
        "4",
        stream=True,
    ),
]


def _expected(case: Case) -> int:
    """New API's formula, by hand: (prompt + completion x completion ratio) x model ratio."""
    total = (Decimal(case.prompt) + Decimal(case.completion) * Decimal(case.completion_ratio)) * (
        Decimal(case.ratio)
    )
    return int(total.to_integral(ROUND_DOWN))


class Spy:
    """Counts the ledger's script calls (reserve; settle sent or awaited)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.reserves = 0
        self.settles = 0
        reserve, send, settle = ledger.reserve_pipelined, ledger.send_settle, ledger.settle

        async def counted_reserve(*a: Any, **k: Any) -> Any:
            self.reserves += 1
            return await reserve(*a, **k)

        def counted_send(*a: Any, **k: Any) -> Any:
            sent = send(*a, **k)
            if sent is not None:
                self.settles += 1
            return sent

        async def counted_settle(*a: Any, **k: Any) -> Any:
            self.settles += 1
            return await settle(*a, **k)

        monkeypatch.setattr(ledger, "reserve_pipelined", counted_reserve)
        monkeypatch.setattr(ledger, "send_settle", counted_send)
        monkeypatch.setattr(ledger, "settle", counted_settle)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
async def test_new_route_charges_once_and_exactly(env, relay, mock_upstream, monkeypatch, case):
    uid, _ = await env.root_user()
    models = f"gpt-4o-mini,omni-moderation-latest,tts-1,{RERANKER}"
    await env.admin.create_channel("oai", mock_upstream, "k", models)
    await env.admin.create_channel("gemini", mock_upstream, "google-secret", GEMINI, type_=24)
    await env.admin.set_option("ModelRatio", RATIOS)
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**7)
    headers = bearer(f"sk-{tok.key}")
    # Warm: metadata cached and ledger hashes built by a first call of the route.
    warm = await relay.get("/v1/models/gpt-4o-mini", headers=headers)
    assert warm.status == 200
    assert (await relay.post(case.path, json=case.body, headers=headers)).status == 200
    await flush_all(env)
    _, used_before = await token_ledger(env, uid, tok.id)

    rt = relay.app[RUNTIME]
    counting = CountingPool(rt.pool)
    monkeypatch.setattr(rt, "pool", counting)
    monkeypatch.setattr(rt.accounts, "pool", counting)
    spy = Spy(monkeypatch)
    resp = await relay.post(case.path, json=case.body, headers=headers)
    assert resp.status == 200, await resp.text()
    await resp.read()
    assert (spy.reserves, spy.settles, counting.calls) == (1, 1, 0)
    monkeypatch.undo()

    expected = _expected(case)
    assert expected > 0
    _, used = await token_ledger(env, uid, tok.id)
    assert used - used_before == expected
    assert await env.redis.zcard(env.keys.reservations(uid)) == 0
    assert await flush_all(env) == 1
    async with env.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT model_name, quota, prompt_tokens, completion_tokens, is_stream"
            " FROM logs ORDER BY id"
        )
    assert len(rows) == 2  # the warm-up call and this one, each logged once
    last = rows[-1]
    assert last["model_name"] == case.model and last["quota"] == expected
    assert (last["prompt_tokens"], last["completion_tokens"]) == (case.prompt, case.completion)
    assert last["is_stream"] is case.stream


async def _transcribe(
    relay: Any, key: str, data: bytes, name: str = "a.wav", task: str = "transcriptions"
) -> Any:
    form = aiohttp.FormData()
    form.add_field("model", "whisper-1")
    form.add_field("file", data, filename=name, content_type="audio/wav")
    return await relay.post(f"/v1/audio/{task}", data=form, headers=bearer(key))


@pytest.mark.parametrize(
    ("audio", "tokens", "estimated"),
    [
        (wav(3.2), 67, False),  # ceil(3.2 s) = 4 s -> round(4 / 60 * 1000)
        (wav(60), 1000, False),
        (b"not audio at all" * 200, 4, True),  # 3,200 bytes: one token per started KB
    ],
    ids=["3.2s", "60s", "unknown"],
)
@pytest.mark.parametrize("task", ["transcriptions", "translations"])
async def test_transcription_billed_by_duration(
    env, relay, mock_upstream, monkeypatch, audio, tokens, estimated, task
):
    """A translation (speech to English text) is billed exactly as a transcription."""
    uid, _ = await env.root_user()
    await env.admin.create_channel("oai", mock_upstream, "k", "whisper-1")
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**7)
    rt = relay.app[RUNTIME]
    assert (await _transcribe(relay, f"sk-{tok.key}", audio, task=task)).status == 200  # warm
    await flush_all(env)
    _, before = await token_ledger(env, uid, tok.id)
    counting = CountingPool(rt.pool)
    monkeypatch.setattr(rt, "pool", counting)
    monkeypatch.setattr(rt.accounts, "pool", counting)
    spy = Spy(monkeypatch)
    resp = await _transcribe(relay, f"sk-{tok.key}", audio, task=task)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["text"]
    assert (spy.reserves, spy.settles, counting.calls) == (1, 1, 0)
    monkeypatch.undo()
    _, used = await token_ledger(env, uid, tok.id)
    assert used - before == tokens * 3  # whisper-1: New API's ratio 3
    assert await env.redis.zcard(env.keys.reservations(uid)) == 0
    assert await flush_all(env) == 1
    async with env.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT quota, prompt_tokens, completion_tokens, content FROM logs ORDER BY id DESC"
        )
    assert (row["quota"], row["prompt_tokens"], row["completion_tokens"]) == (tokens * 3, tokens, 0)
    assert (row["content"] != "") is estimated


async def test_transcription_without_a_form_is_refused(env, relay, mock_upstream):
    uid, _ = await env.root_user()
    await env.admin.create_channel("oai", mock_upstream, "k", "whisper-1")
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**7)
    resp = await relay.post(
        "/v1/audio/transcriptions", json={"model": "whisper-1"}, headers=bearer(f"sk-{tok.key}")
    )
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_form"
    form = aiohttp.FormData()
    form.add_field("model", "whisper-1")
    form.add_field("other", b"x", filename="x.bin")
    resp = await relay.post("/v1/audio/transcriptions", data=form, headers=bearer(f"sk-{tok.key}"))
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_file"
    assert (await token_ledger(env, uid, tok.id))[1] == 0


async def test_speech_passes_the_audio_through(env, relay, mock_upstream):
    uid, _ = await env.root_user()
    await env.admin.create_channel("oai", mock_upstream, "k", "tts-1")
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**7)
    body = {"model": "tts-1", "input": "hi", "voice": "alloy", "response_format": "wav"}
    resp = await relay.post("/v1/audio/speech", json=body, headers=bearer(f"sk-{tok.key}"))
    assert resp.status == 200 and resp.content_type == "audio/wav"
    assert (await resp.read()).startswith(b"ID3")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/audio/speech", {"model": "tts-1", "voice": "alloy"}),
        ("/v1/audio/speech", {"model": "tts-1", "input": 5}),
        ("/v1/moderations", {"input": []}),
        ("/v1/moderations", {"input": [5]}),
        ("/v1/moderations", {"input": [{"type": "text", "text": 5}]}),
        ("/v1/responses", {"model": "gpt-4o-mini", "input": "hi", "max_output_tokens": 0}),
    ],
)
async def test_bad_bodies_are_refused_before_any_charge(env, relay, mock_upstream, path, body):
    uid, _ = await env.root_user()
    await env.admin.create_channel(
        "oai", mock_upstream, "k", "gpt-4o-mini,tts-1,omni-moderation-latest"
    )
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**7)
    resp = await relay.post(path, json=body, headers=bearer(f"sk-{tok.key}"))
    assert resp.status == 400
    assert "error" in await resp.json()
    assert (await token_ledger(env, uid, tok.id))[1] == 0
    assert await flush_all(env) == 0
