"""Relay route table and the small routes that do not forward (models, health)."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from relaygate.appkeys import DRAINING, RUNTIME
from relaygate.metrics import counted
from relaygate.relay.errors import RelayError
from relaygate.relay.handlers import handle
from relaygate.relay.request import (
    CHAT,
    CLAUDE_MESSAGES,
    COMPLETIONS,
    EMBEDDINGS,
    GEMINI_GENERATE,
    IMAGES,
    Endpoint,
)
from relaygate.relay.scope import usable_token

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bind(ep: Endpoint) -> Handler:
    """``handle`` for one endpoint: a partial, not a wrapper coroutine (every coroutine
    frame in the chain is paid again each time the request resumes)."""
    return functools.partial(handle, ep=ep)


async def list_models(request: web.Request) -> web.Response:
    """Only the models this token may call and some channel serves."""
    rt = request.app[RUNTIME]
    try:
        meta = await usable_token(request, rt)
    except RelayError as err:
        err.forget_traceback()
        return err.response()
    served = rt.catalog.channels.models_for(meta.group)
    allowed = served if meta.models is None else served & meta.models
    now = int(rt.started_at)
    data = [
        {"id": m, "object": "model", "created": now, "owned_by": "relaygate"}
        for m in sorted(allowed)
    ]
    return web.Response(
        body=orjson.dumps({"object": "list", "data": data}), content_type="application/json"
    )


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the event loop answers. Nothing else, so an outage of Redis or PostgreSQL
    never makes an orchestrator restart a healthy relay."""
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


async def readyz(request: web.Request) -> web.Response:
    """Ready when Redis answers and the process is not draining; PostgreSQL being down does
    not stop the relay (warm cache) and is reported as degraded."""
    rt = request.app[RUNTIME]
    checks: dict[str, str] = {}
    draining = request.app[DRAINING].is_set()
    checks["draining"] = "yes" if draining else "no"
    try:
        await rt.redis.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    try:
        async with rt.pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
        checks["postgres"] = "ok"
    except Exception as exc:
        checks["postgres"] = f"degraded: {type(exc).__name__}"
    status = 200 if checks["redis"] == "ok" and not draining else 503
    body = {
        "status": "ok" if status == 200 else "unavailable",
        "checks": checks,
        "time": int(time.time()),
    }
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def add_routes(app: web.Application) -> None:
    """Relay routes record their own metrics inside ``handle``; the rest through ``counted``."""
    for ep in (CHAT, COMPLETIONS, EMBEDDINGS, IMAGES, CLAUDE_MESSAGES, GEMINI_GENERATE):
        app.router.add_post(ep.route, _bind(ep))
    # GET /v1/models (OpenAI's or Gemini's list, by caller): relay.compat.add_compat_routes
    app.router.add_get("/healthz", counted("/healthz", healthz))
    app.router.add_get("/readyz", counted("/readyz", readyz))
