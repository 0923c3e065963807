"""Accounts: login, logout, registration, session refresh and the caller's own profile
(issue 12 item 1), as New API's ``controller/user.go`` answers them (NA-0718, the last
session-cookie build, whose console sends a cookie plus ``New-Api-User``).

Sessions live in Redis (``relaygate.sessions``; docs/api.md "Accounts and sessions").
Passwords are scrypt-hashed off the event loop (``relaygate.admin.passwords``). A failed
login gives one message whatever the reason (unknown user, wrong password, no password,
disabled), as New API does, and an unknown user costs a hash too, so the answer time does
not tell which usernames exist.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from aiohttp import web

from relaygate.admin import ROLE_USER, AdminError
from relaygate.admin.passwords import verify_password
from relaygate.api.auth import Level
from relaygate.api.envelope import ApiFail, ok
from relaygate.api.routing import Ctx, RouteTable
from relaygate.api.validation import CONTROL, check_text, read_body
from relaygate.relay.auth import client_ip
from relaygate.sessions import COOKIE_NAME
from relaygate.store import api_queries as q

routes = RouteTable()

MSG_INVALID_PARAMS = "Invalid parameters"
MSG_LOGIN_FAILED = "Username or password is incorrect, or user has been banned"
MSG_REGISTER_DISABLED = "New user registration has been disabled by administrator"
MSG_USER_EXISTS = "Username already exists or has been deleted"
MSG_TOO_MANY_ATTEMPTS = "Too many login attempts, please try again later"
MSG_PASSWORD_UNSET = (
    "This account has no password set. Please use password reset or contact an "
    "administrator to reset it."
)
MSG_ORIGINAL_PASSWORD = "Original password is incorrect"
MSG_NOT_SESSION = "Session refresh needs a login session (log in first)"
MSG_UNSUPPORTED_SETTING = (
    "sidebar_modules and language are console settings relaygate does not store; "
    "keep them in the browser"
)

# verified against when the username is unknown, so that case costs a hash as well
_DUMMY_HASH = "scrypt$" + "00" * 16 + "$" + "00" * 64


def _credentials(body: dict[str, Any]) -> tuple[str, str]:
    username, password = body.get("username"), body.get("password")
    if not isinstance(username, str) or not isinstance(password, str):
        raise ApiFail(MSG_INVALID_PARAMS)
    username = username.strip()
    if not username or not password or len(username) > 64 or len(password) > 128:
        raise ApiFail(MSG_INVALID_PARAMS)
    if not CONTROL.isdisjoint(username) or any("\ud800" <= c <= "\udfff" for c in username):
        raise ApiFail(MSG_INVALID_PARAMS)  # no stored name holds one (and NUL broke the query)
    return username, password


def _is_tls(ctx: Ctx) -> bool:
    """HTTPS as the browser sees it: our own TLS, or ``X-Forwarded-Proto: https`` from a
    trusted proxy (believed from nobody else)."""
    if ctx.request.secure:
        return True
    proto = ctx.request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if proto != "https":
        return False
    peer = ctx.request.transport.get_extra_info("peername") if ctx.request.transport else None
    try:
        address = ipaddress.ip_address(peer[0]) if peer else None
    except ValueError:
        return False
    return address is not None and any(address in n for n in ctx.rt.settings.trusted_proxies)


def _with_cookie(ctx: Ctx, response: web.Response, session_id: str) -> web.Response:
    response.set_cookie(
        COOKIE_NAME,
        session_id,
        max_age=ctx.rt.sessions.ttl,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=_is_tls(ctx),
    )
    return response


def _login_data(row: Any) -> dict[str, Any]:
    """New API's ``setupLogin`` answer."""
    return {
        "id": int(row["id"]),
        "username": row["username"],
        "display_name": row["display_name"],
        "role": int(row["role"]),
        "status": int(row["status"]),
        "group": row["group"],
    }


async def _limit(ctx: Ctx, *keys: str) -> None:
    ip = client_ip(ctx.request, ctx.rt.settings.trusted_proxies)
    if not await ctx.rt.login_limiter.allow(f"ip:{ip}", *keys):
        raise ApiFail(MSG_TOO_MANY_ATTEMPTS, 429)


@routes.route("POST", "/api/user/login", Level.PUBLIC)
async def login(ctx: Ctx) -> web.StreamResponse:
    try:
        body = await read_body(ctx.request)
    except ApiFail:
        raise ApiFail(MSG_INVALID_PARAMS) from None
    username, password = _credentials(body)
    await _limit(ctx, f"user:{username.casefold()}")
    async with ctx.rt.pool.acquire() as conn:
        row = await conn.fetchrow(q.USER_LOGIN, username)
    stored = row["password_hash"] if row is not None and row["password_hash"] else _DUMMY_HASH
    matches = await verify_password(password, stored)
    if row is None or not row["password_hash"] or not matches or int(row["status"]) != 1:
        raise ApiFail(MSG_LOGIN_FAILED)
    session_id = await ctx.rt.sessions.create(int(row["id"]))
    return _with_cookie(ctx, ok(_login_data(row)), session_id)


@routes.route("GET", "/api/user/logout", Level.PUBLIC)
async def logout(ctx: Ctx) -> web.StreamResponse:
    """Ends the session server-side (the cookie is refused from now on, even if a copy of
    it survives) and clears the cookie. Without a session it still succeeds, as in New API."""
    session_id = ctx.request.cookies.get(COOKIE_NAME, "")
    if session_id:
        await ctx.rt.sessions.revoke(session_id)
    response = ok()
    response.del_cookie(COOKIE_NAME, path="/")
    return response


@routes.route("POST", "/api/user/register", Level.PUBLIC)
async def register(ctx: Ctx) -> web.StreamResponse:
    """Self-registration, off unless ``RELAYGATE_REGISTER_ENABLED`` (New API's default is
    on). A new user is a common user in group ``default`` with quota 0, as New API's
    ``QuotaForNewUser`` default; the console logs in afterwards."""
    if not ctx.rt.settings.register_enabled:
        raise ApiFail(MSG_REGISTER_DISABLED)
    try:
        body = await read_body(ctx.request)
    except ApiFail:
        raise ApiFail(MSG_INVALID_PARAMS) from None
    username, password = _credentials(body)
    await _limit(ctx)
    if len(username) > 20:
        raise ApiFail("Invalid input: username must be at most 20 characters")
    if not 8 <= len(password) <= 20:
        raise ApiFail("Invalid input: password must be 8 to 20 characters")
    try:
        await ctx.admin.create_user(username, ROLE_USER, 0, "default", username, password=password)
    except AdminError as exc:
        if "already taken" in str(exc):
            raise ApiFail(MSG_USER_EXISTS) from None
        raise ApiFail(f"Invalid input: {exc}") from None
    return ok()


@routes.route("POST", "/api/user/auth/refresh", Level.USER)
async def refresh(ctx: Ctx) -> web.StreamResponse:
    """Swaps the session for a fresh one (a new id, a full lifetime; the old id stops
    working) and answers the login data: a console refreshes a long-open tab with it."""
    me = ctx.me
    if not me.session:
        raise ApiFail(MSG_NOT_SESSION)
    await ctx.rt.sessions.revoke(me.session)
    async with ctx.rt.pool.acquire() as conn:
        row = await conn.fetchrow(q.USER_BY_ID, me.id)
    if row is None:
        raise ApiFail("User does not exist")
    session_id = await ctx.rt.sessions.create(me.id)
    return _with_cookie(ctx, ok(_login_data(row)), session_id)


def _self_changes(body: dict[str, Any]) -> dict[str, Any]:
    """What ``PUT /api/user/self`` may change: username, display name, password (New API's
    ``UpdateSelf`` takes exactly these)."""
    if "sidebar_modules" in body or "language" in body:
        raise ApiFail(MSG_UNSUPPORTED_SETTING)
    out: dict[str, Any] = {}
    for field in ("username", "display_name"):
        value = body.get(field)
        if value is None or value == "":
            continue
        if not isinstance(value, str) or len(value.strip()) > 20:
            raise ApiFail(f"Invalid input: {field} must be a string of at most 20 characters")
        check_text(value, field)
        out[field] = value.strip()
    password = body.get("password")
    if password not in (None, ""):
        if not isinstance(password, str) or not 8 <= len(password) <= 20:
            raise ApiFail("Invalid input: password must be 8 to 20 characters")
        out["password"] = password
    return out


@routes.route("PUT", "/api/user/self", Level.USER)
async def update_self(ctx: Ctx) -> web.StreamResponse:
    """Profile edit and password change. A new password needs ``original_password``
    (rate-limited like login, so the session cannot be used to guess it) and ends the
    user's other sessions; the caller's own session stays."""
    body = await read_body(ctx.request)
    changes = _self_changes(body)
    me = ctx.me
    if "password" in changes:
        original = body.get("original_password")
        await _limit(ctx, f"user-id:{me.id}")
        async with ctx.rt.pool.acquire() as conn:
            stored = await conn.fetchval(q.USER_PASSWORD_HASH, me.id)
        if not stored:
            raise ApiFail(MSG_PASSWORD_UNSET)
        if not isinstance(original, str) or not await verify_password(original, stored):
            raise ApiFail(MSG_ORIGINAL_PASSWORD)
    if changes:
        await ctx.admin.update_user(me.id, changes)
    if "password" in changes:
        await ctx.rt.sessions.revoke_user(me.id, keep=me.session or None)
    return ok()
