"""Dashboard authentication: a system access token or a login session cookie, plus the
``New-Api-User`` header.

Follows New API's 2025 to mid-2026 ``UserAuth``/``AdminAuth``/``RootAuth`` (NEWAPI.md §1.1),
which is what existing scripts send. Checks run in New API's order: credentials, then
``New-Api-User``, then banned, then role. Missing credentials and a malformed or mismatched
``New-Api-User`` are HTTP 401. A *missing* ``New-Api-User`` is 401 on admin and root routes
but tolerated on user-level routes, where the access token alone names the user: the seed
documents' token examples (which win over New API) send no such header, and the seeds say
only "some endpoints" require it. Current New API dropped the header altogether; an unknown access token, a banned user and too low a
role are HTTP 200 with ``success: false``. Access tokens are stored as SHA-256 hashes, so a
lookup is one indexed query and the token itself is never stored, compared or logged.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from relaygate.admin import ROLE_ADMIN, ROLE_ROOT, ROLE_USER
from relaygate.api.envelope import ApiFail
from relaygate.api.validation import is_decimal
from relaygate.credentials import hash_secret
from relaygate.relay.auth import client_ip
from relaygate.runtime import Runtime
from relaygate.sessions import COOKIE_NAME
from relaygate.store import api_queries as q

MSG_NO_TOKEN = "Unauthorized, not logged in and no access token provided"
MSG_BAD_TOKEN = "Unauthorized, invalid access token"
MSG_TOO_MANY_FAILURES = "Too many failed authentications from your address; try again in a minute"
MSG_NO_USER_HEADER = "Unauthorized, New-Api-User header not provided"
MSG_BAD_USER_HEADER = "Unauthorized, New-Api-User header format error"
MSG_USER_MISMATCH = "Unauthorized, New-Api-User does not match logged in user"
MSG_BANNED = "User has been banned"
MSG_NO_PRIVILEGE = "Unauthorized, insufficient privileges"
MSG_INVALID_USER = "Unauthorized, invalid user information"


class Level(enum.IntEnum):
    """Who may call a route; the numbers are New API's role thresholds."""

    PUBLIC = 0
    USER = ROLE_USER
    ADMIN = ROLE_ADMIN
    ROOT = ROLE_ROOT
    KEY = -1  # authenticated by an sk- token, not an access token


@dataclass(frozen=True, slots=True)
class Caller:
    id: int
    username: str
    role: int
    group: str
    session: str = ""  # the login session's id when authenticated by cookie

    @property
    def is_root(self) -> bool:
        return self.role >= ROLE_ROOT


def access_token_of(request: web.Request) -> str:
    """New API strips the first ``Bearer `` and takes the rest; the bare token works too."""
    raw = request.headers.get("Authorization", "")
    value = raw.strip()
    if value[:7].lower() == "bearer ":
        value = value[7:].strip()
    return value


async def authenticate(request: web.Request, rt: Runtime, level: Level) -> Caller:
    """An access token (``Authorization``) if one is sent, else the login session cookie."""
    token = access_token_of(request)
    if not token:
        session_id = request.cookies.get(COOKIE_NAME, "")
        if session_id:
            return await _by_session(request, rt, level, session_id)
        raise ApiFail(MSG_NO_TOKEN, 401)
    if len(token) > 512:
        raise ApiFail(MSG_BAD_TOKEN)
    ip = client_ip(request, rt.settings.trusted_proxies)
    if rt.auth_failures.blocked(ip):
        raise ApiFail(MSG_TOO_MANY_FAILURES, 429)
    async with rt.pool.acquire() as conn:
        row = await conn.fetchrow(q.USER_BY_ACCESS_TOKEN, hash_secret(token))
    if row is None:
        rt.auth_failures.failed(ip)
        raise ApiFail(MSG_BAD_TOKEN)
    header = request.headers.get("New-Api-User")
    if header is None or header.strip() == "":
        if level >= Level.ADMIN:
            raise ApiFail(MSG_NO_USER_HEADER, 401)
        header = str(row["id"])  # user-level routes: the access token names the user
    return _admit(row, header, level, "")


async def _by_session(request: web.Request, rt: Runtime, level: Level, session_id: str) -> Caller:
    """Session callers always send ``New-Api-User`` (New API's console does): a custom
    header cannot be sent cross-site without a CORS preflight, so the header doubles as
    the CSRF guard that the cookie alone would not give."""
    session = await rt.sessions.lookup(session_id)
    if session is None:
        raise ApiFail(MSG_NO_TOKEN, 401)  # expired or logged out: "not logged in"
    async with rt.pool.acquire() as conn:
        row = await conn.fetchrow(q.USER_AUTH_BY_ID, session.user_id)
    if row is None:
        await rt.sessions.revoke(session_id)
        raise ApiFail(MSG_NO_TOKEN, 401)
    header = request.headers.get("New-Api-User")
    if header is None or header.strip() == "":
        raise ApiFail(MSG_NO_USER_HEADER, 401)
    return _admit(row, header, level, session_id)


def _admit(row: Any, header: str, level: Level, session_id: str) -> Caller:
    """New API's checks after the credentials, in its order: header, banned, role, info."""
    header = header.strip()
    if not is_decimal(header) or len(header) > 18:
        raise ApiFail(MSG_BAD_USER_HEADER, 401)
    if int(header) != int(row["id"]):
        raise ApiFail(MSG_USER_MISMATCH, 401)
    if int(row["status"]) != 1:
        raise ApiFail(MSG_BANNED)
    role = int(row["role"])
    if role < int(level):
        raise ApiFail(MSG_NO_PRIVILEGE)
    if not row["username"] or role not in (ROLE_USER, ROLE_ADMIN, ROLE_ROOT):
        raise ApiFail(MSG_INVALID_USER)
    return Caller(int(row["id"]), row["username"], role, row["group"], session_id)
