"""The Redis key scheme (DESIGN.md "Redis keys"), in one place.

Every key a script touches carries the hash tag of the owning user's shard
(``{s}``, ``s = user_id mod SHARDS``), so each script's keys share one slot: the scripts
are Cluster-safe. The clients are not yet (the flusher reads every shard's stream in one
XREADGROUP, the hot connection has no MOVED/ASK handling): relaygate runs on a single Redis
(with replicas) today. No other module builds a key name by hand.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

STREAM_GROUP = "flushers"


@dataclass(frozen=True, slots=True)
class KeyScheme:
    prefix: str
    shards: int

    def shard_of(self, user_id: int) -> int:
        return user_id % self.shards

    def base(self, user_id: int) -> str:
        """The prefix of every key of this user's shard (``token_of_base`` builds on it)."""
        return f"{self.prefix}:{{{user_id % self.shards}}}"

    def token(self, user_id: int, token_id: int) -> str:
        return token_of_base(self.base(user_id), token_id)

    def user(self, user_id: int) -> str:
        return f"{self.base(user_id)}:user:{user_id}"

    def token_day(self, user_id: int, token_id: int, day: str) -> str:
        return day_key(self.token(user_id, token_id), day)

    def token_month(self, user_id: int, token_id: int, month: str) -> str:
        return month_key(self.token(user_id, token_id), month)

    def orphans(self, user_id: int) -> str:
        """Counts of usage events settled while the token's or user's hash was missing."""
        return f"{self.base(user_id)}:orphans"

    def reservations(self, user_id: int) -> str:
        return self.reservations_of_shard(user_id % self.shards)

    def reservations_of_shard(self, shard: int) -> str:
        """Open reservations (zset scored by deadline), refunded by the reaper if never settled."""
        return f"{self.prefix}:{{{shard}}}:resv"

    def reaped(self, user_id: int) -> str:
        return self.reaped_of_shard(user_id % self.shards)

    def reaped_of_shard(self, shard: int) -> str:
        """Request ids whose reservation the reaper refunded (zset scored by refund time): a
        late settle finding its id here charges from zero instead of doing nothing."""
        return f"{self.prefix}:{{{shard}}}:reaped"

    def reaped_of_resv(self, resv_key: str) -> str:
        """The reaped zset of the shard whose reservations zset is ``resv_key``."""
        return resv_key[: -len(":resv")] + ":reaped"

    def refusals(self, user_id: int) -> str:
        return self.refusals_of_shard(user_id % self.shards)

    def refusals_of_shard(self, shard: int) -> str:
        """Refused requests by refusal code (hash, counts; reserve.lua writes it only when it
        refuses): the "refusals by reason" of ``relaygate top``."""
        return f"{self.prefix}:{{{shard}}}:refused"

    def stream_of_user(self, user_id: int) -> str:
        return self.stream(user_id % self.shards)

    def stream(self, shard: int) -> str:
        return f"{self.prefix}:{{{shard}}}:usage"

    def streams(self) -> list[str]:
        return [self.stream(s) for s in range(self.shards)]

    def dead_letter(self, shard: int) -> str:
        """Usage events the flusher could not record (malformed, or refused by PostgreSQL for
        a data reason), each with ``dead_reason``: for operators (XLEN / XRANGE)."""
        return f"{self.stream(shard)}:dead"

    def session(self, digest: str) -> str:
        """A dashboard login session, by the SHA-256 of its cookie value (relaygate.sessions)."""
        return f"{self.prefix}:sess:{digest}"

    def user_sessions(self, user_id: int) -> str:
        """The digests of a user's live sessions (to end them all on a password change)."""
        return f"{self.prefix}:usess:{user_id}"

    def login_attempts(self, digest: str) -> str:
        """Login attempts of one client address or username in the current window."""
        return f"{self.prefix}:login:{digest}"

    def heartbeat(self, instance: str) -> str:
        """Present while the relay process ``instance`` is alive (short TTL, refreshed)."""
        return f"{self.prefix}:relay:{instance}"

    @property
    def key_index(self) -> str:
        """A set of key hash prefixes (relaygate.keyindex); its own hash slot."""
        return f"{self.prefix}:{{keys}}"

    @property
    def inval_channel(self) -> str:
        return f"{self.prefix}:inval"

    def pattern(self) -> str:
        """Glob matching every key of this scheme (for tests and operator tooling)."""
        return f"{self.prefix}:*"


def day_and_month(now: float | None = None) -> tuple[str, str]:
    """UTC period labels used by the daily and monthly token quotas."""
    return _period_labels(int(now if now is not None else time.time()))


@functools.lru_cache(maxsize=4)
def _period_labels(second: int) -> tuple[str, str]:
    """Memoized per second: every request of that second shares one gmtime + format."""
    t = time.gmtime(second)
    return f"{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}", f"{t.tm_year:04d}{t.tm_mon:02d}"


def token_of_base(base: str, token_id: int) -> str:
    """A token's ledger key from its shard's prefix (``KeyScheme.base``, cached per user): what
    the token cache builds on each request instead of keeping one string per token."""
    return f"{base}:tok:{token_id}"


def day_key(token_key: str, day: str) -> str:
    """A token's daily counter, from its (cached) ledger key: the hot path's cheap form."""
    return f"{token_key}:d:{day}"


def month_key(token_key: str, month: str) -> str:
    return f"{token_key}:m:{month}"


# Time-to-live of period counters: long enough to outlive their period.
DAY_TTL_SECONDS = 2 * 86400
MONTH_TTL_SECONDS = 32 * 86400


def msg_token(token_id: int) -> str:
    return f"tok:{token_id}"


def msg_user(user_id: int) -> str:
    return f"user:{user_id}"


def msg_channel(channel_id: int) -> str:
    return f"chan:{channel_id}"


INVAL_OPTIONS = "opt:*"
