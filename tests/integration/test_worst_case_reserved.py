"""What the upstream may bill is reserved, or refused (red team, 2026-12-07): a legacy
completion's prompt list and ``best_of`` multiply its answers, and a Responses
``background`` answer comes back queued, with its cost still to come."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.integration.helpers import bearer, refresh


async def _completions(request: web.Request) -> web.Response:
    """Bills as OpenAI does: max(n, best_of) completions of max_tokens for every prompt."""
    body = await request.json()
    prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
    n = body.get("n", 1)
    generated = len(prompts) * max(n, body.get("best_of", 1)) * body["max_tokens"]
    choices = [{"index": i, "text": "x", "finish_reason": "length"} for i in range(n)]
    return web.json_response(
        {
            "id": "cmpl",
            "object": "text_completion",
            "model": body["model"],
            "choices": choices,
            "usage": {
                "prompt_tokens": len(prompts),
                "completion_tokens": generated,
                "total_tokens": len(prompts) + generated,
            },
        }
    )


async def _upstream(path: str, handler: Any) -> TestServer:
    app = web.Application()
    app.router.add_post(path, handler)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_prompt_list_and_best_of_are_reserved(env: Any, relay: Any) -> None:
    server = await _upstream("/v1/completions", _completions)
    try:
        uid, _ = await env.root_user()
        base = str(server.make_url("")).rstrip("/")
        await env.admin.create_channel("c", base, "k", "gpt-3.5-turbo-instruct")
        await env.admin.set_option("ModelRatio", '{"gpt-3.5-turbo-instruct": 0.75}')
        await env.admin.set_option("CompletionRatio", '{"gpt-3.5-turbo-instruct": 1.33}')
        await refresh(relay)
        poor = await env.admin.create_token(uid, "poor", remain_quota=2000)
        model = "gpt-3.5-turbo-instruct"
        body = {"model": model, "max_tokens": 100, "best_of": 5, "prompt": ["a"] * 50}
        r = await relay.post("/v1/completions", json=body, headers=bearer(poor.key))
        # 50 prompts x best_of 5 x 100 tokens cannot be afforded: refused, or admitted with
        # max_tokens lowered until what the upstream bills fits the 2,000 left.
        if r.status == 200:
            usage = (await r.json())["usage"]
            cost = usage["prompt_tokens"] * 0.75 + usage["completion_tokens"] * 0.75 * 1.33
            assert cost <= 2000, usage
        else:
            assert r.status in (403, 429), await r.text()
        for bad in ({"best_of": 1, "n": 2}, {"prompt": ["a"] * 2049}, {"best_of": "5"}):
            r = await relay.post("/v1/completions", json={**body, **bad}, headers=bearer(poor.key))
            assert r.status == 400, (bad, await r.text())
        rich = await env.admin.create_token(uid, "rich", remain_quota=10**7)
        small = {"model": model, "max_tokens": 10, "best_of": 3, "prompt": ["a", "b"]}
        r = await relay.post("/v1/completions", json=small, headers=bearer(rich.key))
        assert r.status == 200, await r.text()
        assert (await r.json())["usage"]["completion_tokens"] == 60  # 2 prompts x 3 x 10
        key = env.keys.token(uid, rich.id)
        used = int(await env.redis.hget(key, "used"))
        assert used > 0 and int(await env.redis.hget(key, "reserved") or 0) == 0
    finally:
        await server.close()


async def test_responses_background_is_refused(env: Any, relay: Any) -> None:
    sent: list[dict[str, Any]] = []

    async def responses(request: web.Request) -> web.Response:
        sent.append(await request.json())
        return web.json_response({"id": "resp_1", "status": "queued", "usage": None})

    server = await _upstream("/v1/responses", responses)
    try:
        uid, _ = await env.root_user()
        base = str(server.make_url("")).rstrip("/")
        await env.admin.create_channel("c", base, "k", "gpt-4o")
        await refresh(relay)
        t = await env.admin.create_token(uid, "t", remain_quota=200_000)
        body = {"model": "gpt-4o", "input": "an essay", "max_output_tokens": 10_000}
        for flag in (True, 1, "yes"):
            r = await relay.post(
                "/v1/responses", headers=bearer(t.key), json={**body, "background": flag}
            )
            assert r.status == 400, await r.text()
            assert (await r.json())["error"]["code"] == "unsupported_background"
        assert sent == []
        r = await relay.post(
            "/v1/responses", headers=bearer(t.key), json={**body, "background": False}
        )
        assert r.status == 200 and len(sent) == 1
    finally:
        await server.close()
