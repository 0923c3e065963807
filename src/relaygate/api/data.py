"""Usage charts (``/api/data/``, ``/api/data/self``) and the options view (``/api/option/``),
issue 12 item 4.

New API keeps a separate ``quota_data`` table that the relay updates as it serves; here
the same rows are derived when asked, from the PostgreSQL ``logs`` table the flusher
writes: the relay's hot path does nothing for the charts. Rows are hourly buckets
(``created_at`` = the hour's first second), as New API's.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from relaygate.api.auth import Level
from relaygate.api.envelope import ApiFail, ok
from relaygate.api.routing import Ctx, RouteTable
from relaygate.api.validation import query_int, query_str
from relaygate.store import api_queries as q

routes = RouteTable()

MAX_SPAN = 2_592_000  # New API's one-month limit on /api/data/self
DEFAULT_SPAN = 7 * 86400
MSG_SPAN = "Time span cannot exceed 1 month"
# option keys never shown, even to root (New API hides the same suffixes)
SECRET_SUFFIXES = ("Token", "Secret", "Key", "secret", "api_key")


def _range(ctx: Ctx) -> tuple[int, int]:
    """``start_timestamp``/``end_timestamp``; a missing end is now and a missing start a
    week before the end (New API reads missing values as 0, an empty chart)."""
    end = query_int(ctx.request, "end_timestamp", None, 0)
    end = int(time.time()) if end is None or end == 0 else end
    start = query_int(ctx.request, "start_timestamp", None, 0)
    start = max(end - DEFAULT_SPAN, 0) if start is None or start == 0 else start
    if end < start:
        raise ApiFail("invalid time range")
    if end - start > MAX_SPAN:
        raise ApiFail(MSG_SPAN)
    return start, end


def _rows(rows: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "id": 0,
            "user_id": int(r["user_id"]),
            "username": r["username"],
            "model_name": r["model_name"],
            "created_at": int(r["created_at"]),
            "token_used": int(r["token_used"]),
            "count": int(r["count"]),
            "quota": int(r["quota"]),
        }
        for r in rows
    ]


@routes.route("GET", "/api/data/self", Level.USER)
async def self_data(ctx: Ctx) -> web.StreamResponse:
    start, end = _range(ctx)
    async with ctx.rt.pool.acquire() as conn:
        rows = await conn.fetch(q.QUOTA_DATA_OF_USER, ctx.me.id, start, end)
    return ok(_rows(rows))


@routes.route("GET", "/api/data/", Level.ADMIN)
async def all_data(ctx: Ctx) -> web.StreamResponse:
    """Per model and hour over every user, or one user's with ``?username=``. Capped at a
    month like the self view, so one chart cannot scan the whole log history."""
    start, end = _range(ctx)
    username = query_str(ctx.request, "username", 64)
    async with ctx.rt.pool.acquire() as conn:
        if username:
            rows = await conn.fetch(q.QUOTA_DATA_OF_USERNAME, username, start, end)
        else:
            rows = await conn.fetch(q.QUOTA_DATA_ALL, start, end)
    return ok(_rows(rows))


@routes.route("GET", "/api/option/", Level.ROOT)
async def options(ctx: Ctx) -> web.StreamResponse:
    """New API's ``GetOptions``: ``[{key, value}]`` of the stored options (the price
    tables, groups, ...), secrets left out. Changing them: ``relaygate admin set-option``
    (``PUT /api/option/`` is not served: docs/api.md)."""
    async with ctx.rt.pool.acquire() as conn:
        rows = await conn.fetch(q.OPTIONS_ALL)
    return ok(
        [
            {"key": r["key"], "value": r["value"]}
            for r in rows
            if not r["key"].endswith(SECRET_SUFFIXES)
        ]
    )
