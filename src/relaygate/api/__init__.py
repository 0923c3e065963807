"""Management API (New API-compatible): ``/api/...``, plus the OpenAI-legacy billing routes.

One module per resource, each with its own ``RouteTable``; ``add_api_routes`` installs them
all. Specific paths come before ``{id}`` paths in each table, because aiohttp matches routes
in registration order.
"""

from __future__ import annotations

from aiohttp import web

from relaygate.api import (
    account,
    catalog,
    channels,
    data,
    logs,
    openapi,
    operator,
    slashes,
    status,
    tokens,
    unsupported,
    usage,
    users,
)
from relaygate.api.routing import Route, RouteTable, install

TABLES: list[RouteTable] = [
    status.routes,
    unsupported.routes,
    openapi.routes,
    usage.routes,
    tokens.routes,
    account.routes,
    catalog.routes,
    users.routes,
    channels.routes,
    logs.routes,
    data.routes,
    operator.routes,
]


def all_routes() -> list[Route]:
    return [route for table in TABLES for route in table.routes]


def add_api_routes(app: web.Application) -> None:
    """Registered by the app factory."""
    install(app, TABLES)
    app.middlewares.append(slashes.trailing_slash)
