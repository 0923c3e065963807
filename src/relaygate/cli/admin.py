"""``relaygate admin …``: one coroutine per subcommand, each returning the JSON it prints.

Each runs against an :class:`relaygate.admin.Admin` built for the call (a small pool and a
Redis client, closed afterwards); errors become one line via :class:`Fatal`.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from relaygate.config import Settings
from relaygate.serving import Fatal, describe_start_error, run

Result = dict[str, Any]
Action = Callable[[Any, argparse.Namespace], Awaitable[Result]]


async def _with_admin(
    settings: Settings, action: Action, args: argparse.Namespace
) -> dict[str, Any]:
    from relaygate.accounts import Accounts
    from relaygate.admin import LEDGER_ERRORS, Admin, AdminError
    from relaygate.app import redis_client
    from relaygate.keys import KeyScheme
    from relaygate.ledger import Scripts
    from relaygate.store.db import create_pool

    redis = redis_client(settings)
    try:
        # Both first, whatever the command: one that only writes PostgreSQL (create-user)
        # would otherwise succeed against a deployment whose ledger is down, and one that
        # reads Redis midway would fail after its PostgreSQL write.
        pool = await create_pool(settings.database_url, max_size=2)
    except Exception as exc:
        await redis.aclose()
        raise Fatal(describe_start_error(exc, settings)) from None
    try:
        await redis.ping()
    except Exception as exc:
        await pool.close()
        await redis.aclose()
        raise Fatal(describe_start_error(exc, settings)) from None
    try:
        accounts = Accounts(
            pool, redis, Scripts.load(), KeyScheme(settings.key_prefix, settings.shards)
        )
        admin = Admin(pool, accounts, allow_loopback_upstreams=settings.allow_loopback_upstreams)
        return await action(admin, args)
    except AdminError as exc:
        raise Fatal(str(exc)) from None
    except LEDGER_ERRORS as exc:  # one line, never a traceback
        raise Fatal(describe_start_error(exc, settings)) from None
    finally:
        await pool.close()
        await redis.aclose()


def read_password(stream: Any) -> str:
    """The first line of ``stream`` without its line ending: the password for login."""
    return str(stream.readline()).rstrip("\r\n")


async def create_user(admin: Any, args: argparse.Namespace) -> Result:
    """With ``--password-stdin`` the user can log in to a console (``/api/user/login``);
    without, only the access token printed here gives API access."""
    import sys

    from relaygate.admin import ROLES

    password = read_password(sys.stdin) if getattr(args, "password_stdin", False) else ""
    uid, access = await admin.create_user(
        args.username, ROLES[args.role], args.quota, args.group, password=password
    )
    return {"id": uid, "username": args.username, "role": ROLES[args.role], "access_token": access}


async def create_channel(admin: Any, args: argparse.Namespace) -> Result:
    cid = await admin.create_channel(
        args.name,
        args.base_url,
        args.key,
        args.models,
        group=args.group,
        priority=args.priority,
        weight=args.weight,
        type_=args.channel_type,
    )
    return {
        "id": cid,
        "name": args.name,
        "base_url": admin.checked_base_url(args.base_url),
        "models": args.models.split(","),
    }


async def create_token(admin: Any, args: argparse.Namespace) -> Result:
    created = await admin.create_token(
        args.user_id,
        args.name,
        remain_quota=args.remain_quota,
        unlimited=args.unlimited,
        models=args.models,
        allow_ips=args.allow_ips,
        expired_time=args.expires,
        group=args.group,
        daily_quota=args.daily_quota,
        monthly_quota=args.monthly_quota,
    )
    return {"id": created.id, "key": f"sk-{created.key}"}


def _token_changes(args: argparse.Namespace) -> dict[str, Any]:
    """The fields ``update-token`` was asked to change, by Admin.update_token's names."""
    changes: dict[str, Any] = {}
    if args.status is not None:
        changes["status"] = args.status
    if args.remain_quota is not None:
        changes["remain_quota"] = args.remain_quota
    if args.add_quota is not None:
        changes["add_quota"] = args.add_quota
    if args.models is not None:
        changes["model_limits"] = args.models
        changes["model_limits_enabled"] = bool(args.models.strip())
    if args.allow_ips is not None:
        changes["allow_ips"] = args.allow_ips
    if args.expires is not None:
        changes["expired_time"] = args.expires
    return changes


async def update_token(admin: Any, args: argparse.Namespace) -> Result:
    if args.delete:
        await admin.delete_token(args.id)
        return {"id": args.id, "deleted": True}
    changes = _token_changes(args)
    await admin.update_token(args.id, changes)
    return {"id": args.id, "updated": sorted(changes)}


async def top_up(admin: Any, args: argparse.Namespace) -> Result:
    from relaygate.admin import AdminError

    op_id = args.op_id or uuid.uuid4().hex
    try:
        credited = await admin.add_user_quota(args.user_id, args.quota, op_id)
    except AdminError as exc:
        raise Fatal(
            f"{exc} (operation id {op_id}: re-running with --op-id {op_id} is safe)"
        ) from None
    return {"user_id": args.user_id, "added": args.quota, "op_id": op_id, "credited": credited}


async def set_option(admin: Any, args: argparse.Namespace) -> Result:
    await admin.set_option(args.key, args.value)
    return {"key": args.key}


async def show_token(admin: Any, args: argparse.Namespace) -> Result:
    row = await admin.token_row(args.id)
    if row is None:
        raise Fatal(f"token {args.id} not found")
    limit, used = await admin.accounts.live_token(args.id, int(row["user_id"]))
    return {
        "id": args.id,
        "user_id": int(row["user_id"]),
        "name": row["name"],
        "status": int(row["status"]),
        "unlimited_quota": bool(row["unlimited_quota"]),
        "limit": limit,
        "used": used,
        "remain": limit - used,
        "flushed_used": int(row["used_quota"]),
        "redis_key": admin.accounts.keys.token(int(row["user_id"]), args.id),
    }


async def show_user(admin: Any, args: argparse.Namespace) -> Result:
    async with admin.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT * FROM users WHERE id = $1 AND deleted_at IS NULL", args.id
        )
    if row is None:
        raise Fatal(f"user {args.id} not found")
    limit, used = await admin.accounts.live_user(args.id)
    return {
        "id": args.id,
        "username": row["username"],
        "role": int(row["role"]),
        "status": int(row["status"]),
        "limit": limit,
        "used": used,
        "remain": limit - used,
        "flushed_used": int(row["used_quota"]),
        "redis_key": admin.accounts.keys.user(args.id),
    }


ACTIONS: dict[str, Action] = {
    "show-token": show_token,
    "show-user": show_user,
    "create-user": create_user,
    "create-channel": create_channel,
    "create-token": create_token,
    "update-token": update_token,
    "top-up": top_up,
    "set-option": set_option,
}


def cmd_admin(settings: Settings, args: argparse.Namespace) -> None:
    result = run(_with_admin(settings, ACTIONS[args.admin_command], args))
    print(orjson.dumps(result).decode())
