"""The operator quota view behind the console's admin page: every user's tokens ordered by
spend over a recent window, with live used/remaining from the quota ledger.

relaygate's own route (New API has none): ``GET /api/operator/tokens?window=<seconds>&limit=``.
Spend per token comes from the consume logs, so it trails the ledger by the flusher's delay
(a second or so); used and remaining are the ledger's live figures, as on every token view.
"""

from __future__ import annotations

import time

from aiohttp import web

from relaygate.api.auth import Level
from relaygate.api.envelope import ok
from relaygate.api.routing import Ctx, RouteTable
from relaygate.api.validation import query_int
from relaygate.api.views import live_token_figures, token_view
from relaygate.store import api_queries as q

routes = RouteTable()

DEFAULT_WINDOW = 3600
MAX_WINDOW = 31 * 86400
DEFAULT_LIMIT = 50
MAX_LIMIT = 200


@routes.route("GET", "/api/operator/tokens", Level.ADMIN)
async def tokens_by_spend(ctx: Ctx) -> web.StreamResponse:
    window = query_int(ctx.request, "window", DEFAULT_WINDOW, 60, MAX_WINDOW) or DEFAULT_WINDOW
    limit = query_int(ctx.request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT) or DEFAULT_LIMIT
    since = int(time.time()) - window
    async with ctx.rt.pool.acquire() as conn:
        rows = await conn.fetch(q.TOKENS_BY_SPEND, since, limit)
    live = await live_token_figures(ctx.rt.accounts, rows)
    items = []
    for row in rows:
        view = token_view(row, live[int(row["id"])])
        spent = int(row["spent"])
        view.update(
            username=row["username"],
            requests=int(row["requests"]),
            spent=spent,
            spend_per_minute=spent * 60 / window,
        )
        items.append(view)
    return ok({"window": window, "items": items})
