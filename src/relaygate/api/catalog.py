"""Read-only views of the price book and the channel table that New API's consoles load:
model pickers, group pickers, the pricing page (issue 12 items 3 and 4).

Everything here is computed from the in-memory catalog (``relaygate.catalog``, refreshed
on invalidation and every 30 s), so these calls cost no database round trip. Registered
before ``/api/user/{id}`` so that ``/api/user/models`` and ``/api/user/self/groups`` are not
taken for user ids.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relaygate.api.auth import Level
from relaygate.api.envelope import ok, raw_json
from relaygate.api.routing import Ctx, RouteTable
from relaygate.api.validation import query_str
from relaygate.channels import ChannelTable
from relaygate.pricing import PriceBook

routes = RouteTable()

TYPE_OPENAI, TYPE_ANTHROPIC, TYPE_GEMINI = 1, 14, 24
MODEL_CREATED = 1626777600  # New API's fixed "created" of its built-in model list
PRICING_VERSION = "relaygate-1"


def channel_type_of(model: str) -> int:
    """The channel type a built-in model name belongs to (New API's adaptor lists)."""
    if model.startswith("claude"):
        return TYPE_ANTHROPIC
    if model.startswith(("gemini", "gemma", "imagen")):
        return TYPE_GEMINI
    return TYPE_OPENAI


def endpoint_types(channel_type: int) -> list[str]:
    if channel_type == TYPE_ANTHROPIC:
        return ["anthropic", "openai"]
    if channel_type == TYPE_GEMINI:
        return ["gemini", "openai"]
    return ["openai"]


def owner_of(model: str) -> str:
    return {TYPE_ANTHROPIC: "anthropic", TYPE_GEMINI: "google"}.get(
        channel_type_of(model), "openai"
    )


def served_models(table: ChannelTable) -> dict[str, set[str]]:
    """model -> the groups an enabled channel serves it in."""
    out: dict[str, set[str]] = {}
    for channel in table.channels.values():
        for model in channel.models:
            out.setdefault(model, set()).update(channel.groups)
    return out


def usable_groups(prices: PriceBook, user_group: str) -> list[str]:
    """New API's ``GetUserUsableGroups``: ``UserUsableGroups`` plus the user's own group."""
    groups = set(prices.usable_groups)
    if user_group:
        groups.add(user_group)
    return sorted(groups)


def group_table(prices: PriceBook, user_group: str) -> dict[str, dict[str, Any]]:
    """``{group: {ratio, desc}}`` for the groups the user may give a token."""
    ratios = prices.group_ratios()
    out: dict[str, dict[str, Any]] = {}
    for group in usable_groups(prices, user_group):
        if group not in ratios and group != user_group:
            continue  # deprecated: usable but without a ratio (New API skips it too)
        desc = prices.group_descriptions.get(group, "Your group" if group == user_group else "")
        out[group] = {"ratio": ratios.get(group, 1.0), "desc": desc}
    return out


@routes.route("GET", "/api/user/models", Level.USER)
async def user_models(ctx: Ctx) -> web.StreamResponse:
    """Models the caller's usable groups serve (the token editor's list); ``?group=``
    narrows it to one group (none if the caller may not use that group)."""
    table = ctx.rt.catalog.channels
    groups = usable_groups(ctx.rt.catalog.prices, ctx.me.group)
    wanted = query_str(ctx.request, "group", 64)
    if wanted:
        return ok(sorted(table.models_for(wanted)) if wanted in groups else [])
    models: set[str] = set()
    for group in groups:
        models |= table.models_for(group)
    return ok(sorted(models))


@routes.route("GET", "/api/user/self/groups", Level.USER)
async def self_groups(ctx: Ctx) -> web.StreamResponse:
    return ok(group_table(ctx.rt.catalog.prices, ctx.me.group))


@routes.route("GET", "/api/user/groups", Level.PUBLIC)
async def public_groups(ctx: Ctx) -> web.StreamResponse:
    """New API serves this without authentication: the groups anyone may pick."""
    return ok(group_table(ctx.rt.catalog.prices, ""))


@routes.route("GET", "/api/group/", Level.ADMIN)
async def groups(ctx: Ctx) -> web.StreamResponse:
    """Every group with a ratio (New API's ``GetGroups``: the ``GroupRatio`` keys)."""
    return ok(sorted(ctx.rt.catalog.prices.group_ratios()))


@routes.route("GET", "/api/models", Level.USER)
async def dashboard_models(ctx: Ctx) -> web.StreamResponse:
    """Channel type -> model names (the channel editor's presets): the built-in price
    table's models by provider, plus what existing channels of each type serve."""
    out: dict[str, set[str]] = {}
    for model in ctx.rt.catalog.prices.models():
        out.setdefault(str(channel_type_of(model)), set()).add(model)
    for channel in ctx.rt.catalog.channels.channels.values():
        out.setdefault(str(channel.type), set()).update(channel.models)
    return ok({k: sorted(v) for k, v in sorted(out.items(), key=lambda kv: int(kv[0]))})


@routes.route("GET", "/api/pricing", Level.PUBLIC)
async def pricing(ctx: Ctx) -> web.StreamResponse:
    """New API's pricing page data: every model an enabled channel serves and that has a
    price (unpriced models cannot be called), with its ratios and groups."""
    prices = ctx.rt.catalog.prices
    items = []
    for model, model_groups in sorted(served_models(ctx.rt.catalog.channels).items()):
        found = prices.model(model)
        if found is None:
            continue
        items.append(
            {
                "model_name": model,
                "quota_type": 1 if found.is_per_call else 0,
                "model_ratio": float(found.model_ratio),
                "model_price": float(found.per_call_usd or 0),
                "completion_ratio": float(found.completion_ratio),
                "owner_by": owner_of(model),
                "enable_groups": sorted(model_groups),
                "supported_endpoint_types": endpoint_types(channel_type_of(model)),
            }
        )
    return raw_json(
        {
            "success": True,
            "message": "",
            "data": items,
            "vendors": [],
            "group_ratio": prices.group_ratios(),
            "usable_group": group_table(prices, ""),
            "supported_endpoint": {},
            "auto_groups": [],
            "pricing_version": PRICING_VERSION,
        }
    )
