"""Management API (New API-compatible): ``/api/...``."""

from __future__ import annotations

from aiohttp import web


def add_api_routes(app: web.Application) -> None:
    """Registered by the app factory; the routes live in this sub-package."""
