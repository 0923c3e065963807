"""User writes: accounts, roles, quota top-ups and "set remain"."""

from __future__ import annotations

import logging
import time
from typing import Any

import asyncpg

from relaygate.admin.base import AdminBase
from relaygate.admin.passwords import hash_password
from relaygate.admin.rules import (
    MAX_OP_ID,
    ROLE_USER,
    ROLES,
    USER_UPDATABLE,
    AdminError,
    check_password,
    check_quota,
    check_username,
)
from relaygate.credentials import hash_secret, new_access_token
from relaygate.store import queries

log = logging.getLogger(__name__)


class UserAdmin(AdminBase):
    # --- users ---------------------------------------------------------------------------

    async def create_user(
        self,
        username: str,
        role: int = ROLE_USER,
        quota: int = 0,
        group: str = "default",
        display_name: str = "",
        *,
        password: str = "",
        email: str = "",
        remark: str = "",
    ) -> tuple[int, str]:
        """Returns (id, access token). The access token is stored hashed and shown once."""
        username = check_username(username)
        if role not in ROLES.values():
            raise AdminError("role must be 1 (user), 10 (admin) or 100 (root)")
        check_quota(quota, "quota")
        if password:
            check_password(password)
        access = new_access_token()
        password_hash = await hash_password(password) if password else ""
        try:
            async with self.pool.acquire() as conn:
                user_id = await conn.fetchval(
                    'INSERT INTO users (username, display_name, role, "group", quota_limit,'
                    " access_token_hash, password_hash, email, remark)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                    username,
                    display_name or username,
                    role,
                    group,
                    quota,
                    hash_secret(access),
                    password_hash,
                    email,
                    remark,
                )
        except asyncpg.UniqueViolationError:
            raise AdminError(f"username {username!r} is already taken") from None
        return int(user_id), access

    async def user_by_name(self, username: str) -> Any:
        async with self.pool.acquire() as conn:
            return await conn.fetchrow(
                "SELECT * FROM users WHERE username = $1 AND deleted_at IS NULL", username
            )

    async def user_row(self, user_id: int) -> Any:
        async with self.pool.acquire() as conn:
            return await conn.fetchrow(
                "SELECT * FROM users WHERE id = $1 AND deleted_at IS NULL", user_id
            )

    async def rotate_access_token(self, user_id: int) -> str:
        access = new_access_token()
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                "UPDATE users SET access_token_hash = $2 WHERE id = $1 AND deleted_at IS NULL",
                user_id,
                hash_secret(access),
            )
        if done != "UPDATE 1":
            raise AdminError("user not found")
        return access

    async def add_user_quota(self, user_id: int, delta: int, op_id: str | None = None) -> bool:
        """Top-up (or a debit with a negative delta): moves ``limit`` only.

        With ``op_id`` the credit happens at most once: the id is claimed in the same
        transaction, and a repeat (same user and amount) only pushes again. Returns whether
        this call credited.
        """
        if op_id is not None and not 0 < len(op_id) <= MAX_OP_ID:
            raise AdminError(f"operation id must be 1 to {MAX_OP_ID} characters")
        await self._ledger_up()
        async with self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval(
                "SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE", user_id
            )
            if found is None:
                raise AdminError("user not found")
            if op_id is not None and not await self._claim_op(conn, op_id, user_id, delta):
                credited = False
            else:
                row = await conn.fetchrow(
                    "UPDATE users SET quota_limit = quota_limit + $2, ver = ver + 1"
                    " WHERE id = $1 RETURNING id, id AS user_id, ver",
                    user_id,
                    delta,
                )
                await self._outbox(conn, "user", row)
                credited = True
        await self._push("user", user_id, "The quota change")
        return credited

    @staticmethod
    async def _claim_op(conn: Any, op_id: str, user_id: int, delta: int) -> bool:
        """True if ``op_id`` is new (now claimed); False if this very top-up already ran."""
        if await conn.fetchval(queries.QUOTA_OP_CLAIM, op_id, user_id, delta) is not None:
            return True
        prior = await conn.fetchrow(queries.QUOTA_OP_BY_ID, op_id)
        if (int(prior["user_id"]), int(prior["delta"])) != (user_id, delta):
            raise AdminError(f"operation id {op_id!r} was already used for another top-up")
        return False

    async def set_user_remain(self, user_id: int, remain: int) -> int:
        """``limit := used_live + remain``; returns the limit.

        ``used`` is read from Redis first (spend landing after that read counts against the
        new remain, as it would a moment later); the limit is committed in PostgreSQL and
        pushed version-checked, never written to Redis directly.
        """
        check_quota(remain, "quota")
        used = await self._live_used(lambda: self.accounts.live_user(user_id))
        limit = used + remain
        await self._write_user(
            "UPDATE users SET quota_limit = $2, ver = ver + 1"
            " WHERE id = $1 AND deleted_at IS NULL RETURNING id, id AS user_id, ver",
            (user_id, limit),
            "The quota change",
        )
        return limit

    async def set_user_status(self, user_id: int, status: int) -> None:
        await self._write_user(
            "UPDATE users SET status = $2, ver = ver + 1"
            " WHERE id = $1 AND deleted_at IS NULL RETURNING id, id AS user_id, ver",
            (user_id, status),
            "The status change",
        )

    async def set_user_role(self, user_id: int, role: int) -> None:
        if role not in ROLES.values():
            raise AdminError("role must be 1 (user), 10 (admin) or 100 (root)")
        # The role is part of every cached token's metadata: the push drops them.
        await self._write_user(
            "UPDATE users SET role = $2, ver = ver + 1"
            " WHERE id = $1 AND deleted_at IS NULL RETURNING id, id AS user_id, ver",
            (user_id, role),
            "The role change",
        )

    async def update_user(self, user_id: int, changes: dict[str, Any]) -> None:
        """Profile fields (``USER_UPDATABLE``); quota goes through ``set_user_remain``."""
        sets: list[str] = []
        args: list[Any] = [user_id]
        for field in USER_UPDATABLE:
            if field not in changes:
                continue
            value = changes[field]
            if field == "username":
                value = check_username(value)
            if field == "password":
                check_password(value)
                field, value = "password_hash", await hash_password(value)
            args.append(value)
            sets.append(f'"{field}" = ${len(args)}')
        if sets:
            sql = (
                f"UPDATE users SET {', '.join(sets)}, ver = ver + 1"
                " WHERE id = $1 AND deleted_at IS NULL RETURNING id, id AS user_id, ver"
            )
            try:
                await self._write_user(sql, args, "The change")
            except asyncpg.UniqueViolationError:
                raise AdminError(f"username {changes.get('username')!r} is already taken") from None
        if "quota" in changes:
            await self.set_user_remain(user_id, int(changes["quota"]))

    async def delete_user(self, user_id: int) -> None:
        """Soft delete: the user's tokens stop at once (the ledger marks the user disabled) and
        the access token is forgotten; the username becomes free again."""
        await self._write_user(
            "UPDATE users SET deleted_at = $2, access_token_hash = NULL, ver = ver + 1"
            " WHERE id = $1 AND deleted_at IS NULL RETURNING id, id AS user_id, ver",
            (user_id, int(time.time())),
            "The deletion",
        )

    # --- tokens --------------------------------------------------------------------------
