"""Token writes: create (key shown once, stored hashed), update, delete."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from relaygate.admin.base import AdminBase
from relaygate.admin.rules import (
    LEDGER_ERRORS,
    MSG_LEDGER_DOWN,
    AdminError,
    CreatedToken,
    check_quota,
    check_token_name,
    normalize_allow_ips,
    normalize_models,
    token_changes,
)
from relaygate.credentials import hash_secret, mask_key, new_token_key
from relaygate.store import api_queries

log = logging.getLogger(__name__)


class TokenAdmin(AdminBase):
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
        max_tokens: int | None = None,
    ) -> CreatedToken:
        """``max_tokens`` caps the user's live tokens; the count and the insert run under a
        lock on the user's row, so concurrent creates cannot pass the cap together."""
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
        try:  # before the row: a committed key is always in the index (relaygate.keyindex)
            await self.accounts.key_index.add(hash_secret(key))
        except LEDGER_ERRORS:
            raise AdminError(MSG_LEDGER_DOWN) from None
        async with self.pool.acquire() as conn, conn.transaction():
            exists = await conn.fetchval(
                "SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE", user_id
            )
            if not exists:
                raise AdminError(f"user {user_id} not found")
            if max_tokens is not None:
                count = await conn.fetchval(api_queries.COUNT_TOKENS_OF_USER, user_id)
                if int(count) >= max_tokens:
                    raise AdminError(f"Maximum number of tokens reached ({max_tokens})")
            token_id = await conn.fetchval(
                "INSERT INTO tokens (user_id, key_hash, key_mask, name, expired_time, quota_limit,"
                ' unlimited_quota, model_limits_enabled, model_limits, allow_ips, "group",'
                " daily_quota, monthly_quota, created_time)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) RETURNING id",
                user_id,
                hash_secret(key),
                mask_key(key),
                name,
                expired_time,
                remain_quota,
                unlimited,
                enabled,
                model_list,
                ips,
                group,
                daily_quota,
                monthly_quota,
                int(time.time()),
            )
        return CreatedToken(int(token_id), key)

    async def token_row(self, token_id: int, user_id: int | None = None) -> Any:
        async with self.pool.acquire() as conn:
            if user_id is None:
                return await conn.fetchrow(
                    "SELECT * FROM tokens WHERE id = $1 AND deleted_at IS NULL", token_id
                )
            return await conn.fetchrow(
                "SELECT * FROM tokens WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
                token_id,
                user_id,
            )

    async def update_token(
        self, token_id: int, changes: dict[str, Any], user_id: int | None = None
    ) -> None:
        """Apply validated field changes in one PostgreSQL transaction, then push them.

        ``remain_quota`` becomes ``limit := used_live + X`` with ``used`` read from the ledger
        first (Redis unreachable: nothing changes); ``add_quota`` adds to ``limit``. ``used``
        is never written. Other fields are written as given. ``user_id`` restricts the
        write to that owner's token.
        """
        sets, args, remain = token_changes(token_id, changes)
        row = await self.token_row(token_id, user_id)
        if row is None:
            raise AdminError("token not found")
        if not sets and remain is None:
            return
        if remain is not None:
            owner = int(row["user_id"])
            used = await self._live_used(lambda: self.accounts.live_token(token_id, owner))
            args.append(used + remain)
            sets.append(f"quota_limit = ${len(args)}")
        await self._write_token(f"{', '.join(sets)}, ver = ver + 1", args, user_id, "The change")

    async def _write_token(
        self, assignments: str, args: list[Any], user_id: int | None, what: str
    ) -> None:
        """One ``UPDATE tokens SET <assignments>`` of token ``args[0]`` (owned by ``user_id``
        if given) and its outbox row in one transaction, then the push."""
        where = "WHERE id = $1 AND deleted_at IS NULL"
        if user_id is not None:
            args = [*args, user_id]
            where += f" AND user_id = ${len(args)}"
        await self._ledger_up()
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE tokens SET {assignments} {where} RETURNING id, user_id, ver", *args
            )
            if row is None:
                raise AdminError("token not found")
            await self._outbox(conn, "token", row)
        await self._push("token", int(args[0]), what)

    async def delete_token(self, token_id: int, user_id: int | None = None) -> None:
        await self._write_token(
            "deleted_at = $2, ver = ver + 1", [token_id, int(time.time())], user_id, "The deletion"
        )

    # --- channels ------------------------------------------------------------------------
