"""CORS for browser apps that call the gateway directly (issue 12 item 6).

Relay routes (``/v1/``, ``/v1beta/``) allow ``RELAYGATE_CORS_ORIGINS`` (``*`` by default, as
New API does: they authenticate with a key, never a cookie, so no credentials are allowed).
``/api/`` allows only ``RELAYGATE_API_CORS_ORIGINS`` (none by default), echoed back with
``Access-Control-Allow-Credentials`` since the console may use a session cookie; ``*`` is
refused there at start (config). Other paths (health, metrics) send no CORS headers.

A preflight is answered by an ``OPTIONS`` route that ``install`` adds to every existing
resource once all routes are registered (an unknown path stays a 404): no
middleware, so no extra coroutine frame on every relay request. The headers of real answers
are added in ``on_response_prepare``, which also covers streams, whose headers go out
before the handler returns.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson
from aiohttp import web

from relaygate.config import Settings
from relaygate.relay import dialects

RELAY_PREFIXES = ("/v1/", "/v1beta/")
API_PREFIX = "/api/"
PREFLIGHT_MAX_AGE = "86400"  # a day: browsers cap it lower anyway (Chromium: 2 h)
# Header names only (RFC 9110 tokens): anything else in a preflight is refused, not echoed.
_HEADER_LIST = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+(\s*,\s*[!#$%&'*+.^_`|~0-9A-Za-z-]+)*$")
EXPOSED = "X-Oneapi-Request-Id, x-relaygate-overhead-ms"


@dataclass(frozen=True, slots=True)
class Policy:
    origins: frozenset[str]
    methods: str
    credentials: bool

    def allows(self, origin: str) -> bool:
        return "*" in self.origins or origin in self.origins

    def allow_origin(self, origin: str) -> str:
        return "*" if "*" in self.origins else origin


CORS_POLICIES = web.AppKey("cors_policies", tuple)


def policies(settings: Settings) -> tuple[Policy, Policy]:
    relay = Policy(frozenset(settings.cors_origins), "GET, POST, OPTIONS", False)
    api = Policy(
        frozenset(settings.api_cors_origins), "GET, POST, PUT, PATCH, DELETE, OPTIONS", True
    )
    return relay, api


def _policy_for(request: web.Request) -> Policy | None:
    relay, api = request.app[CORS_POLICIES]
    path = request.path
    if path.startswith(RELAY_PREFIXES):
        return relay if relay.origins else None
    if path.startswith(API_PREFIX):
        return api if api.origins else None
    return None


def _refusal(request: web.Request, message: str) -> web.Response:
    if request.path.startswith(API_PREFIX):
        body = orjson.dumps({"success": False, "message": message})
    else:
        body = dialects.error_body(
            dialects.OPENAI, 403, message, "invalid_request_error", "cors_refused"
        )
    return web.Response(status=403, body=body, content_type="application/json")


def preflight(request: web.Request, policy: Policy | None, origin: str) -> web.Response:
    if policy is None or not policy.allows(origin):
        return _refusal(request, f"Origin {origin!r} is not allowed to call this gateway.")
    wanted = request.headers.get("Access-Control-Request-Headers", "").strip()
    if wanted and not _HEADER_LIST.match(wanted):
        return _refusal(request, "Access-Control-Request-Headers is not a list of header names.")
    headers = {
        "Access-Control-Allow-Origin": policy.allow_origin(origin),
        "Access-Control-Allow-Methods": policy.methods,
        "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
        "Vary": "Origin, Access-Control-Request-Headers",
    }
    if wanted:
        headers["Access-Control-Allow-Headers"] = wanted
    if policy.credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    return web.Response(status=204, headers=headers)


async def options(request: web.Request) -> web.Response:
    """Any ``OPTIONS``: a preflight (``Origin`` and ``Access-Control-Request-Method``) is
    answered by the path's policy; a plain OPTIONS gets the methods relay routes take."""
    origin = request.headers.get("Origin")
    if origin and "Access-Control-Request-Method" in request.headers:
        return preflight(request, _policy_for(request), origin)
    return web.Response(status=204, headers={"Allow": "GET, POST, OPTIONS"})


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """The CORS headers of an actual (not preflight) answer to an allowed origin."""
    origin = request.headers.get("Origin")
    if not origin or "Access-Control-Allow-Origin" in response.headers:  # a preflight's
        return
    policy = _policy_for(request)
    if policy is None or not policy.allows(origin):
        return
    response.headers["Access-Control-Allow-Origin"] = policy.allow_origin(origin)
    response.headers["Access-Control-Expose-Headers"] = EXPOSED
    if policy.credentials:
        response.headers["Access-Control-Allow-Credentials"] = "true"
    if "*" not in policy.origins:
        response.headers.add("Vary", "Origin")


def install(app: web.Application, settings: Settings) -> None:
    """Call after every other route is added: each route's resource gets an OPTIONS route,
    so a preflight reaches every path that exists, and a path that does not stays a 404 (a
    catch-all OPTIONS route would turn every unknown path into a 405)."""
    app[CORS_POLICIES] = policies(settings)
    for resource in list(app.router.resources()):
        if not isinstance(resource, web.Resource) or isinstance(resource, web.StaticResource):
            continue
        if any(route.method in ("OPTIONS", "*") for route in resource):
            continue
        resource.add_route("OPTIONS", options)
    app.on_response_prepare.append(add_headers)
