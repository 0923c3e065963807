"""Dashboard login sessions (issue 12 item 1), kept server-side in Redis.

Why server-side rather than a signed cookie: a signed cookie stays valid until it expires,
so logout, a password change or an admin disabling the user could not end it. Here the
cookie carries a random 32-byte id; Redis holds only its SHA-256 (a Redis dump does not
hand out live sessions) with the user id, under a TTL equal to the session lifetime. The
management API is off the relay's hot path, so the one Redis round trip per dashboard
request costs nothing that matters.

Login attempts are counted in Redis too (per client address and per username, fixed
windows), so several processes share one budget: a guesser cannot multiply it by the
number of workers.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import cast

from redis.asyncio import Redis

from relaygate.keys import KeyScheme

COOKIE_NAME = "session"  # New API's (gin-contrib/sessions "session")
SESSION_ID_BYTES = 32


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Session:
    user_id: int
    created: int


class SessionStore:
    """Create, look up and revoke sessions; each user's live sessions are also indexed, so
    a password change or a disable can end all of them at once."""

    def __init__(self, redis: Redis, keys: KeyScheme, ttl: int) -> None:
        self.redis = redis
        self.keys = keys
        self.ttl = ttl

    def _key(self, digest: str) -> str:
        return self.keys.session(digest)

    def _index(self, user_id: int) -> str:
        return self.keys.user_sessions(user_id)

    async def create(self, user_id: int) -> str:
        """A new session id (the cookie value); only its digest is stored."""
        session_id = secrets.token_urlsafe(SESSION_ID_BYTES)
        digest = _digest(session_id)
        now = int(time.time())
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key(digest), mapping={"uid": user_id, "created": now})
            pipe.expire(self._key(digest), self.ttl)
            pipe.sadd(self._index(user_id), digest)
            pipe.expire(self._index(user_id), self.ttl)
            await pipe.execute()
        return session_id

    async def lookup(self, session_id: str) -> Session | None:
        if not session_id or len(session_id) > 128:
            return None
        raw = await self.redis.hmget(self._key(_digest(session_id)), "uid", "created")
        uid, created = cast(list[bytes | None], raw)
        if uid is None:
            return None
        return Session(int(uid), int(created or 0))

    async def revoke(self, session_id: str) -> int | None:
        """Ends one session; returns its user id (None if it was not live)."""
        digest = _digest(session_id)
        found = await self.lookup(session_id)
        await self.redis.delete(self._key(digest))
        if found is not None:
            await self.redis.srem(self._index(found.user_id), digest)
            return found.user_id
        return None

    async def revoke_user(self, user_id: int, keep: str | None = None) -> None:
        """Ends every session of the user except ``keep`` (the caller's own, when a user
        changes their own password and stays logged in)."""
        index = self._index(user_id)
        digests = {d.decode() for d in cast(set[bytes], await self.redis.smembers(index))}
        keep_digest = _digest(keep) if keep else None
        gone = [d for d in digests if d != keep_digest]
        if not gone:
            return
        async with self.redis.pipeline(transaction=False) as pipe:
            for digest in gone:
                pipe.delete(self._key(digest))
                pipe.srem(index, digest)
            await pipe.execute()


class LoginLimiter:
    """Login attempts per key (``ip:<addr>`` or ``user:<name>``) per fixed window, in Redis.

    Every attempt counts (as New API's CriticalRateLimit does on its login route), a
    success included: the limit bounds guessing, not only failures. 0 disables it.
    """

    def __init__(self, redis: Redis, keys: KeyScheme, limit: int, window: int) -> None:
        self.redis = redis
        self.keys = keys
        self.limit = limit
        self.window = window

    async def allow(self, *keys: str) -> bool:
        """Counts one attempt under every key; False when any key is past its limit."""
        if not self.limit:
            return True
        async with self.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                name = self.keys.login_attempts(hashlib.sha256(key.encode()).hexdigest()[:32])
                pipe.incr(name)
                pipe.expire(name, self.window, nx=True)
            replies = await pipe.execute()
        counts = [int(replies[i]) for i in range(0, len(replies), 2)]
        return all(count <= self.limit for count in counts)
