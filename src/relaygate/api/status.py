"""``GET /api/status``: the public instance summary New API clients read at start-up
(they take ``quota_per_unit`` from it to show quota as money)."""

from __future__ import annotations

from importlib import metadata

from aiohttp import web

from relaygate.api.auth import Level
from relaygate.api.envelope import ok
from relaygate.api.routing import Ctx, RouteTable
from relaygate.pricing import QUOTA_PER_UNIT

routes = RouteTable()


def _version() -> str:
    try:
        return metadata.version("relaygate")
    except metadata.PackageNotFoundError:
        return "dev"


VERSION = _version()


@routes.route("GET", "/api/status", Level.PUBLIC)
async def status(ctx: Ctx) -> web.StreamResponse:
    return ok(
        {
            "version": VERSION,
            "start_time": int(ctx.rt.started_at),
            "system_name": "relaygate",
            "quota_per_unit": QUOTA_PER_UNIT,
            "display_in_currency": True,
            "quota_display_type": "USD",
            "email_verification": False,
            "github_oauth": False,
            "turnstile_check": False,
            "register_enabled": False,
            "password_login_enabled": False,
        }
    )
