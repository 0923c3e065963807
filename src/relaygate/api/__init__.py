"""Management API (New API-compatible): ``/api/...``, plus the OpenAI-legacy billing routes.

One module per resource, each with its own ``RouteTable``; ``add_api_routes`` installs them
all. Specific paths come before ``{id}`` paths in each table, because aiohttp matches routes
in registration order.
"""

from __future__ import annotations

from aiohttp import web

from relaygate.api import channels, logs, openapi, operator, status, tokens, usage, users
from relaygate.api.routing import Route, RouteTable, install

TABLES: list[RouteTable] = [
    status.routes,
    openapi.routes,
    usage.routes,
    tokens.routes,
    users.routes,
    channels.routes,
    logs.routes,
    operator.routes,
]


def all_routes() -> list[Route]:
    return [route for table in TABLES for route in table.routes]


def add_api_routes(app: web.Application) -> None:
    """Registered by the app factory."""
    install(app, TABLES)
