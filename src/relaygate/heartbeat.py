"""This process's heartbeat key: the reaper refunds a relay's open reservations only once
its heartbeat has lapsed (it died), never while it lives."""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis

from relaygate.background import Background

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(self, redis: Redis, key: str, ttl: int) -> None:
        self.redis = redis
        self.key = key
        self.ttl = ttl

    async def beat(self) -> None:
        """Refresh the key once."""
        await self.redis.set(self.key, int(time.time()), ex=self.ttl)

    async def run(self, background: Background) -> None:
        """Keep the key alive until closing; a failed beat is retried on the next round."""
        while not background.closing.is_set():
            try:
                await self.beat()
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            await background.pause(self.ttl / 3)

    async def stop(self) -> None:
        """Say we are gone (a clean exit: nothing left for the reaper)."""
        await self.redis.delete(self.key)
