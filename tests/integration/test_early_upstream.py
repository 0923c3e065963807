"""The upstream call sent while the reserve is on its way (relay.early): nothing of its
answer reaches a client the reserve refused or admitted with a lowered output bound, such a
token is not called early again, and a request admitted in full is called once."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from relaygate.appkeys import RUNTIME
from tests.prodserver import ProductionServer

from .helpers import CHAT, bearer, flush_all, ledger, refresh


class Upstream:
    """An honest upstream: answers as many completion tokens as ``max_tokens`` allows, and
    says in the answer which bound it was sent."""

    def __init__(self) -> None:
        self.bounds: list[int | None] = []
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        self.server = ProductionServer(app, host="127.0.0.1")

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        bound = body.get("max_tokens")
        self.bounds.append(bound)
        tokens = bound or 100
        answer = {
            "id": "x",
            "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": f"b={bound}"}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": tokens, "total_tokens": 5 + tokens},
        }
        return web.json_response(answer)

    @property
    def url(self) -> str:
        return str(self.server.make_url("")).rstrip("/")


async def _world(env: Any, relay: Any) -> tuple[int, Upstream]:
    upstream = Upstream()
    await upstream.server.start_server()
    uid, _ = await env.root_user()
    await env.admin.create_channel("up", upstream.url, "k", "gpt-4o-mini")
    await refresh(relay)
    rich = await env.admin.create_token(uid, "rich", remain_quota=10**9)
    # warm: an idle upstream connection in the pool, the scripts loaded
    resp = await relay.post(
        "/v1/chat/completions", json={**CHAT, "max_tokens": 10}, headers=bearer(f"sk-{rich.key}")
    )
    assert resp.status == 200
    upstream.bounds.clear()
    return uid, upstream


async def test_refused_token_gets_nothing_of_the_upstream_and_is_not_called_early_again(
    env: Any, relay: Any
) -> None:
    assert relay.app[RUNTIME].early.enabled  # the default
    uid, upstream = await _world(env, relay)
    try:
        poor = await env.admin.create_token(uid, "poor", remain_quota=1)
        for attempt in range(3):
            resp = await relay.post(
                "/v1/chat/completions",
                json={**CHAT, "max_tokens": 10},
                headers=bearer(f"sk-{poor.key}"),
            )
            assert resp.status == 429
            body = await resp.json()
            assert body["error"]["code"] == "insufficient_quota", body
            assert "b=" not in await resp.text()
            assert len(upstream.bounds) <= 1, f"called early again on attempt {attempt}"
        assert upstream.bounds == [10], "called early once (then held back)"
        assert await ledger(env, uid, poor.id) == (1, 0)
        assert await flush_all(env) == 1  # the warm-up's only
    finally:
        await upstream.server.close()


async def test_a_lowered_output_bound_is_what_reaches_the_upstream_answered(
    env: Any, relay: Any
) -> None:
    """The reserve lowers max_tokens to what the quota affords (RELAYGATE_CLAMP_MAX_TOKENS):
    the early call, sent with the client's bound, is dropped, and the answer the client gets
    is the one sent the lowered bound; charged within what the token had."""
    uid, upstream = await _world(env, relay)
    try:
        limit = 200  # gpt-4o-mini (0.3 quota per output token): ~650 tokens, not 4096
        tok = await env.admin.create_token(uid, "near", remain_quota=limit)
        resp = await relay.post(
            "/v1/chat/completions",
            json={**CHAT, "max_tokens": 4096},
            headers=bearer(f"sk-{tok.key}"),
        )
        assert resp.status == 200
        answer = orjson.loads(await resp.read())
        lowered = upstream.bounds[-1]
        assert lowered is not None and lowered < 4096
        assert answer["choices"][0]["message"]["content"] == f"b={lowered}"
        assert upstream.bounds == [4096, lowered]  # the early call (dropped), then the real one
        _, used = await ledger(env, uid, tok.id)
        assert 0 < used <= limit
        # held back: the next request of this token is not called early
        upstream.bounds.clear()
        resp = await relay.post(
            "/v1/chat/completions", json={**CHAT, "max_tokens": 1}, headers=bearer(f"sk-{tok.key}")
        )
        assert resp.status in (200, 429)
        assert len(upstream.bounds) == (1 if resp.status == 200 else 0)
    finally:
        await upstream.server.close()


async def test_admitted_in_full_is_called_once_with_the_clients_bound(env: Any, relay: Any) -> None:
    uid, upstream = await _world(env, relay)
    try:
        tok = await env.admin.create_token(uid, "t", remain_quota=10**9)
        for _ in range(3):
            resp = await relay.post(
                "/v1/chat/completions",
                json={**CHAT, "max_tokens": 7},
                headers=bearer(f"sk-{tok.key}"),
            )
            assert resp.status == 200
            assert orjson.loads(await resp.read())["choices"][0]["message"]["content"] == "b=7"
        assert upstream.bounds == [7, 7, 7]
        assert await flush_all(env) == 4  # the warm-up's and these three, once each
    finally:
        await upstream.server.close()


async def test_an_early_call_that_fails_to_start_leaves_the_request_whole(
    env: Any, relay: Any, monkeypatch: Any
) -> None:
    """A failure while making the early call (a bug, say) happens with the reserve already
    sent: the request must still await its reply, be answered, charged once and settled
    (no reservation left holding quota)."""
    from relaygate.relay import early

    uid, upstream = await _world(env, relay)

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")

    monkeypatch.setattr(early, "build_attempt", broken)
    try:
        tok = await env.admin.create_token(uid, "t", remain_quota=10**9)
        resp = await relay.post(
            "/v1/chat/completions", json={**CHAT, "max_tokens": 3}, headers=bearer(f"sk-{tok.key}")
        )
        assert resp.status == 200
        assert upstream.bounds == [3]
        assert await env.redis.zcard(env.keys.reservations(uid)) == 0
        _, used = await ledger(env, uid, tok.id)
        assert used > 0
        assert await flush_all(env) == 2  # the warm-up's and this one
    finally:
        await upstream.server.close()
