"""Rows to New API's JSON objects (field names and meanings per NEWAPI.md §2, §5, §6).

Quota figures are never PostgreSQL's alone: ``remain_quota``/``used_quota`` (tokens) and
``quota``/``used_quota`` (users) come from the live Redis ledger, whose ``used`` includes
spend not yet flushed and reservations in flight (DESIGN.md "The ledger").
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from relaygate.accounts import Accounts

# Token status values (New API).
TOKEN_ENABLED = 1
TOKEN_DISABLED = 2
TOKEN_EXPIRED = 3
TOKEN_EXHAUSTED = 4


def effective_status(row: Any, remain: int, now: int | None = None) -> int:
    """The stored status, or 3/4 when an enabled token is past its expiry or out of quota.

    New API flips the stored status lazily on use (and never with Redis on); reporting what
    the relay will actually do is what a dashboard needs, and what New API's enable rules
    (expired or exhausted tokens cannot be re-enabled before they are fixed) check against.
    """
    status = int(row["status"])
    if status != TOKEN_ENABLED:
        return status
    now = int(time.time()) if now is None else now
    expired = int(row["expired_time"])
    if expired != -1 and expired < now:
        return TOKEN_EXPIRED
    if not row["unlimited_quota"] and remain <= 0:
        return TOKEN_EXHAUSTED
    return status


def token_view(row: Any, live: tuple[int, int]) -> dict[str, Any]:
    limit, used = live
    remain = limit - used
    models = [m for m in row["model_limits"].split(",") if m]
    return {
        "id": int(row["id"]),
        "user_id": int(row["user_id"]),
        "key": row["key_mask"],
        "status": effective_status(row, remain),
        "name": row["name"],
        "created_time": int(row["created_time"]),
        "accessed_time": int(row["accessed_time"]),
        "expired_time": int(row["expired_time"]),
        "remain_quota": remain,
        "unlimited_quota": bool(row["unlimited_quota"]),
        "model_limits_enabled": bool(row["model_limits_enabled"]),
        "model_limits": row["model_limits"],
        "models": models,
        "allow_ips": row["allow_ips"],
        "used_quota": used,
        "group": row["group"],
        "daily_quota": int(row["daily_quota"]),
        "monthly_quota": int(row["monthly_quota"]),
        "cross_group_retry": False,
        "auto_groups": None,
    }


async def live_token_figures(accounts: Accounts, rows: list[Any]) -> dict[int, tuple[int, int]]:
    """Live (limit, used) per token id; PostgreSQL's figures if a ledger rebuild fails (the
    token was deleted meanwhile)."""
    pairs = [(int(r["id"]), int(r["user_id"])) for r in rows]
    try:
        return await accounts.live_tokens(pairs)
    except LookupError:
        out = {}
        for r in rows:
            try:
                out[int(r["id"])] = await accounts.live_token(int(r["id"]), int(r["user_id"]))
            except LookupError:
                out[int(r["id"])] = (int(r["quota_limit"]), int(r["used_quota"]))
        return out


async def live_user_figures(accounts: Accounts, rows: list[Any]) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    if not rows:
        return out
    keys = accounts.keys
    async with accounts.redis.pipeline(transaction=False) as pipe:
        for r in rows:
            pipe.hmget(keys.user(int(r["id"])), "limit", "used")
        replies = await pipe.execute()
    for r, (limit, used) in zip(rows, replies, strict=True):
        uid = int(r["id"])
        if limit is None:
            try:
                out[uid] = await accounts.live_user(uid)
            except LookupError:
                out[uid] = (int(r["quota_limit"]), int(r["used_quota"]))
        else:
            out[uid] = (int(limit), int(used or 0))
    return out


def user_view(row: Any, live: tuple[int, int]) -> dict[str, Any]:
    limit, used = live
    return {
        "id": int(row["id"]),
        "username": row["username"],
        "display_name": row["display_name"],
        "role": int(row["role"]),
        "status": int(row["status"]),
        "email": row["email"],
        "group": row["group"],
        "quota": limit - used,
        "used_quota": used,
        "request_count": int(row["request_count"]),
        "remark": row["remark"],
        "created_at": int(row["created_at"]),
        "github_id": "",
        "discord_id": "",
        "oidc_id": "",
        "wechat_id": "",
        "telegram_id": "",
        "linux_do_id": "",
        "aff_code": "",
        "aff_count": 0,
        "aff_quota": 0,
        "aff_history_quota": 0,
        "inviter_id": 0,
        "setting": "",
    }


def channel_view(row: Any) -> dict[str, Any]:
    """Everything but the key, which is write-only."""
    return {
        "id": int(row["id"]),
        "type": int(row["type"]),
        "name": row["name"],
        "base_url": row["base_url"],
        "models": row["models"],
        "group": row["group"],
        "priority": int(row["priority"]),
        "weight": int(row["weight"]),
        "status": int(row["status"]),
        "model_mapping": row["model_mapping"],
        "test_model": row["test_model"],
        "created_time": int(row["created_time"]),
        "test_time": int(row["test_time"]),
        "response_time": int(row["response_time"]),
        "used_quota": int(row["used_quota"]),
        "balance": 0,
        "tag": "",
        "other": row["other"],
    }


def log_view(row: Any, *, ordinal: int | None = None, admin: bool = False) -> dict[str, Any]:
    """One usage log row. ``use_time`` is whole seconds as New API has it; ``use_time_ms``
    keeps the precision. Self views renumber ``id`` and blank ``channel_name`` as New API."""
    other: Any = row["other"]
    if admin is False and other:
        other = _strip_admin_info(other)
    ms = int(row["use_time_ms"])
    return {
        "id": ordinal if ordinal is not None else int(row["id"]),
        "user_id": int(row["user_id"]),
        "created_at": int(row["created_at"]),
        "type": int(row["type"]),
        "content": row["content"],
        "username": row["username"],
        "token_name": row["token_name"],
        "token_id": int(row["token_id"]),
        "model_name": row["model_name"],
        "quota": int(row["quota"]),
        "prompt_tokens": int(row["prompt_tokens"]),
        "completion_tokens": int(row["completion_tokens"]),
        "use_time": ms // 1000,
        "use_time_ms": ms,
        "is_stream": bool(row["is_stream"]),
        "channel": int(row["channel_id"]),
        "channel_name": row["channel_name"] if admin else "",
        "group": row["group"],
        "ip": row["ip"],
        "request_id": row["request_id"],
        "other": other,
    }


def _strip_admin_info(other: str) -> str:
    try:
        data = orjson.loads(other)
    except orjson.JSONDecodeError:
        return other
    if isinstance(data, dict) and ("admin_info" in data or "audit_info" in data):
        data.pop("admin_info", None)
        data.pop("audit_info", None)
        return orjson.dumps(data).decode()
    return other
