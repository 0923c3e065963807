"""What a management write may contain: roles, bounds, and the checks and normalisations
every caller (CLI and API) gets the same."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from relaygate.cache import parse_allow_ips

ROLE_USER = 1
ROLE_ADMIN = 10
ROLE_ROOT = 100
ROLES = {"user": ROLE_USER, "admin": ROLE_ADMIN, "root": ROLE_ROOT}
MAX_QUOTA = 500_000 * 1_000_000_000  # New API's bound: 1e9 dollars of quota units
MAX_TOKEN_NAME_BYTES = 50
# What a lost Redis (or a PostgreSQL gone between commit and push) raises.
LEDGER_ERRORS = (RedisError, OSError, asyncpg.PostgresError)
MSG_LEDGER_DOWN = "The quota ledger (Redis) is unreachable; nothing was changed. Try again later."
MAX_OP_ID = 128
CHANNEL_STATUSES = (1, 2, 3)
USER_UPDATABLE = ("username", "display_name", "password", "group", "email", "remark")


class AdminError(ValueError):
    """A rejected management request; the message is shown to the caller as is."""


class LedgerPending(AdminError):
    """Committed in PostgreSQL, not yet in Redis: the outbox carries it there once Redis is
    back. Repeating the request is not needed (and for a top-up without an operation id it
    would credit again)."""


def pending_message(what: str) -> str:
    return (
        f"{what} was saved, but the quota ledger (Redis) could not be updated; it takes effect"
        " automatically once Redis is reachable again. Do not repeat it."
    )


@dataclass(frozen=True, slots=True)
class CreatedToken:
    id: int
    key: str  # without the sk- prefix; shown once


def normalize_allow_ips(raw: str | Sequence[str] | None) -> str:
    """Validate IPs/CIDRs (newline- or comma-separated) and store them one per line."""
    if raw is None:
        return ""
    text = "\n".join(raw) if not isinstance(raw, str) else raw
    entries = [e.strip() for e in text.replace(",", "\n").split("\n") if e.strip()]
    for entry in entries:
        try:
            parse_allow_ips(entry)
        except ValueError:
            raise AdminError(f"Invalid IP address or CIDR in allow_ips: {entry!r}") from None
    return "\n".join(entries)


def normalize_models(models: str | Sequence[str] | None) -> str:
    if models is None:
        return ""
    items = models.split(",") if isinstance(models, str) else list(models)
    out = []
    for m in items:
        if not isinstance(m, str):
            raise AdminError("Model names must be strings.")
        m = m.strip()
        if len(m.encode()) > 255:
            raise AdminError(f"Model name too long: {m[:40]}...")
        if m and m not in out:
            out.append(m)
    return ",".join(out)


def check_quota(value: int, field: str) -> None:
    if value < 0:
        raise AdminError(f"{field}: quota value cannot be negative")
    if value > MAX_QUOTA:
        raise AdminError(f"{field}: quota value out of range, the maximum is {MAX_QUOTA}")


def check_token_name(name: str) -> None:
    if len(name.encode()) > MAX_TOKEN_NAME_BYTES:
        raise AdminError("Token name is too long (at most 50 bytes)")


def check_username(username: str) -> str:
    username = username.strip()
    if not username or len(username) > 20:
        raise AdminError("username must be 1 to 20 characters")
    if any(ord(c) < 32 or c == "\x7f" or "\ud800" <= c <= "\udfff" for c in username):
        raise AdminError("username must not contain control characters")
    return username


def check_password(password: str) -> None:
    if not 8 <= len(password) <= 20:
        raise AdminError("password must be 8 to 20 characters")


def token_changes(
    token_id: int, changes: dict[str, Any]
) -> tuple[list[str], list[Any], int | None]:
    """Validated ``SET`` assignments and their arguments (``$1`` is the token id), and the
    remain to set if any (it needs the live ``used``, read by the caller)."""
    sets: list[str] = []
    args: list[Any] = [token_id]

    def put(column: str, value: Any) -> None:
        args.append(value)
        sets.append(f'"{column}" = ${len(args)}')

    if "name" in changes:
        check_token_name(changes["name"])
        put("name", changes["name"])
    if "expired_time" in changes:
        expired = int(changes["expired_time"])
        if expired != -1 and expired < 0:
            raise AdminError("expired_time must be -1 (never) or a unix timestamp")
        put("expired_time", expired)
    if "unlimited_quota" in changes:
        put("unlimited_quota", bool(changes["unlimited_quota"]))
    if "model_limits" in changes:
        put("model_limits", normalize_models(changes["model_limits"]))
    if "model_limits_enabled" in changes:
        put("model_limits_enabled", bool(changes["model_limits_enabled"]))
    if "allow_ips" in changes:
        put("allow_ips", normalize_allow_ips(changes["allow_ips"]))
    if "group" in changes:
        put("group", changes["group"])
    for field in ("daily_quota", "monthly_quota"):
        if field in changes:
            check_quota(int(changes[field]), field)
            put(field, int(changes[field]))
    if "status" in changes:
        put("status", int(changes["status"]))
    if "add_quota" in changes:
        args.append(int(changes["add_quota"]))
        sets.append(f"quota_limit = quota_limit + ${len(args)}")
    remain: int | None = None
    if "remain_quota" in changes:
        remain = int(changes["remain_quota"])
        check_quota(remain, "remain_quota")
    return sets, args, remain
