"""Relay route table and the small routes that do not forward (models, health)."""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from relaygate.appkeys import DRAINING, RUNTIME
from relaygate.cache import TokenMeta
from relaygate.credentials import hash_secret
from relaygate.ledger import STATUS_ENABLED, STATUS_EXHAUSTED, STATUS_EXPIRED
from relaygate.metrics import counted
from relaygate.relay import errors
from relaygate.relay.auth import extract_key
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
from relaygate.relay.scope import check_group

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bind(ep: Endpoint) -> Handler:
    """``handle`` for one endpoint: a partial, not a wrapper coroutine (every coroutine
    frame in the chain is paid again each time the request resumes)."""
    return functools.partial(handle, ep=ep)


def usable_or_raise(meta: TokenMeta, now: float) -> None:
    """The token states a relay request is refused for, from the cached metadata (kept
    current by invalidation): listing models is no back door for a dead token."""
    if meta.status == STATUS_EXPIRED or (meta.expired_time != -1 and meta.expired_time < now):
        raise errors.TOKEN_EXPIRED
    if meta.status == STATUS_EXHAUSTED:
        raise errors.TOKEN_EXHAUSTED
    if meta.status != STATUS_ENABLED:
        raise errors.TOKEN_DISABLED
    if meta.user_status != STATUS_ENABLED:
        raise errors.USER_DISABLED


async def list_models(request: web.Request) -> web.Response:
    """Only the models this token may call and some channel serves."""
    rt = request.app[RUNTIME]
    try:
        key = extract_key(request)
        if not key:
            raise errors.MISSING_KEY
        meta = await rt.cache.get(hash_secret(key))
        if meta is None:
            raise errors.INVALID_KEY
        usable_or_raise(meta, time.time())
        if meta.token_group:
            check_group(rt, meta)
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
