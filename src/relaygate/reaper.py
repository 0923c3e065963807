"""The reaper: the open reservations of a relay that died are refunded atomically
(reap.lua), each leaving a reaped marker for a settle that may still arrive. Run by the
flusher process (``Flusher.housekeeping``)."""

from __future__ import annotations

import logging
import time

from redis.asyncio import Redis

from relaygate import ledger
from relaygate.config import Settings
from relaygate.keys import KeyScheme
from relaygate.ledger import Scripts

log = logging.getLogger(__name__)

REAP_PAGE = 500


class Reaper:
    def __init__(self, settings: Settings, redis: Redis, scripts: Scripts, keys: KeyScheme) -> None:
        self.settings = settings
        self.redis = redis
        self.scripts = scripts
        self.keys = keys
        self.reaped = 0
        # Relay instance -> monotonic time its heartbeat was first found absent (see reap).
        self._absent_since: dict[str, float] = {}

    async def reap(self) -> int:
        """One reaper pass: refund the open reservations of relays that are dead, and prune
        old reaped markers.

        Only a dead relay's reservations are refunded, never one for its deadline alone: a
        live relay still settles (or replays the settle of) everything it holds, however
        long the stream ran or Redis was away, and a refund under it would be charged twice
        or given back twice. Dead = its heartbeat key was absent on two passes at least
        ``heartbeat_ttl`` apart (a live relay refreshes it every third of that, so a Redis
        restart that lost the key does not make it look dead). Every member is looked at
        (ZSCAN): live relays' entries may fill the head of the zset.
        """
        wall = int(time.time())
        passed = time.monotonic()
        refunded = 0
        alive: dict[str, bool] = {}
        for shard in range(self.settings.shards):
            zkey = self.keys.reservations_of_shard(shard)
            reaped_key = self.keys.reaped_of_shard(shard)
            async for raw, _deadline in self.redis.zscan_iter(zkey, count=REAP_PAGE):
                member = raw.decode() if isinstance(raw, bytes) else str(raw)
                try:
                    r = ledger.parse_reservation_member(member)
                except ValueError:
                    log.error("malformed reservation %r removed", member)
                    await self.redis.zrem(zkey, member)
                    continue
                if r.instance not in alive:
                    alive[r.instance] = await self._relay_alive(r.instance, passed)
                if alive[r.instance]:
                    continue
                keys = (
                    self.keys.token(r.user_id, r.token_id),
                    self.keys.user(r.user_id),
                    self.keys.token_day(r.user_id, r.token_id, r.day),
                    self.keys.token_month(r.user_id, r.token_id, r.month),
                    zkey,
                    reaped_key,
                )
                if await ledger.reap(self.scripts, self.redis, keys, member, r.amount):
                    refunded += 1
            await self.redis.zremrangebyscore(
                reaped_key, "-inf", f"({wall - self.settings.reaped_retention}"
            )
        # Forget instances that hold nothing any more (their reservations are all gone).
        for instance in list(self._absent_since):
            if instance not in alive:
                del self._absent_since[instance]
        if refunded:
            log.warning("refunded %d reservations left by relays that died mid-request", refunded)
        self.reaped += refunded
        return refunded

    async def _relay_alive(self, instance: str, now: float) -> bool:
        """False only once the relay's heartbeat was absent on two passes at least
        heartbeat_ttl apart; the first absence is remembered, a presence forgets it."""
        if await self.redis.exists(self.keys.heartbeat(instance)):
            self._absent_since.pop(instance, None)
            return True
        first = self._absent_since.setdefault(instance, now)
        return now - first < self.settings.heartbeat_ttl
