"""Route tables for the management API, and the wrapper every handler runs inside.

Each module declares its routes with ``@routes.route(method, path, level)``. The wrapper
authenticates for the level, hands the handler a ``Ctx``, and turns every refusal into New
API's envelope: ``ApiFail`` and ``AdminError`` as they are, infrastructure failures as a
generic database-error message (details go to the log, never to the caller). The table
doubles as the list the OpenAPI test and the role matrix test walk.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from aiohttp import web
from redis.exceptions import RedisError

from relaygate.admin import Admin, AdminError
from relaygate.api.auth import Caller, Level, authenticate
from relaygate.api.envelope import ApiFail, fail
from relaygate.appkeys import RUNTIME, STATS
from relaygate.runtime import Runtime

log = logging.getLogger(__name__)

MSG_DB_ERROR = "Database error, please try again later"


@dataclass(frozen=True, slots=True)
class Ctx:
    request: web.Request
    rt: Runtime
    caller: Caller | None

    @property
    def me(self) -> Caller:
        """The authenticated caller (every non-public route has one)."""
        if self.caller is None:
            raise ApiFail("Unauthorized", 401)
        return self.caller

    @property
    def admin(self) -> Admin:
        return Admin(
            self.rt.pool,
            self.rt.accounts,
            allow_loopback_upstreams=self.rt.settings.allow_loopback_upstreams,
        )


Handler = Callable[[Ctx], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    level: Level
    handler: Handler


class RouteTable:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(self, method: str, path: str, level: Level) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(Route(method, path, level, handler))
            return handler

        return register


def wrap(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def endpoint(request: web.Request) -> web.StreamResponse:
        rt = request.app[RUNTIME]
        started = time.perf_counter()
        try:
            response = await _answer(request, rt)
        except web.HTTPException as exc:
            request.app[STATS].record(route.path, exc.status, time.perf_counter() - started)
            raise
        request.app[STATS].record(route.path, response.status, time.perf_counter() - started)
        return response

    async def _answer(request: web.Request, rt: Runtime) -> web.StreamResponse:
        try:
            caller = None
            if route.level not in (Level.PUBLIC, Level.KEY):
                caller = await authenticate(request, rt, route.level)
            return await route.handler(Ctx(request, rt, caller))
        except ApiFail as exc:
            return exc.response()
        except AdminError as exc:
            return fail(str(exc))
        except (asyncpg.PostgresError, RedisError, OSError) as exc:
            log.error("%s %s failed: %s", route.method, route.path, type(exc).__name__)
            return fail(MSG_DB_ERROR, 500)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("%s %s failed", route.method, route.path)
            return fail("Internal error", 500)

    endpoint.__name__ = route.handler.__name__
    return endpoint


def any_segment(path: str) -> str:
    """``/api/token/{id}`` as ``/api/token/{id:[^/]+}``: aiohttp's default pattern refuses
    braces, so ``/api/token/{}`` would get a plain-text 404 instead of the handler's own
    "invalid id" answer in New API's envelope."""
    return re.sub(r"\{(\w+)\}", r"{\1:[^/]+}", path)


def install(app: web.Application, tables: list[RouteTable]) -> list[Route]:
    """Register every route (HEAD is not added for GET: New API has none)."""
    installed = []
    for table in tables:
        for route in table.routes:
            app.router.add_route(route.method, any_segment(route.path), wrap(route))
            installed.append(route)
    return installed
