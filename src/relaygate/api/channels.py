"""``/api/channel/`` (admins): upstream channels (NEWAPI.md §1.4, §6).

The upstream key is write-only: it is accepted on create and update and never returned.
Every write publishes ``chan:<id>`` on the invalidation channel (``Admin.announce_channel``),
so every relay rebuilds its channel table before its next request can pick the old one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from relaygate import health
from relaygate.admin import AdminError
from relaygate.api.auth import Level
from relaygate.api.catalog import MODEL_CREATED, owner_of, served_models
from relaygate.api.envelope import ApiFail, fail, ok, page
from relaygate.api.routing import Ctx, RouteTable
from relaygate.api.validation import (
    as_int,
    as_str,
    as_str_list,
    body_id,
    get_id,
    like_pattern,
    page_query,
    prefix_pattern,
    query_int,
    query_str,
    read_body,
)
from relaygate.api.views import channel_view
from relaygate.channels import channel_from_row
from relaygate.store import api_queries as q

routes = RouteTable()

MSG_NOT_FOUND = "Channel does not exist"
DEFAULT_BASE_URL = "https://api.openai.com"
log = logging.getLogger(__name__)
MAX_PRIORITY = 10**9
MAX_KEYS_PER_BATCH = 100


def _mapping(value: Any) -> str:
    """``model_mapping``: a JSON object of requested -> upstream model, as text or object."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        as_str(value, "model_mapping", 20_000, lines=True)
        try:
            value = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise ApiFail("model_mapping must be a JSON object of model names") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ApiFail("model_mapping must be a JSON object mapping model names to model names")
    return orjson.dumps(value).decode()


def parse_channel_fields(body: dict[str, Any]) -> dict[str, Any]:
    """Validated changes in ``Admin.update_channel``'s vocabulary; absent fields stay absent."""
    out: dict[str, Any] = {}
    if body.get("type") is not None:
        out["type"] = as_int(body["type"], "type", 0, 1000)
    if body.get("name") is not None:
        out["name"] = as_str(body["name"], "name", 100)
    if body.get("key") is not None:
        out["key"] = as_str(body["key"], "key", 10_000, lines=True).strip()
    if body.get("base_url") is not None:
        base_url = as_str(body["base_url"], "base_url", 500).strip()
        if base_url and not base_url.startswith(("http://", "https://")):
            raise ApiFail("base_url must start with http:// or https://")
        out["base_url"] = base_url or DEFAULT_BASE_URL
    if body.get("models") is not None:
        models = [m.strip() for m in as_str_list(body["models"], "models") if m.strip()]
        if not models:
            raise ApiFail("models cannot be empty")
        out["models"] = models
    if body.get("group") is not None:
        groups = [g.strip() for g in as_str_list(body["group"], "group", 50, 64) if g.strip()]
        out["group"] = ",".join(groups) or "default"
    if body.get("priority") is not None:
        out["priority"] = as_int(body["priority"], "priority", -MAX_PRIORITY, MAX_PRIORITY)
    if body.get("weight") is not None:
        out["weight"] = as_int(body["weight"], "weight", 0, 1_000_000)
    if body.get("status") is not None:
        out["status"] = as_int(body["status"], "status", 1, 3)
    if "model_mapping" in body:
        out["model_mapping"] = _mapping(body["model_mapping"])
    if body.get("test_model") is not None:
        out["test_model"] = as_str(body["test_model"], "test_model", 255).strip()
    if body.get("other") is not None:
        out["other"] = as_str(body["other"], "other", 1000).strip()
    return out


async def _row(ctx: Ctx, channel_id: int) -> Any:
    async with ctx.rt.pool.acquire() as conn:
        row = await conn.fetchrow(q.CHANNEL_BY_ID, channel_id)
    if row is None:
        raise ApiFail(MSG_NOT_FOUND)
    return row


async def _page(ctx: Ctx, filters: tuple[Any, ...]) -> web.StreamResponse:
    page_no, size = page_query(ctx.request)
    async with ctx.rt.pool.acquire() as conn:
        rows = await conn.fetch(q.CHANNELS_PAGE, *filters, size, (page_no - 1) * size)
        total = await conn.fetchval(q.COUNT_CHANNELS, *filters)
        counts = await conn.fetch(q.CHANNEL_TYPE_COUNTS)
    type_counts = {str(r["type"]): int(r["n"]) for r in counts}
    type_counts["all"] = sum(int(r["n"]) for r in counts)
    items = [channel_view(r) for r in rows]
    return ok(page(page_no, size, int(total), items, type_counts=type_counts))


@routes.route("GET", "/api/channel/", Level.ADMIN)
async def list_channels(ctx: Ctx) -> web.StreamResponse:
    status = query_int(ctx.request, "status", None, 0, 3)
    type_ = query_int(ctx.request, "type", None, 0, 1000)
    group = query_str(ctx.request, "group", 64) or None
    return await _page(ctx, (status, type_, group, None, None, None))


@routes.route("GET", "/api/channel/search", Level.ADMIN)
async def search_channels(ctx: Ctx) -> web.StreamResponse:
    """``keyword``: name or base URL prefix (a LIKE pattern with ``%``), or an exact id."""
    keyword = query_str(ctx.request, "keyword")
    group = query_str(ctx.request, "group", 64) or None
    model = query_str(ctx.request, "model", 255) or None
    status = query_int(ctx.request, "status", None, 0, 3)
    pattern: str | None = None
    exact: int | None = None
    if keyword:
        like, is_like = like_pattern(keyword, "keyword")
        pattern = like if is_like else prefix_pattern(keyword)
        if keyword.isascii() and keyword.isdigit() and len(keyword) < 18:
            exact = int(keyword)
    return await _page(ctx, (status, None, group, pattern, exact, model))


@dataclass(frozen=True, slots=True)
class TestResult:
    ok: bool
    message: str
    elapsed: float
    model: str
    status: int = 0
    enabled: bool = False  # an auto-disabled channel was re-enabled by this test


async def run_channel_test(ctx: Ctx, row: Any, model_arg: str) -> TestResult:
    """One small request in the channel type's own dialect (health.run_test); records the
    latency and re-enables a channel that was disabled automatically."""
    channel = channel_from_row(row)
    model = model_arg or row["test_model"] or (sorted(channel.models) or ["gpt-4o-mini"])[0]
    result = await health.run_test(ctx.rt, channel, model)
    if result.answered:
        await ctx.admin.record_channel_test(int(row["id"]), int(result.seconds * 1000))
    if result.failure is not None:
        return TestResult(False, f"Channel test failed: {result.failure}", result.seconds, model)
    enabled = await health.enable_after_test(ctx.rt, int(row["id"]))
    return TestResult(True, "", result.seconds, model, 200, enabled)


@routes.route("GET", "/api/channel/test/{id}", Level.ADMIN)
async def test_channel(ctx: Ctx) -> web.StreamResponse:
    """One small chat completion through the channel; reports ``time`` in seconds (float)
    at the top level, as New API does, and records the latency on the channel."""
    channel_id = get_id(ctx.request.match_info["id"])
    model_arg = query_str(ctx.request, "model", 255)
    async with ctx.rt.pool.acquire() as conn:
        row = await conn.fetchrow(q.CHANNEL_FOR_TEST, channel_id)
    if row is None:
        raise ApiFail(MSG_NOT_FOUND)
    result = await run_channel_test(ctx, row, model_arg)
    elapsed = round(result.elapsed, 3)
    if not result.ok:
        return fail(result.message, time=elapsed)
    data = {
        "time": elapsed,
        "model": result.model,
        "status_code": result.status,
        "enabled": result.enabled,
    }
    return ok(data, time=elapsed)


_testing_all: set[int] = set()  # id() of the runtimes whose "test all" is running


async def _test_all(ctx: Ctx, rows: list[Any]) -> None:
    try:
        for row in rows:
            result = await run_channel_test(ctx, row, "")
            if not result.ok:
                log.info("channel %s test failed: %s", row["id"], result.message)
    finally:
        _testing_all.discard(id(ctx.rt))


@routes.route("GET", "/api/channel/test", Level.ADMIN)
async def test_all_channels(ctx: Ctx) -> web.StreamResponse:
    """New API's ``TestAllChannels``: starts testing every enabled channel in the
    background (one at a time, recording each latency) and answers at once; a second
    call while a run is going is refused."""
    if id(ctx.rt) in _testing_all:
        raise ApiFail("A channel test run is already in progress")
    async with ctx.rt.pool.acquire() as conn:
        rows = await conn.fetch(q.CHANNELS_FOR_TEST_ALL)
    _testing_all.add(id(ctx.rt))
    ctx.rt.background.spawn(_test_all(ctx, list(rows)))
    return ok()


@routes.route("GET", "/api/channel/models", Level.ADMIN)
async def channel_models(ctx: Ctx) -> web.StreamResponse:
    """New API's built-in model list, as OpenAI model objects (the channel editor's
    "fill in models" list): every model relaygate has a price for."""
    return ok(
        [
            {"id": m, "object": "model", "created": MODEL_CREATED, "owned_by": owner_of(m)}
            for m in ctx.rt.catalog.prices.models()
        ]
    )


@routes.route("GET", "/api/channel/models_enabled", Level.ADMIN)
async def enabled_models(ctx: Ctx) -> web.StreamResponse:
    """Models some enabled channel serves."""
    return ok(sorted(served_models(ctx.rt.catalog.channels)))


@routes.route("DELETE", "/api/channel/disabled", Level.ADMIN)
async def delete_disabled_channels(ctx: Ctx) -> web.StreamResponse:
    """Deletes every disabled channel (manually or automatically); ``data`` = how many."""
    async with ctx.rt.pool.acquire() as conn:
        ids = [int(r["id"]) for r in await conn.fetch(q.DISABLED_CHANNEL_IDS)]
    deleted = 0
    for channel_id in ids:
        try:
            await ctx.admin.delete_channel(channel_id)
            deleted += 1
        except AdminError:
            pass  # deleted concurrently
    return ok(deleted)


@routes.route("GET", "/api/channel/{id}", Level.ADMIN)
async def get_channel(ctx: Ctx) -> web.StreamResponse:
    return ok(channel_view(await _row(ctx, get_id(ctx.request.match_info["id"]))))


@routes.route("POST", "/api/channel/", Level.ADMIN)
async def create_channel(ctx: Ctx) -> web.StreamResponse:
    """New API's ``{mode, channel}`` body (``single``, or ``batch``: one channel per line of
    ``key``), or the channel object itself."""
    body = await read_body(ctx.request)
    mode = body.get("mode", "single")
    if mode not in ("single", "batch"):
        raise ApiFail("mode must be single or batch")
    inner = body.get("channel", body)
    if not isinstance(inner, dict):
        raise ApiFail("channel must be a JSON object")
    fields = parse_channel_fields(inner)
    key = fields.get("key", "")
    if not key:
        raise ApiFail("channel key cannot be empty")
    if "models" not in fields:
        raise ApiFail("models cannot be empty")
    keys = [k.strip() for k in key.split("\n") if k.strip()] if mode == "batch" else [key]
    if len(keys) > MAX_KEYS_PER_BATCH:
        raise ApiFail(f"Too many items in batch request, maximum is {MAX_KEYS_PER_BATCH}")
    ids = []
    for one in keys:
        ids.append(
            await ctx.admin.create_channel(
                fields.get("name", ""),
                fields.get("base_url", DEFAULT_BASE_URL),
                one,
                fields["models"],
                group=fields.get("group", "default"),
                priority=fields.get("priority", 0),
                weight=fields.get("weight", 0),
                type_=fields.get("type", 1),
                model_mapping=fields.get("model_mapping", ""),
                status=fields.get("status", 1),
                test_model=fields.get("test_model", ""),
                other=fields.get("other", ""),
            )
        )
    if mode == "batch":
        return ok({"ids": ids})
    return ok(channel_view(await _row(ctx, ids[0])))


@routes.route("PUT", "/api/channel/", Level.ADMIN)
async def update_channel(ctx: Ctx) -> web.StreamResponse:
    """Fields left out keep their value; an empty or absent ``key`` keeps the stored key.
    ``?status_only=1`` writes only ``status``."""
    body = await read_body(ctx.request)
    channel_id = body_id(body)
    if ctx.request.query.get("status_only"):
        if body.get("status") is None:
            raise ApiFail("Invalid parameters: status is required")
        changes: dict[str, Any] = {"status": as_int(body["status"], "status", 1, 3)}
    else:
        changes = parse_channel_fields(body)
    await ctx.admin.update_channel(channel_id, changes)
    return ok(channel_view(await _row(ctx, channel_id)))


@routes.route("POST", "/api/channel/{id}/status", Level.ADMIN)
async def set_channel_status(ctx: Ctx) -> web.StreamResponse:
    channel_id = get_id(ctx.request.match_info["id"])
    body = await read_body(ctx.request)
    if body.get("status") is None:
        raise ApiFail("Invalid parameters: status is required")
    await ctx.admin.update_channel(channel_id, {"status": as_int(body["status"], "status", 1, 3)})
    return ok(channel_view(await _row(ctx, channel_id)))


@routes.route("DELETE", "/api/channel/{id}", Level.ADMIN)
async def delete_channel(ctx: Ctx) -> web.StreamResponse:
    await ctx.admin.delete_channel(get_id(ctx.request.match_info["id"]))
    return ok()
