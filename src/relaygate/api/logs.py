"""``/api/log/``: usage logs and their sums (NEWAPI.md §1.5, §5).

``/api/log/self`` is always restricted to the caller's own rows, whatever the filters say;
as in New API its ids are ordinals (offset + i + 1) and ``channel_name`` is blank. Counts
stop at 10,000 rows so that a broad filter cannot scan the whole table for a page total.
Filters become parameters of fixed SQL expressions (``api_queries.Where``).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from relaygate.api.auth import Level
from relaygate.api.envelope import ok, page
from relaygate.api.routing import Ctx, RouteTable
from relaygate.api.validation import (
    MAX_ID,
    like_pattern,
    page_query,
    query_int,
    query_str,
)
from relaygate.api.views import log_view
from relaygate.store import api_queries as q

routes = RouteTable()

TYPE_CONSUME = 2
MAX_TIMESTAMP = 253_402_300_799
RATE_WINDOW = 60


def _text(where: q.Where, column: str, value: str, name: str) -> None:
    """Exact match, or LIKE when the value holds ``%`` (New API's rule)."""
    if not value:
        return
    pattern, is_like = like_pattern(value, name)
    if is_like:
        where.add(f"{column} LIKE {{}} ESCAPE '!'", pattern)
    else:
        where.add(f"{column} = {{}}", value)


def build_where(
    ctx: Ctx, *, admin: bool, with_time: bool = True, only_type: int | None = None
) -> q.Where:
    req = ctx.request
    where = q.Where()
    if not admin:
        where.add("l.user_id = {}", ctx.me.id)
    log_type = query_int(req, "type", 0, 0, 100)
    if only_type is not None:
        where.add("l.type = {}", only_type)
    elif log_type:
        where.add("l.type = {}", log_type)
    start = query_int(req, "start_timestamp", 0, 0, MAX_TIMESTAMP)
    end = query_int(req, "end_timestamp", 0, 0, MAX_TIMESTAMP)
    if with_time:
        if start:
            where.add("l.created_at >= {}", start)
        if end:
            where.add("l.created_at <= {}", end)
    else:
        where.add("l.created_at >= {}", int(time.time()) - RATE_WINDOW)
    _text(where, "l.token_name", query_str(req, "token_name"), "token_name")
    _text(where, "l.model_name", query_str(req, "model_name", 255), "model_name")
    group = query_str(req, "group", 64)
    if group:
        where.add('l."group" = {}', group)
    request_id = query_str(req, "request_id")
    if request_id:
        where.add("l.request_id = {}", request_id)
    if admin:
        _text(where, "l.username", query_str(req, "username", 64), "username")
        channel = query_int(req, "channel", 0, 0, MAX_ID)
        if channel:
            where.add("l.channel_id = {}", channel)
    return where


async def _logs(ctx: Ctx, admin: bool) -> web.StreamResponse:
    page_no, size = page_query(ctx.request)
    offset = (page_no - 1) * size
    sql, args = q.logs_page(build_where(ctx, admin=admin), size, offset, admin)
    count_sql, count_args = q.logs_count(build_where(ctx, admin=admin))
    async with ctx.rt.pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
        total = await conn.fetchval(count_sql, *count_args)
    if admin:
        items = [log_view(r, admin=True) for r in rows]
    else:
        items = [log_view(r, ordinal=offset + i + 1) for i, r in enumerate(rows)]
    return ok(page(page_no, size, int(total), items))


async def _stat(ctx: Ctx, admin: bool) -> web.StreamResponse:
    """``quota`` sums consume rows over the filters; ``rpm``/``tpm`` count the last 60 s
    (New API ignores the time filters for those)."""
    sum_sql, sum_args = q.logs_quota_sum(build_where(ctx, admin=admin, only_type=TYPE_CONSUME))
    rate_sql, rate_args = q.logs_rate(
        build_where(ctx, admin=admin, with_time=False, only_type=TYPE_CONSUME)
    )
    async with ctx.rt.pool.acquire() as conn:
        quota = await conn.fetchval(sum_sql, *sum_args)
        rate: Any = await conn.fetchrow(rate_sql, *rate_args)
    return ok({"quota": int(quota), "rpm": int(rate["rpm"]), "tpm": int(rate["tpm"])})


@routes.route("GET", "/api/log/", Level.ADMIN)
async def all_logs(ctx: Ctx) -> web.StreamResponse:
    return await _logs(ctx, admin=True)


@routes.route("GET", "/api/log/self", Level.USER)
async def self_logs(ctx: Ctx) -> web.StreamResponse:
    return await _logs(ctx, admin=False)


@routes.route("GET", "/api/log/stat", Level.ADMIN)
async def all_stat(ctx: Ctx) -> web.StreamResponse:
    return await _stat(ctx, admin=True)


@routes.route("GET", "/api/log/self/stat", Level.USER)
async def self_stat(ctx: Ctx) -> web.StreamResponse:
    return await _stat(ctx, admin=False)
