"""Trailing slashes on ``/api/`` (issue 12 item 2): ``/api/token`` and ``/api/token/`` are the
same route, as are ``/api/token/5`` and ``/api/token/5/``.

New API's router (gin, ``RedirectTrailingSlash``) answers the other form with a 301/307
redirect, which browsers and axios follow but many scripts do not (curl without ``-L``, a
307 on a POST through some proxies). Here the other form is served directly: when a path
under ``/api/`` matches no route, the same request with the slash added or removed is
resolved, and served if that matches. Nothing is registered twice, so the route table, the
OpenAPI document and the metrics keep one name per route; paths that match are untouched
(no cost on the relay, no extra resolution on a hit). A path under ``/api/`` that matches
in neither form answers New API's envelope with 404 (or 405), never plain text.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler
from yarl import URL

from relaygate.api.envelope import fail

PREFIX = "/api/"


def toggled(raw_path: str) -> str:
    return raw_path[:-1] if raw_path.endswith("/") else raw_path + "/"


@web.middleware
async def trailing_slash(request: web.Request, handler: Handler) -> web.StreamResponse:
    miss = request.match_info.http_exception
    if miss is None or miss.status not in (404, 405) or not request.path.startswith(PREFIX):
        return await handler(request)
    raw = request.rel_url.raw_path
    url = URL.build(path=toggled(raw), query_string=request.rel_url.raw_query_string, encoded=True)
    alt = request.clone(rel_url=url)
    match = await request.app.router.resolve(alt)
    if match.http_exception is not None:
        return not_found(request, miss.status)
    match.add_app(request.app)
    match.freeze()
    alt._match_info = match  # as aiohttp's own normalize_path_middleware does
    return await match.handler(alt)


def not_found(request: web.Request, status: int) -> web.Response:
    """An unknown ``/api/`` path (or method) in New API's envelope rather than aiohttp's
    plain text; the message names the request as New API's ``RelayNotFound`` does."""
    return fail(f"Invalid URL ({request.method} {request.path})", status)
