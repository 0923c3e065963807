"""Channel and option writes, announced to every relay."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from relaygate.admin.base import AdminBase
from relaygate.admin.rules import (
    CHANNEL_STATUSES,
    AdminError,
    normalize_models,
)
from relaygate.keys import msg_channel
from relaygate.upstreams import UpstreamRefused, check_base_url

log = logging.getLogger(__name__)


class ChannelAdmin(AdminBase):
    def checked_base_url(self, base_url: str) -> str:
        """Normalized (no trailing ``/v1``) and allowed by the SSRF guard (relaygate.upstreams)."""
        try:
            return check_base_url(base_url, self.allow_loopback_upstreams)
        except UpstreamRefused as exc:
            raise AdminError(str(exc)) from None

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
        status: int = 1,
        test_model: str = "",
        other: str = "",
    ) -> int:
        if not key:
            raise AdminError("channel key cannot be empty")
        base_url = self.checked_base_url(base_url)
        model_list = normalize_models(models)
        if not model_list:
            raise AdminError("a channel needs at least one model")
        if status not in CHANNEL_STATUSES:
            raise AdminError("status must be 1 (enabled), 2 (disabled) or 3 (auto-disabled)")
        async with self.pool.acquire() as conn:
            channel_id = await conn.fetchval(
                'INSERT INTO channels (type, name, key, base_url, models, "group", priority,'
                " weight, model_mapping, status, test_model, other)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)"
                " RETURNING id",
                type_,
                name,
                key,
                base_url,
                model_list,
                group,
                priority,
                weight,
                model_mapping,
                status,
                test_model,
                other,
            )
        await self.announce_channel(int(channel_id))
        return int(channel_id)

    async def update_channel(self, channel_id: int, changes: dict[str, Any]) -> None:
        """Write the given fields; an empty ``key`` keeps the stored one (it is write-only,
        so clients that echo a channel back without it must not wipe it)."""
        sets: list[str] = []
        args: list[Any] = [channel_id]

        def put(column: str, value: Any) -> None:
            args.append(value)
            sets.append(f'"{column}" = ${len(args)}')

        fields = ("type", "name", "priority", "weight", "model_mapping", "test_model", "group")
        for field in (*fields, "other"):
            if field in changes:
                put(field, changes[field])
        if changes.get("key"):
            put("key", changes["key"])
        if "base_url" in changes:
            put("base_url", self.checked_base_url(str(changes["base_url"])))
        if "models" in changes:
            model_list = normalize_models(changes["models"])
            if not model_list:
                raise AdminError("a channel needs at least one model")
            put("models", model_list)
        if "status" in changes:
            if changes["status"] not in CHANNEL_STATUSES:
                raise AdminError("status must be 1 (enabled), 2 (disabled) or 3 (auto-disabled)")
            put("status", changes["status"])
        async with self.pool.acquire() as conn:
            if sets:
                done = await conn.execute(
                    f"UPDATE channels SET {', '.join(sets)} WHERE id = $1 AND deleted_at IS NULL",
                    *args,
                )
            else:
                found = await conn.fetchval(
                    "SELECT 1 FROM channels WHERE id = $1 AND deleted_at IS NULL", channel_id
                )
                done = "UPDATE 1" if found else "UPDATE 0"
        if done != "UPDATE 1":
            raise AdminError("Channel does not exist")
        await self.announce_channel(channel_id)

    async def delete_channel(self, channel_id: int) -> None:
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                "UPDATE channels SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL",
                channel_id,
                int(time.time()),
            )
        if done != "UPDATE 1":
            raise AdminError("Channel does not exist")
        await self.announce_channel(channel_id)

    async def record_channel_test(self, channel_id: int, response_ms: int) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE channels SET test_time = $2, response_time = $3 WHERE id = $1",
                channel_id,
                int(time.time()),
                response_ms,
            )

    async def announce_channel(self, channel_id: int) -> None:
        await self.accounts.redis.publish(self.accounts.keys.inval_channel, msg_channel(channel_id))

    async def set_option(self, key: str, value: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO options (key, value) VALUES ($1, $2)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                key,
                value,
            )
        await self.accounts.redis.publish(self.accounts.keys.inval_channel, f"opt:{key}")
