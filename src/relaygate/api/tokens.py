"""``/api/token/``: the caller's own API tokens (New API's token routes, NEWAPI.md §1.2).

A user only ever sees and changes their own tokens: every query is filtered by the caller's
id, and a token of someone else gets the same answer as one that does not exist. Keys are
stored hashed, so the full key exists only in the create response. Writes go through
``Admin`` (PostgreSQL, then the ledger hash and an invalidation), so the next relay request
on every instance sees them; quota edits move ``limit`` only, never ``used``.
"""

from __future__ import annotations

import math
import time
from typing import Any

from aiohttp import web

from relaygate.admin import MAX_QUOTA, AdminError
from relaygate.api.auth import Level
from relaygate.api.envelope import ApiFail, ok, page
from relaygate.api.routing import Ctx, RouteTable
from relaygate.api.validation import (
    MAX_ID,
    as_bool,
    as_int,
    as_str,
    as_str_list,
    as_text_lines,
    body_id,
    get_id,
    like_pattern,
    page_query,
    prefix_pattern,
    query_str,
    read_body,
)
from relaygate.api.views import (
    TOKEN_ENABLED,
    TOKEN_EXHAUSTED,
    TOKEN_EXPIRED,
    effective_status,
    live_token_figures,
    log_view,
    token_view,
)
from relaygate.credentials import hash_secret, strip_key
from relaygate.store import api_queries as q

routes = RouteTable()

QUOTA_PER_CREDIT = 2500  # 200 credits = $1 = 500000 quota
MAX_CREDITS = MAX_QUOTA // QUOTA_PER_CREDIT
MAX_USER_TOKENS = 1000
MAX_EXPIRY = 253_402_300_799  # 9999-12-31
RECENT_ACTIVITY = 10
MAX_BATCH = 100

MSG_NOT_FOUND = "token not found"
MSG_NAME_TOO_LONG = "Token name is too long (at most 50 bytes)"
MSG_QUOTA_NEGATIVE = "Quota value cannot be negative"
MSG_QUOTA_MAX = f"Quota value exceeds valid range, maximum is {MAX_QUOTA}"
MSG_EXPIRED_CANNOT_ENABLE = (
    "Token has expired and cannot be enabled. "
    "Please modify the expiration time or set it to never expire"
)
MSG_EXHAUSTED_CANNOT_ENABLE = (
    "Token quota is exhausted and cannot be enabled. "
    "Please modify the remaining quota or set it to unlimited"
)
MSG_KEY_SHOWN_ONCE = (
    "The full key is shown only once, in the response that created the token: keys are "
    "stored hashed and cannot be retrieved. Create a new token if the key was lost."
)


def _quota(value: Any, name: str) -> int:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ApiFail(f"{name} must be an integer")
    if value < 0:
        raise ApiFail(f"{name}: {MSG_QUOTA_NEGATIVE}")
    if value > MAX_QUOTA:
        raise ApiFail(f"{name}: {MSG_QUOTA_MAX}")
    return value


def _credits(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiFail(f"{name} must be a number")
    if value < 0:
        raise ApiFail(f"{name}: {MSG_QUOTA_NEGATIVE}")
    if value > MAX_CREDITS:
        raise ApiFail(f"{name} exceeds valid range, maximum is {MAX_CREDITS}")
    return round(value * QUOTA_PER_CREDIT)


MSG_MODELS_CONFLICT = (
    "models and model_limits disagree: they are the same allowlist (an array and New API's "
    "comma-separated string); send one of them, or both with the same models"
)


def _names(value: Any, name: str) -> list[str]:
    names = [] if value is None else as_str_list(value, name)
    return [n.strip() for n in names if n.strip()]


def model_list(body: dict[str, Any], stored: list[str] | None) -> list[str] | None:
    """The model allowlist a body asks for, from ``models`` (array) and/or
    ``model_limits`` (New API's string); None when it asks for none.

    GET returns both, so a client that edits one and PUTs the object back sends the other
    unchanged: against the ``stored`` list, the one that changed wins. Both changed to
    different lists (or, on create, both given and different) is a conflict, refused.
    """
    given = {k: _names(body[k], k) for k in ("models", "model_limits") if k in body}
    if not given:
        return None
    if len(given) == 1:
        return next(iter(given.values()))
    models, limits = given["models"], given["model_limits"]
    if set(models) == set(limits):
        return models
    if stored is not None:
        if set(models) == set(stored):
            return limits
        if set(limits) == set(stored):
            return models
    raise ApiFail(MSG_MODELS_CONFLICT)


def parse_token_fields(
    body: dict[str, Any], stored_models: list[str] | None = None
) -> dict[str, Any]:
    """Validated changes in ``Admin.update_token``'s vocabulary, from New API's token object
    and the seeds' extensions (``models`` array, ``*_credits``). Absent fields are absent;
    unknown and read-only fields (key, used_quota, user_id, times) are ignored as in New API.
    ``stored_models`` (updates): the token's current allowlist, see ``model_list``.
    """
    out: dict[str, Any] = {}
    if "name" in body:
        name = as_str(body["name"], "name", 200)
        if len(name.encode()) > 50:
            raise ApiFail(MSG_NAME_TOO_LONG)
        out["name"] = name
    unlimited = False
    if body.get("unlimited_quota") is not None:
        unlimited = as_bool(body["unlimited_quota"], "unlimited_quota")
        out["unlimited_quota"] = unlimited
    if body.get("remain_quota") is not None:
        try:
            out["remain_quota"] = _quota(body["remain_quota"], "remain_quota")
        except ApiFail:
            if not unlimited:  # New API skips the quota checks for unlimited tokens
                raise
    for field in ("daily_quota", "monthly_quota"):
        if body.get(field) is not None:
            out[field] = _quota(body[field], field)
    # credits override quota when both are given (seed 004)
    for credits, field in (
        ("remain_credits", "remain_quota"),
        ("daily_credits", "daily_quota"),
        ("monthly_credits", "monthly_quota"),
    ):
        if body.get(credits) is not None:
            out[field] = _credits(body[credits], credits)
    if body.get("expired_time") is not None:
        expired = as_int(body["expired_time"], "expired_time", -(2**62), MAX_EXPIRY)
        if expired < -1:
            raise ApiFail("expired_time must be -1 (never expires) or a unix timestamp")
        # 0 would mean "expired in 1970" (Go's zero value); nobody means that: never.
        out["expired_time"] = -1 if expired == 0 else expired
    if body.get("model_limits_enabled") is not None:
        out["model_limits_enabled"] = as_bool(body["model_limits_enabled"], "model_limits_enabled")
    models = model_list(body, stored_models)
    if models is not None:
        out["model_limits"] = models
    if "allow_ips" in body:
        out["allow_ips"] = as_text_lines(body["allow_ips"], "allow_ips")
    if body.get("group") is not None:
        group = as_str(body["group"], "group", 64)
        if "," in group:
            raise ApiFail("group must be a single group name")
        out["group"] = group.strip()
    return out


def check_group(ctx: Ctx, group: str) -> None:
    """A user may give a token their own group or one of ``UserUsableGroups`` (New API's
    rule); the relay checks again on every request, so a group taken away later stops
    working too. An unchanged group is not re-checked on update (New API's console
    re-sends it with every edit)."""
    reason = ctx.rt.catalog.prices.group_refusal(ctx.me.group, group)
    if reason == "deprecated":
        raise ApiFail(f"Group {group} has been deprecated")
    if reason is not None:
        raise ApiFail(f"No access to group {group}")


async def _own_row(ctx: Ctx, token_id: int) -> Any:
    async with ctx.rt.pool.acquire() as conn:
        row = await conn.fetchrow(q.TOKEN_OF_USER, token_id, ctx.me.id)
    if row is None:
        raise ApiFail(MSG_NOT_FOUND)
    return row


async def _view(ctx: Ctx, row: Any) -> dict[str, Any]:
    live = await live_token_figures(ctx.rt.accounts, [row])
    return token_view(row, live[int(row["id"])])


async def _views(ctx: Ctx, rows: list[Any]) -> list[dict[str, Any]]:
    live = await live_token_figures(ctx.rt.accounts, rows)
    return [token_view(r, live[int(r["id"])]) for r in rows]


@routes.route("GET", "/api/token/", Level.USER)
async def list_tokens(ctx: Ctx) -> web.StreamResponse:
    page_no, size = page_query(ctx.request)
    async with ctx.rt.pool.acquire() as conn:
        rows = await conn.fetch(q.TOKENS_OF_USER, ctx.me.id, size, (page_no - 1) * size)
        total = await conn.fetchval(q.COUNT_TOKENS_OF_USER, ctx.me.id)
    return ok(page(page_no, size, int(total), await _views(ctx, rows)))


@routes.route("GET", "/api/token/search", Level.USER)
async def search_tokens(ctx: Ctx) -> web.StreamResponse:
    """``keyword`` matches names (a prefix, or a LIKE pattern when it holds ``%``); ``token``
    matches a full key exactly (keys are hashed, so partial keys cannot be searched)."""
    page_no, size = page_query(ctx.request)
    keyword = query_str(ctx.request, "keyword")
    token = query_str(ctx.request, "token", 200).strip()
    name_pattern: str | None = None
    if keyword:
        pattern, is_like = like_pattern(keyword, "keyword")
        name_pattern = pattern if is_like else prefix_pattern(keyword)
    key_hash: bytes | None = None
    if token:
        if "%" in token:
            raise ApiFail(
                "token: keys are stored hashed, so only a full key can be searched (no %)"
            )
        key_hash = hash_secret(strip_key(token))
    args = (ctx.me.id, name_pattern, key_hash)
    async with ctx.rt.pool.acquire() as conn:
        rows = await conn.fetch(q.SEARCH_TOKENS, *args, size, (page_no - 1) * size)
        total = await conn.fetchval(q.COUNT_SEARCH_TOKENS, *args)
    return ok(page(page_no, size, int(total), await _views(ctx, rows)))


@routes.route("GET", "/api/token/{id}", Level.USER)
async def get_token(ctx: Ctx) -> web.StreamResponse:
    """The token plus ``recent_activity``: its last usage log rows (the detail view of the
    seeds). Activity ids are ordinals, as in every self log view."""
    token_id = get_id(ctx.request.match_info["id"])
    row = await _own_row(ctx, token_id)
    view = await _view(ctx, row)
    async with ctx.rt.pool.acquire() as conn:
        logs = await conn.fetch(q.TOKEN_RECENT_LOGS, token_id, ctx.me.id, RECENT_ACTIVITY)
    view["recent_activity"] = [log_view(r, ordinal=i + 1) for i, r in enumerate(logs)]
    return ok(view)


@routes.route("POST", "/api/token/", Level.USER)
async def create_token(ctx: Ctx) -> web.StreamResponse:
    body = await read_body(ctx.request)
    if "name" not in body:
        raise ApiFail("Invalid parameters: name is required")
    fields = parse_token_fields(body)
    check_group(ctx, fields.get("group", ""))
    models = fields.get("model_limits")
    try:
        created = await ctx.admin.create_token(
            ctx.me.id,
            fields["name"],
            remain_quota=fields.get("remain_quota", 0),
            unlimited=fields.get("unlimited_quota", False),
            models=models,
            model_limits_enabled=fields.get("model_limits_enabled"),
            allow_ips=fields.get("allow_ips"),
            expired_time=fields.get("expired_time", -1),
            group=fields.get("group", ""),
            daily_quota=fields.get("daily_quota", 0),
            monthly_quota=fields.get("monthly_quota", 0),
            max_tokens=MAX_USER_TOKENS,
        )
    except AdminError as exc:
        raise ApiFail(str(exc)) from None
    row = await _own_row(ctx, created.id)
    view = await _view(ctx, row)
    # The only time the full key is ever shown. As seed 004 documents: 48 characters, used
    # with the "sk-" prefix (the relay accepts it with or without the prefix).
    view["key"] = created.key
    return ok(view)


def _is_status_only(ctx: Ctx, body: dict[str, Any]) -> bool:
    if ctx.request.query.get("status_only"):
        return True
    return "status" in body and set(body) <= {"id", "status"}


def _full_update_status(
    body: dict[str, Any], row: Any, changes: dict[str, Any], remain: int
) -> None:
    """A full-object PUT whose ``status`` differs from the token's current one changes it
    (New API ignores ``status`` there, a silent no-op for a GET-modify-PUT); the same
    ``status`` echoed back changes nothing. Enabling is checked against the values this
    PUT leaves, so extending the expiry and enabling can be one call."""
    if body.get("status") is None:
        return
    status = as_int(body["status"], "status", 1, 4)
    current = effective_status(row, remain)
    if status == current:
        return
    if status in (TOKEN_EXPIRED, TOKEN_EXHAUSTED):
        raise ApiFail("status can be set to 1 (enabled) or 2 (disabled); 3 and 4 are computed")
    if status == TOKEN_ENABLED:
        expiry = changes.get("expired_time", int(row["expired_time"]))
        if expiry != -1 and expiry <= time.time():
            raise ApiFail(MSG_EXPIRED_CANNOT_ENABLE)
        unlimited = changes.get("unlimited_quota", bool(row["unlimited_quota"]))
        if not unlimited and changes.get("remain_quota", remain) <= 0:
            raise ApiFail(MSG_EXHAUSTED_CANNOT_ENABLE)
    changes["status"] = status


@routes.route("PUT", "/api/token/", Level.USER)
async def update_token(ctx: Ctx) -> web.StreamResponse:
    """New API's update: the full object with ``id`` (fields left out keep their value), or
    ``?status_only=1`` with ``status``. Expired or exhausted tokens cannot be re-enabled
    before their expiry or quota is fixed (New API's rule)."""
    body = await read_body(ctx.request)
    token_id = body_id(body)
    row = await _own_row(ctx, token_id)
    limit, used = (await live_token_figures(ctx.rt.accounts, [row]))[token_id]
    if _is_status_only(ctx, body):
        if "status" not in body:
            raise ApiFail("Invalid parameters: status is required")
        status = as_int(body["status"], "status", 1, 4)
        if status == TOKEN_ENABLED:
            current = effective_status(row, limit - used)
            if current == TOKEN_EXPIRED:
                raise ApiFail(MSG_EXPIRED_CANNOT_ENABLE)
            if current == TOKEN_EXHAUSTED:
                raise ApiFail(MSG_EXHAUSTED_CANNOT_ENABLE)
        changes: dict[str, Any] = {"status": status}
    else:
        stored = [m for m in row["model_limits"].split(",") if m]
        changes = parse_token_fields(body, stored)
        _full_update_status(body, row, changes, limit - used)
        if changes.get("remain_quota") == limit - used:
            del changes["remain_quota"]  # echoed back unchanged: nothing to pin
        if "model_limits" in changes and "model_limits_enabled" not in changes:
            changes["model_limits_enabled"] = bool(changes["model_limits"])
        if changes.get("group", row["group"]) != row["group"]:
            check_group(ctx, changes["group"])
    try:
        await ctx.admin.update_token(token_id, changes, user_id=ctx.me.id)
    except AdminError as exc:
        raise ApiFail(str(exc)) from None
    return ok(await _view(ctx, await _own_row(ctx, token_id)))


@routes.route("DELETE", "/api/token/{id}", Level.USER)
async def delete_token(ctx: Ctx) -> web.StreamResponse:
    token_id = get_id(ctx.request.match_info["id"])
    await ctx.admin.delete_token(token_id, user_id=ctx.me.id)
    return ok()


@routes.route("POST", "/api/token/batch", Level.USER)
async def delete_tokens(ctx: Ctx) -> web.StreamResponse:
    body = await read_body(ctx.request)
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids:
        raise ApiFail("Invalid parameters: ids must be a non-empty array of token ids")
    if len(ids) > MAX_BATCH:
        raise ApiFail(f"Too many items in batch request, maximum is {MAX_BATCH}")
    wanted = sorted({as_int(i, "ids", 1, MAX_ID) for i in ids})
    async with ctx.rt.pool.acquire() as conn:
        owned = [int(r["id"]) for r in await conn.fetch(q.OWNED_TOKEN_IDS, wanted, ctx.me.id)]
    deleted = 0
    for token_id in owned:
        try:
            await ctx.admin.delete_token(token_id, user_id=ctx.me.id)
            deleted += 1
        except AdminError:
            pass  # deleted concurrently
    return ok(deleted)


@routes.route("POST", "/api/token/{id}/key", Level.USER)
async def token_key(ctx: Ctx) -> web.StreamResponse:
    """New API reveals the key here; relaygate cannot, by design (keys are stored hashed)."""
    token_id = get_id(ctx.request.match_info["id"])
    await _own_row(ctx, token_id)
    raise ApiFail(MSG_KEY_SHOWN_ONCE)
