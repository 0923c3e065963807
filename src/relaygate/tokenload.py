"""Loading one token's metadata on a cache miss: the only PostgreSQL read a relay request
can cause, and only for a key that may exist (``relaygate.keyindex``)."""

from __future__ import annotations

import time

import asyncpg

from relaygate.cache import Shared, TokenMeta, meta_from_row
from relaygate.keyindex import KeyIndex
from relaygate.keys import KeyScheme
from relaygate.store import queries


class TokenLoader:
    def __init__(self, pool: asyncpg.Pool, keys: KeyScheme, key_index: KeyIndex) -> None:
        self.pool = pool
        self.keys = keys
        self.key_index = key_index
        self.shared = Shared(keys)

    async def __call__(self, key_hash: bytes) -> TokenMeta | None:
        if await self.key_index.cannot_exist(key_hash):
            return None  # a made-up key: answered without PostgreSQL
        async with self.pool.acquire() as conn:
            row = await conn.fetchrow(queries.TOKEN_META_BY_HASH, key_hash)
        if row is None or row["deleted_at"] is not None or row["user_deleted_at"] is not None:
            return None
        return meta_from_row(row, self.keys, time.monotonic(), self.shared)
