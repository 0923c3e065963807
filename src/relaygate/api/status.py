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
    """The fields New API's console reads at start (``controller/misc.go GetStatus``):
    branding, how to show quota, which login and registration methods exist. Features
    relaygate does not have (OAuth, Turnstile, passkeys, drawing, tasks, top-up) are off."""
    settings = ctx.rt.settings
    return ok(
        {
            "version": VERSION,
            "start_time": int(ctx.rt.started_at),
            "system_name": "relaygate",
            "logo": "",
            "footer_html": "",
            "server_address": "",
            "docs_link": "",
            "theme": "default",
            "quota_per_unit": QUOTA_PER_UNIT,
            "display_in_currency": True,
            "quota_display_type": "USD",
            "custom_currency_symbol": "",
            "custom_currency_exchange_rate": 1,
            "usd_exchange_rate": 1,
            "price": 1,
            "stripe_unit_price": 0,
            "email_verification": False,
            "github_oauth": False,
            "github_client_id": "",
            "discord_oauth": False,
            "discord_client_id": "",
            "linuxdo_oauth": False,
            "linuxdo_client_id": "",
            "linuxdo_minimum_trust_level": 0,
            "telegram_oauth": False,
            "telegram_bot_name": "",
            "wechat_login": False,
            "wechat_qrcode": "",
            "oidc_enabled": False,
            "oidc_client_id": "",
            "oidc_authorization_endpoint": "",
            "passkey_login": False,
            "turnstile_check": False,
            "turnstile_site_key": "",
            "register_enabled": settings.register_enabled,
            "password_login_enabled": True,
            "password_register_enabled": settings.register_enabled,
            "self_use_mode_enabled": False,
            "demo_site_enabled": False,
            "default_use_auto_group": False,
            "enable_batch_update": False,
            "enable_drawing": False,
            "enable_task": False,
            "enable_data_export": True,
            "data_export_default_time": "hour",
            "default_collapse_sidebar": False,
            "mj_notify_enabled": False,
            "chats": [],
            "api_info_enabled": False,
            "uptime_kuma_enabled": False,
            "announcements_enabled": False,
            "faq_enabled": False,
            "HeaderNavModules": "",
            "SidebarModulesAdmin": "",
            "setup": True,
            "user_agreement_enabled": False,
            "privacy_policy_enabled": False,
            "checkin_enabled": False,
        }
    )


@routes.route("GET", "/api/setup", Level.PUBLIC)
async def setup(ctx: Ctx) -> web.StreamResponse:
    """New API's console asks at start whether the instance is set up: always, here (the
    first root user comes from ``relaygate admin create-user``, not from the browser)."""
    return ok({"status": True, "root_init": True, "database_type": "PostgreSQL"})


async def _empty_content(ctx: Ctx) -> web.StreamResponse:
    """Notice, about page and home page content: New API answers ``""`` when none is set,
    and relaygate has none."""
    return ok("")


for _path in ("/api/notice", "/api/about", "/api/home_page_content"):
    routes.route("GET", _path, Level.PUBLIC)(_empty_content)


@routes.route("GET", "/api/uptime/status", Level.PUBLIC)
async def uptime_status(ctx: Ctx) -> web.StreamResponse:
    """No Uptime Kuma integration: no status groups."""
    return ok([])
