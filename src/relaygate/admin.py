"""Management operations shared by the CLI and the management API.

Each write commits to PostgreSQL (bumping the row's ``ver``), then carries the change into
the Redis ledger and announces it (``Accounts.push_*``), so that every relay honours it on
its next request. Quota edits never overwrite ``used``: a top-up adds to ``limit``, and
"set remain to X" becomes ``limit := used_live + X`` (DESIGN.md "The ledger"), so spend in
flight is never lost.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from relaygate.accounts import Accounts
from relaygate.cache import parse_allow_ips
from relaygate.credentials import hash_secret, mask_key, new_access_token, new_token_key
from relaygate.keys import msg_channel

ROLE_USER = 1
ROLE_ADMIN = 10
ROLE_ROOT = 100
ROLES = {"user": ROLE_USER, "admin": ROLE_ADMIN, "root": ROLE_ROOT}
MAX_QUOTA = 500_000 * 1_000_000_000  # New API's bound: 1e9 dollars of quota units
MAX_TOKEN_NAME_BYTES = 50


class AdminError(ValueError):
    """A rejected management request; the message is shown to the caller as is."""


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
        raise AdminError("Token name is too long (at most 50 characters)")


class Admin:
    def __init__(self, pool: asyncpg.Pool, accounts: Accounts) -> None:
        self.pool = pool
        self.accounts = accounts

    # --- users ---------------------------------------------------------------------------

    async def create_user(
        self, username: str, role: int = ROLE_USER, quota: int = 0, group: str = "default",
        display_name: str = "",
    ) -> tuple[int, str]:
        """Returns (id, access token). The access token is stored hashed and shown once."""
        username = username.strip()
        if not username or len(username) > 20:
            raise AdminError("username must be 1 to 20 characters")
        if role not in ROLES.values():
            raise AdminError("role must be 1 (user), 10 (admin) or 100 (root)")
        check_quota(quota, "quota")
        access = new_access_token()
        try:
            async with self.pool.acquire() as conn:
                user_id = await conn.fetchval(
                    'INSERT INTO users (username, display_name, role, "group", quota_limit, access_token_hash) '
                    "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    username, display_name or username, role, group, quota, hash_secret(access),
                )  # fmt: skip
        except asyncpg.UniqueViolationError:
            raise AdminError(f"username {username!r} is already taken") from None
        return int(user_id), access

    async def user_by_name(self, username: str) -> Any:
        async with self.pool.acquire() as conn:
            return await conn.fetchrow(
                "SELECT * FROM users WHERE username = $1 AND deleted_at IS NULL", username
            )

    async def rotate_access_token(self, user_id: int) -> str:
        access = new_access_token()
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                "UPDATE users SET access_token_hash = $2 WHERE id = $1 AND deleted_at IS NULL",
                user_id, hash_secret(access),
            )  # fmt: skip
        if done != "UPDATE 1":
            raise AdminError("user not found")
        return access

    async def add_user_quota(self, user_id: int, delta: int) -> None:
        """Top-up (or a debit with a negative delta): moves ``limit`` only."""
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                "UPDATE users SET quota_limit = quota_limit + $2, ver = ver + 1 "
                "WHERE id = $1 AND deleted_at IS NULL",
                user_id, delta,
            )  # fmt: skip
        if done != "UPDATE 1":
            raise AdminError("user not found")
        await self.accounts.push_user(user_id)

    async def set_user_remain(self, user_id: int, remain: int) -> None:
        check_quota(remain, "quota")
        _, used = await self.accounts.live_user(user_id)
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                "UPDATE users SET quota_limit = $2, ver = ver + 1 WHERE id = $1 AND deleted_at IS NULL",
                user_id, used + remain,
            )  # fmt: skip
        if done != "UPDATE 1":
            raise AdminError("user not found")
        await self.accounts.push_user(user_id)

    async def set_user_status(self, user_id: int, status: int) -> None:
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                "UPDATE users SET status = $2, ver = ver + 1 WHERE id = $1 AND deleted_at IS NULL",
                user_id, status,
            )  # fmt: skip
        if done != "UPDATE 1":
            raise AdminError("user not found")
        await self.accounts.push_user(user_id)

    # --- tokens --------------------------------------------------------------------------

    async def create_token(
        self,
        user_id: int,
        name: str,
        *,
        remain_quota: int = 0,
        unlimited: bool = False,
        models: str | Sequence[str] | None = None,
        model_limits_enabled: bool | None = None,
        allow_ips: str | Sequence[str] | None = None,
        expired_time: int = -1,
        group: str = "",
        daily_quota: int = 0,
        monthly_quota: int = 0,
    ) -> CreatedToken:
        check_token_name(name)
        check_quota(remain_quota, "remain_quota")
        check_quota(daily_quota, "daily_quota")
        check_quota(monthly_quota, "monthly_quota")
        if expired_time != -1 and expired_time < 0:
            raise AdminError("expired_time must be -1 (never) or a unix timestamp")
        model_list = normalize_models(models)
        enabled = bool(model_list) if model_limits_enabled is None else model_limits_enabled
        ips = normalize_allow_ips(allow_ips)
        key = new_token_key()
        async with self.pool.acquire() as conn:
            exists = await conn.fetchval(
                "SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL", user_id
            )
            if not exists:
                raise AdminError(f"user {user_id} not found")
            token_id = await conn.fetchval(
                "INSERT INTO tokens (user_id, key_hash, key_mask, name, expired_time, quota_limit,"
                " unlimited_quota, model_limits_enabled, model_limits, allow_ips, \"group\","
                " daily_quota, monthly_quota, created_time)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) RETURNING id",
                user_id, hash_secret(key), mask_key(key), name, expired_time, remain_quota,
                unlimited, enabled, model_list, ips, group, daily_quota, monthly_quota,
                int(time.time()),
            )  # fmt: skip
        return CreatedToken(int(token_id), key)

    async def token_row(self, token_id: int, user_id: int | None = None) -> Any:
        async with self.pool.acquire() as conn:
            if user_id is None:
                return await conn.fetchrow(
                    "SELECT * FROM tokens WHERE id = $1 AND deleted_at IS NULL", token_id
                )
            return await conn.fetchrow(
                "SELECT * FROM tokens WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
                token_id, user_id,
            )  # fmt: skip

    async def update_token(
        self, token_id: int, changes: dict[str, Any], user_id: int | None = None
    ) -> None:
        """Apply validated field changes. ``remain_quota`` is turned into a new ``limit``
        against the live ``used``; other fields are written as given."""
        row = await self.token_row(token_id, user_id)
        if row is None:
            raise AdminError("token not found")
        sets: list[str] = []
        args: list[Any] = [token_id]

        def put(column: str, value: Any) -> None:
            args.append(value)
            sets.append(f'"{column}" = ${len(args)}')

        if "name" in changes:
            check_token_name(changes["name"])
            put("name", changes["name"])
        if "expired_time" in changes:
            put("expired_time", int(changes["expired_time"]))
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
        if "remain_quota" in changes:
            remain = int(changes["remain_quota"])
            check_quota(remain, "remain_quota")
            _, used = await self.accounts.live_token(token_id, int(row["user_id"]))
            put("quota_limit", used + remain)
        if "add_quota" in changes:
            args.append(int(changes["add_quota"]))
            sets.append(f"quota_limit = quota_limit + ${len(args)}")
        if not sets:
            return
        sql = f"UPDATE tokens SET {', '.join(sets)}, ver = ver + 1 WHERE id = $1 AND deleted_at IS NULL"
        async with self.pool.acquire() as conn:
            done = await conn.execute(sql, *args)
        if done != "UPDATE 1":
            raise AdminError("token not found")
        await self.accounts.push_token(token_id)

    async def delete_token(self, token_id: int, user_id: int | None = None) -> None:
        async with self.pool.acquire() as conn:
            if user_id is None:
                done = await conn.execute(
                    "UPDATE tokens SET deleted_at = $2, ver = ver + 1 WHERE id = $1 AND deleted_at IS NULL",
                    token_id, int(time.time()),
                )  # fmt: skip
            else:
                done = await conn.execute(
                    "UPDATE tokens SET deleted_at = $3, ver = ver + 1"
                    " WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
                    token_id, user_id, int(time.time()),
                )  # fmt: skip
        if done != "UPDATE 1":
            raise AdminError("token not found")
        await self.accounts.push_token(token_id)

    # --- channels ------------------------------------------------------------------------

    async def create_channel(
        self,
        name: str,
        base_url: str,
        key: str,
        models: str | Sequence[str],
        *,
        group: str = "default",
        priority: int = 0,
        weight: int = 1,
        type_: int = 1,
        model_mapping: str = "",
    ) -> int:
        if not key:
            raise AdminError("channel key cannot be empty")
        if not base_url.startswith(("http://", "https://")):
            raise AdminError("base_url must start with http:// or https://")
        model_list = normalize_models(models)
        if not model_list:
            raise AdminError("a channel needs at least one model")
        async with self.pool.acquire() as conn:
            channel_id = await conn.fetchval(
                'INSERT INTO channels (type, name, key, base_url, models, "group", priority, weight,'
                " model_mapping) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) RETURNING id",
                type_, name, key, base_url.rstrip("/"), model_list, group, priority, weight,
                model_mapping,
            )  # fmt: skip
        await self.announce_channel(int(channel_id))
        return int(channel_id)

    async def announce_channel(self, channel_id: int) -> None:
        await self.accounts.redis.publish(
            self.accounts.keys.inval_channel, msg_channel(channel_id)
        )

    async def set_option(self, key: str, value: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO options (key, value) VALUES ($1, $2)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                key, value,
            )  # fmt: skip
        await self.accounts.redis.publish(self.accounts.keys.inval_channel, f"opt:{key}")
