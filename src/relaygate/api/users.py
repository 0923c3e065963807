"""``/api/user/``: the caller's own account and access token, and (admins) user management.

Role rules as New API (NEWAPI.md §1.3): an admin cannot act on users of equal or higher
role, only root promotes, and root can be neither disabled, deleted nor demoted. Quota
changes never overwrite ``used``: a top-up adds to ``limit``, and "set remain to X"
(``mode: override``, or ``quota`` in a full update) becomes ``limit := used_live + X``,
committed in PostgreSQL and pushed to the ledger (``Admin.set_user_remain``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relaygate.admin import MAX_QUOTA, ROLE_ADMIN, ROLE_ROOT, ROLE_USER
from relaygate.api.auth import Caller, Level
from relaygate.api.envelope import ApiFail, ok, page
from relaygate.api.routing import Ctx, RouteTable
from relaygate.api.validation import (
    as_int,
    as_str,
    body_id,
    get_id,
    page_query,
    prefix_pattern,
    query_int,
    query_str,
    read_body,
)
from relaygate.api.views import live_user_figures, user_view
from relaygate.store import api_queries as q

routes = RouteTable()

MSG_NOT_FOUND = "User does not exist"
MSG_SAME_LEVEL = "No permission to access users of same or higher level"
MSG_HIGHER_LEVEL = "No permission to update users of same or higher permission level"
MSG_CREATE_HIGHER = "Cannot create users with permission level equal to or higher than yourself"
MSG_DELETE_ROOT = "Cannot delete super administrator account"
MSG_DISABLE_ROOT = "Cannot disable super administrator user"
MSG_DEMOTE_ROOT = "Cannot demote super administrator user"
MSG_ALREADY_ADMIN = "This user is already an administrator"
MSG_ALREADY_COMMON = "This user is already a common user"
MSG_ADMIN_CANNOT_PROMOTE = "Regular administrators cannot promote other users to administrator"
ACTIONS = ("disable", "enable", "delete", "promote", "demote", "add_quota")
MODES = ("add", "subtract", "override")


async def _row(ctx: Ctx, user_id: int) -> Any:
    async with ctx.rt.pool.acquire() as conn:
        row = await conn.fetchrow(q.USER_BY_ID, user_id)
    if row is None:
        raise ApiFail(MSG_NOT_FOUND)
    return row


async def _view(ctx: Ctx, row: Any) -> dict[str, Any]:
    live = await live_user_figures(ctx.rt.accounts, [row])
    return user_view(row, live[int(row["id"])])


def _outranks(me: Caller, target: Any, message: str) -> None:
    """New API: ``myRole <= target.Role && myRole != root`` -> refused."""
    if me.role <= int(target["role"]) and not me.is_root:
        raise ApiFail(message)


def _profile_fields(body: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if body.get("username") is not None:
        out["username"] = as_str(body["username"], "username", 20)
    if body.get("display_name") is not None:
        out["display_name"] = as_str(body["display_name"], "display_name", 20)
    if body.get("password"):  # empty = keep (the dashboard sends "" when unchanged)
        password = as_str(body["password"], "password", 20)
        if len(password) < 8:
            raise ApiFail("password must be 8 to 20 characters")
        out["password"] = password
    if body.get("group") is not None:
        group = as_str(body["group"], "group", 64).strip()
        if not group or "," in group:
            raise ApiFail("group must be a single non-empty group name")
        out["group"] = group
    if body.get("email") is not None:
        out["email"] = as_str(body["email"], "email", 50)
    if body.get("remark") is not None:
        out["remark"] = as_str(body["remark"], "remark", 255)
    if body.get("quota") is not None:
        out["quota"] = as_int(body["quota"], "quota", 0, MAX_QUOTA)
    return out


def _permissions(role: int) -> dict[str, Any]:
    """New API's ``calculateUserPermissions``: which console sidebar areas the role sees."""
    if role >= ROLE_ROOT:
        return {"sidebar_settings": False, "sidebar_modules": {}}
    if role >= ROLE_ADMIN:
        return {"sidebar_settings": True, "sidebar_modules": {"admin": {"setting": False}}}
    return {"sidebar_settings": True, "sidebar_modules": {"admin": False}}


@routes.route("GET", "/api/user/self", Level.USER)
async def get_self(ctx: Ctx) -> web.StreamResponse:
    """The caller's account as New API's ``GetSelf``: the admin's ``remark`` about the user
    is hidden, and the console's ``permissions``/``sidebar_modules`` are added."""
    view = await _view(ctx, await _row(ctx, ctx.me.id))
    view.pop("remark", None)
    view["sidebar_modules"] = ""
    view["permissions"] = _permissions(ctx.me.role)
    return ok(view)


@routes.route("GET", "/api/user/token", Level.USER)
async def rotate_access_token(ctx: Ctx) -> web.StreamResponse:
    """A new access token for the caller; the previous one stops working at once."""
    return ok(await ctx.admin.rotate_access_token(ctx.me.id))


@routes.route("GET", "/api/user/", Level.ADMIN)
async def list_users(ctx: Ctx) -> web.StreamResponse:
    page_no, size = page_query(ctx.request)
    async with ctx.rt.pool.acquire() as conn:
        rows = await conn.fetch(q.USERS_PAGE, size, (page_no - 1) * size)
        total = await conn.fetchval(q.COUNT_USERS)
    live = await live_user_figures(ctx.rt.accounts, rows)
    items = [user_view(r, live[int(r["id"])]) for r in rows]
    return ok(page(page_no, size, int(total), items))


@routes.route("GET", "/api/user/search", Level.ADMIN)
async def search_users(ctx: Ctx) -> web.StreamResponse:
    """``keyword`` is a substring of username, display name or email, or an exact id."""
    page_no, size = page_query(ctx.request)
    keyword = query_str(ctx.request, "keyword")
    group = query_str(ctx.request, "group", 64)
    role = query_int(ctx.request, "role", None, 0, ROLE_ROOT)
    status = query_int(ctx.request, "status", None, 0, 100)
    pattern = "%" + prefix_pattern(keyword) if keyword else None
    exact_id = (
        int(keyword) if keyword.isascii() and keyword.isdigit() and len(keyword) < 18 else None
    )
    args = (pattern, exact_id, group or None, role, status)
    async with ctx.rt.pool.acquire() as conn:
        rows = await conn.fetch(q.SEARCH_USERS, *args, size, (page_no - 1) * size)
        total = await conn.fetchval(q.COUNT_SEARCH_USERS, *args)
    live = await live_user_figures(ctx.rt.accounts, rows)
    items = [user_view(r, live[int(r["id"])]) for r in rows]
    return ok(page(page_no, size, int(total), items))


@routes.route("GET", "/api/user/{id}", Level.ADMIN)
async def get_user(ctx: Ctx) -> web.StreamResponse:
    row = await _row(ctx, get_id(ctx.request.match_info["id"]))
    _outranks(ctx.me, row, MSG_SAME_LEVEL)
    return ok(await _view(ctx, row))


@routes.route("POST", "/api/user/", Level.ADMIN)
async def create_user(ctx: Ctx) -> web.StreamResponse:
    """Creates the user and returns it with its first access token (``data.access_token``,
    shown this once): with no login route, that is how the new user gets API access."""
    body = await read_body(ctx.request)
    if not body.get("username"):
        raise ApiFail("Invalid parameters: username is required")
    fields = _profile_fields(body)
    role = ROLE_USER if body.get("role") is None else as_int(body["role"], "role", 0, ROLE_ROOT)
    if role not in (ROLE_USER, ROLE_ADMIN, ROLE_ROOT):
        raise ApiFail("role must be 1 (user), 10 (admin) or 100 (root)")
    if role >= ctx.me.role:
        raise ApiFail(MSG_CREATE_HIGHER)
    user_id, access = await ctx.admin.create_user(
        fields["username"],
        role,
        fields.get("quota", 0),
        fields.get("group", "default"),
        fields.get("display_name", ""),
        password=fields.get("password", ""),
        email=fields.get("email", ""),
        remark=fields.get("remark", ""),
    )
    view = await _view(ctx, await _row(ctx, user_id))
    view["access_token"] = access
    return ok(view)


@routes.route("PUT", "/api/user/", Level.ADMIN)
async def update_user(ctx: Ctx) -> web.StreamResponse:
    """Profile fields as given; ``quota`` (remain) only when it differs from the live remain,
    so a client echoing the object back does not re-grant what was spent meanwhile."""
    body = await read_body(ctx.request)
    user_id = body_id(body)
    row = await _row(ctx, user_id)
    _outranks(ctx.me, row, MSG_HIGHER_LEVEL)
    changes = _profile_fields(body)
    if "quota" in changes:
        live = await live_user_figures(ctx.rt.accounts, [row])
        limit, used = live[user_id]
        if changes["quota"] == limit - used:
            del changes["quota"]
    await ctx.admin.update_user(user_id, changes)
    return ok(await _view(ctx, await _row(ctx, user_id)))


@routes.route("DELETE", "/api/user/{id}", Level.ADMIN)
async def delete_user(ctx: Ctx) -> web.StreamResponse:
    row = await _row(ctx, get_id(ctx.request.match_info["id"]))
    _outranks(ctx.me, row, MSG_HIGHER_LEVEL)
    if int(row["role"]) >= ROLE_ROOT:
        raise ApiFail(MSG_DELETE_ROOT)
    await ctx.admin.delete_user(int(row["id"]))
    return ok()


@routes.route("POST", "/api/user/manage", Level.ADMIN)
async def manage_user(ctx: Ctx) -> web.StreamResponse:
    body = await read_body(ctx.request)
    user_id = body_id(body)
    action = body.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise ApiFail(f"Invalid parameters: action must be one of {', '.join(ACTIONS)}")
    row = await _row(ctx, user_id)
    _outranks(ctx.me, row, MSG_HIGHER_LEVEL)
    role = int(row["role"])
    admin = ctx.admin
    if action == "disable":
        if role >= ROLE_ROOT:
            raise ApiFail(MSG_DISABLE_ROOT)
        await admin.set_user_status(user_id, 2)
    elif action == "enable":
        await admin.set_user_status(user_id, 1)
    elif action == "delete":
        if role >= ROLE_ROOT:
            raise ApiFail(MSG_DELETE_ROOT)
        await admin.delete_user(user_id)
        return ok()
    elif action == "promote":
        if not ctx.me.is_root:
            raise ApiFail(MSG_ADMIN_CANNOT_PROMOTE)
        if role >= ROLE_ADMIN:
            raise ApiFail(MSG_ALREADY_ADMIN)
        await admin.set_user_role(user_id, ROLE_ADMIN)
    elif action == "demote":
        if role >= ROLE_ROOT:
            raise ApiFail(MSG_DEMOTE_ROOT)
        if role == ROLE_USER:
            raise ApiFail(MSG_ALREADY_COMMON)
        await admin.set_user_role(user_id, ROLE_USER)
    else:
        await _change_quota(ctx, user_id, body)
    return ok(await _view(ctx, await _row(ctx, user_id)))


async def _change_quota(ctx: Ctx, user_id: int, body: dict[str, Any]) -> None:
    mode = body.get("mode", "add")
    if not isinstance(mode, str) or mode not in MODES:
        raise ApiFail(f"Invalid parameters: mode must be one of {', '.join(MODES)}")
    if "value" not in body:
        raise ApiFail("Invalid parameters: value is required")
    value = as_int(body["value"], "value", -MAX_QUOTA, MAX_QUOTA)
    if mode == "override":
        if value < 0:
            raise ApiFail("Quota cannot be negative!")
        await ctx.admin.set_user_remain(user_id, value)
        return
    if value <= 0:
        raise ApiFail("Quota change amount must be greater than zero")
    await ctx.admin.add_user_quota(user_id, value if mode == "add" else -value)
