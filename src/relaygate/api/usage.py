"""Balance endpoints authenticated by an ``sk-`` key, for client apps that show a balance
(NEWAPI.md §1.2): ``/api/usage/token/``, ``/api/log/token`` and the OpenAI-legacy
``/v1/dashboard/billing/subscription`` and ``/usage``.

Figures come from the live ledger, like every other read. As New API's read-only token auth,
an expired or exhausted token may still look at its balance; a disabled or deleted one may
not, nor may the token of a banned user.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relaygate.api.auth import Level
from relaygate.api.envelope import ApiFail, ok, raw_json
from relaygate.api.routing import Ctx, RouteTable
from relaygate.api.views import live_token_figures, log_view
from relaygate.credentials import hash_secret
from relaygate.pricing import QUOTA_PER_UNIT
from relaygate.relay import errors
from relaygate.relay.auth import extract_key
from relaygate.relay.errors import RelayError
from relaygate.store import api_queries as q

routes = RouteTable()

UNLIMITED_USD = 100_000_000  # what New API reports for an unlimited token
TOKEN_LOG_LIMIT = 1000

MSG_NO_TOKEN = "Token not provided"
MSG_INVALID = "Invalid token"
MSG_UNAVAILABLE = "This token status is unavailable"
MSG_BANNED = "User has been banned"


async def _token(ctx: Ctx) -> tuple[Any, tuple[int, int]]:
    """(row, live (limit, used)) of the presented key; refusals as ``ApiFail`` (401/403)."""
    key = extract_key(ctx.request)
    if not key:
        raise ApiFail(MSG_NO_TOKEN, 401)
    async with ctx.rt.pool.acquire() as conn:
        row = await conn.fetchrow(q.TOKEN_BY_KEY_HASH, hash_secret(key))
    if row is None or row["user_status"] is None:
        raise ApiFail(MSG_INVALID, 401)
    if int(row["status"]) == 2:
        raise ApiFail(MSG_UNAVAILABLE, 401)
    if int(row["user_status"]) != 1:
        raise ApiFail(MSG_BANNED, 403)
    live = await live_token_figures(ctx.rt.accounts, [row])
    return row, live[int(row["id"])]


async def _openai_token(ctx: Ctx) -> tuple[Any, tuple[int, int]]:
    """The same checks, refusing in OpenAI's error shape (these are /v1 routes)."""
    try:
        return await _token(ctx)
    except ApiFail as exc:
        err = {
            MSG_NO_TOKEN: errors.MISSING_KEY,
            MSG_UNAVAILABLE: errors.TOKEN_DISABLED,
            MSG_BANNED: errors.USER_DISABLED,
        }.get(exc.message, errors.INVALID_KEY)
        raise _OpenAIRefusal(err) from None


class _OpenAIRefusal(Exception):
    def __init__(self, err: RelayError) -> None:
        super().__init__(err.message)
        self.err = err


@routes.route("GET", "/api/usage/token/", Level.KEY)
async def token_usage(ctx: Ctx) -> web.StreamResponse:
    """New API's shape, including its ``code: true`` envelope."""
    row, (limit, used) = await _token(ctx)
    expires = int(row["expired_time"])
    models = [m for m in row["model_limits"].split(",") if m]
    data = {
        "object": "token_usage",
        "name": row["name"],
        "total_granted": limit,
        "total_used": used,
        "total_available": limit - used,
        "unlimited_quota": bool(row["unlimited_quota"]),
        "model_limits": {m: True for m in models},
        "model_limits_enabled": bool(row["model_limits_enabled"]),
        "expires_at": 0 if expires == -1 else expires,
    }
    return raw_json({"code": True, "message": "ok", "data": data})


@routes.route("GET", "/api/log/token", Level.KEY)
async def token_logs(ctx: Ctx) -> web.StreamResponse:
    """The presented key's last 1000 log rows (ids renumbered, as New API)."""
    row, _ = await _token(ctx)
    async with ctx.rt.pool.acquire() as conn:
        logs = await conn.fetch(
            q.TOKEN_RECENT_LOGS, int(row["id"]), int(row["user_id"]), TOKEN_LOG_LIMIT
        )
    return ok([log_view(r, ordinal=i + 1) for i, r in enumerate(logs)])


async def _billing(ctx: Ctx, usage: bool) -> web.StreamResponse:
    try:
        row, (limit, used) = await _openai_token(ctx)
    except _OpenAIRefusal as refusal:
        return refusal.err.response()
    if usage:
        return raw_json({"object": "list", "total_usage": used / QUOTA_PER_UNIT * 100})
    amount: float = limit / QUOTA_PER_UNIT
    if row["unlimited_quota"]:
        amount = UNLIMITED_USD
    expires = int(row["expired_time"])
    return raw_json(
        {
            "object": "billing_subscription",
            "has_payment_method": True,
            "soft_limit_usd": amount,
            "hard_limit_usd": amount,
            "system_hard_limit_usd": amount,
            "access_until": expires if expires > 0 else 0,
        }
    )


@routes.route("GET", "/v1/dashboard/billing/subscription", Level.KEY)
async def billing_subscription(ctx: Ctx) -> web.StreamResponse:
    """Total granted in USD (``limit``/500000), as New API with token stats displayed."""
    return await _billing(ctx, usage=False)


@routes.route("GET", "/v1/dashboard/billing/usage", Level.KEY)
async def billing_usage(ctx: Ctx) -> web.StreamResponse:
    """Total used, in US cents as OpenAI's legacy endpoint reports it."""
    return await _billing(ctx, usage=True)


@routes.route("GET", "/dashboard/billing/subscription", Level.KEY)
async def billing_subscription_legacy(ctx: Ctx) -> web.StreamResponse:
    return await _billing(ctx, usage=False)


@routes.route("GET", "/dashboard/billing/usage", Level.KEY)
async def billing_usage_legacy(ctx: Ctx) -> web.StreamResponse:
    return await _billing(ctx, usage=True)
