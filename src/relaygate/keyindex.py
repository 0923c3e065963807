"""Which key hashes can exist, in Redis: "unknown" for a made-up key without PostgreSQL.

The token cache remembers unknown keys, but only keys seen before: every distinct made-up
key used to cost one PostgreSQL query, so a client cycling random keys could load the
database at will. The index is one Redis set of the first 16 bytes of every key hash
(a superset of the live keys: deleted tokens stay until the next rebuild, which is
harmless, they just reach PostgreSQL as before) plus a ``ready`` member saying the set is
complete. One ``SMISMEMBER`` answers both questions.

Completeness: a new key is added *before* its token row is inserted, so no committed key is
ever missing (a failed insert leaves a stray hash, harmless). When Redis loses the set
(restarted empty), ``ready`` is gone with it and lookups fall back to PostgreSQL until a
worker rebuilds it (``ensure``, every reconciler round): the build merges PostgreSQL's keys
with whatever was added meanwhile (``SUNIONSTORE``) and only then marks the set ready.
A Redis restarted from its AOF may have lost the last second of additions while keeping
``ready``: so the worker also rebuilds after any Redis failure it saw, and every
``REFRESH_SECONDS`` whatever happened (the bound on how long such a key could be refused).
"""

from __future__ import annotations

import logging

import asyncpg
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relaygate.keys import KeyScheme

log = logging.getLogger(__name__)

PREFIX_BYTES = 16  # a random 16-byte prefix: a made-up key matches by chance never
READY = "ready"  # not 16 bytes, so never a key hash prefix
BUILD_BATCH = 5000
REFRESH_SECONDS = 600.0


class KeyIndex:
    def __init__(self, pool: asyncpg.Pool, redis: Redis, keys: KeyScheme) -> None:
        self.pool = pool
        self.redis = redis
        self.key = keys.key_index

    async def add(self, key_hash: bytes) -> None:
        """Before the token row is written; a Redis failure refuses the creation."""
        await self.redis.sadd(self.key, key_hash[:PREFIX_BYTES])

    async def cannot_exist(self, key_hash: bytes) -> bool:
        """True only when the index is complete and does not hold this hash. Any doubt
        (index being rebuilt, Redis unreachable) is False: ask PostgreSQL, as before."""
        try:
            ready, member = await self.redis.smismember(self.key, [READY, key_hash[:PREFIX_BYTES]])
        except RedisError:
            return False
        return bool(ready) and not member

    async def ensure(self, force: bool = False) -> bool:
        """Rebuild the index when it is not marked complete (or ``force``); True if rebuilt."""
        if not force and await self.redis.sismember(self.key, READY):
            return False
        building = f"{self.key}:building"
        await self.redis.delete(building)
        count = 0
        async with self.pool.acquire() as conn, conn.transaction():
            cursor = conn.cursor("SELECT key_hash FROM tokens WHERE deleted_at IS NULL")
            batch: list[bytes] = []
            async for row in cursor:
                batch.append(bytes(row["key_hash"])[:PREFIX_BYTES])
                if len(batch) >= BUILD_BATCH:
                    await self.redis.sadd(building, *batch)
                    count += len(batch)
                    batch.clear()
            if batch:
                await self.redis.sadd(building, *batch)
                count += len(batch)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.sunionstore(self.key, [self.key, building])
            pipe.sadd(self.key, READY)
            pipe.delete(building)
            await pipe.execute()
        log.info("key index rebuilt from PostgreSQL: %d key(s)", count)
        return True
