"""In-process token metadata cache: what the hot path reads on every request.

A hit costs no network round trip. A miss loads from PostgreSQL once, however many requests
wait for the same key (single flight). Unknown keys are remembered for a short time so that
guessing keys cannot load the database. Entries expire after a TTL, are dropped on an
``rg:inval`` message, and are reloaded when the reserve script reports a newer ``ver``.
The cache is an explicit object owned by the app, never a module global.
"""

from __future__ import annotations

import asyncio
import ipaddress
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from relaygate.keys import KeyScheme
from relaygate.netaddr import parse_network
from relaygate.singleflight import SingleFlight

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
NEGATIVE_CACHE_MAX = 100_000
STALE_RETRY_SECONDS = 5.0
MAX_CONCURRENT_LOADS = 16


@dataclass(slots=True)
class TokenMeta:
    id: int
    user_id: int
    name: str
    username: str
    user_role: int
    status: int
    user_status: int
    expired_time: int
    unlimited: bool
    models: frozenset[str] | None  # None = any model
    networks: tuple[IPNetwork, ...] | None  # None = any IP
    group: str  # the using group: token group if set, else the user's group
    token_group: str  # "" when the token uses its user's group
    user_group: str
    ver: int
    # ledger keys, computed once per load
    token_key: str
    user_key: str
    stream_key: str
    orphans_key: str
    resv_key: str
    refused_key: str
    reaped_key: str
    token_orphan: str
    user_orphan: str
    loaded_at: float

    def in_scope(
        self, model: str, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None
    ) -> bool:
        """Model and client address allowed (the common case, no allowlists, costs two tests)."""
        if self.models is not None and model not in self.models:
            return False
        return self.networks is None or self.ip_allowed(ip)

    def ip_allowed(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> bool:
        if self.networks is None:
            return True
        if ip is None:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in net for net in self.networks)


def parse_model_limits(raw: str) -> frozenset[str]:
    return frozenset(m.strip() for m in raw.split(",") if m.strip())


def parse_allow_ips(raw: str) -> tuple[IPNetwork, ...]:
    """Networks from New API's newline list (commas accepted too); raises ValueError on junk."""
    nets: list[IPNetwork] = []
    for entry in raw.replace(",", "\n").split("\n"):
        entry = entry.strip()
        if entry:
            nets.append(parse_network(entry))
    return tuple(nets)


def meta_from_row(row: Any, keys: KeyScheme, now: float) -> TokenMeta:
    user_id = int(row["user_id"])
    token_id = int(row["id"])
    models = parse_model_limits(row["model_limits"]) if row["model_limits_enabled"] else None
    try:
        nets = parse_allow_ips(row["allow_ips"]) if row["allow_ips"].strip() else None
    except ValueError:
        nets = ()  # unparsable allowlist: fail closed, nobody gets in
    # Strings shared by every token of a user (or of a shard) are interned: with 100k tokens
    # cached, one copy per user instead of one per token saves a few hundred bytes a token.
    intern = sys.intern
    return TokenMeta(
        id=token_id,
        user_id=user_id,
        name=row["name"],
        username=intern(row["username"]),
        user_role=int(row["role"]),
        status=int(row["status"]),
        user_status=int(row["user_status"]),
        expired_time=int(row["expired_time"]),
        unlimited=bool(row["unlimited_quota"]),
        models=models,
        networks=nets,
        group=intern(row["group"] or row["user_group"]),
        token_group=intern(row["group"]),
        user_group=intern(row["user_group"]),
        ver=int(row["ver"]),
        token_key=keys.token(user_id, token_id),
        user_key=intern(keys.user(user_id)),
        stream_key=intern(keys.stream_of_user(user_id)),
        orphans_key=intern(keys.orphans(user_id)),
        resv_key=intern(keys.reservations(user_id)),
        refused_key=intern(keys.refusals(user_id)),
        reaped_key=intern(keys.reaped(user_id)),
        token_orphan=f"t{token_id}",
        user_orphan=intern(f"u{user_id}"),
        loaded_at=now,
    )


Loader = Callable[[bytes], Awaitable[TokenMeta | None]]


class TokenCache:
    def __init__(self, loader: Loader, ttl: float, negative_ttl: float) -> None:
        self._loader = loader
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._by_hash: dict[bytes, TokenMeta] = {}
        self._hash_of_id: dict[int, bytes] = {}
        self._ids_of_user: dict[int, set[int]] = {}
        self._unknown: dict[bytes, float] = {}
        self._inflight: SingleFlight[bytes, TokenMeta | None] = SingleFlight()
        self.hits = 0
        self.misses = 0
        self.stale_served = 0
        self.invalidations = 0  # invalidation messages applied (and full drops)
        # A flood of distinct made-up keys queues here instead of flooding PostgreSQL.
        self._load_slots = asyncio.Semaphore(MAX_CONCURRENT_LOADS)

    def __len__(self) -> int:
        return len(self._by_hash)

    def holds(self, key_hash: bytes) -> bool:
        """Known to this process (fresh or not): no lookup is needed to answer it."""
        return key_hash in self._by_hash

    async def get(self, key_hash: bytes) -> TokenMeta | None:
        meta = self._by_hash.get(key_hash)
        now = time.monotonic()
        if meta is not None and now - meta.loaded_at < self._ttl:
            self.hits += 1
            return meta
        if meta is None:
            until = self._unknown.get(key_hash)
            if until is not None:
                if now < until:
                    self.hits += 1
                    return None
                del self._unknown[key_hash]
            return await self.load(key_hash)
        try:
            return await self.load(key_hash)
        except Exception:
            # PostgreSQL is unreachable: keep serving the expired entry (the reserve script's
            # status, expiry and ``ver`` checks in Redis still guard it) and retry the reload
            # a little later instead of on every request.
            meta.loaded_at = now - self._ttl + STALE_RETRY_SECONDS
            self.stale_served += 1
            return meta

    async def load(self, key_hash: bytes) -> TokenMeta | None:
        """Load (or join the load already under way) and store the result.

        The load runs in its own task (``SingleFlight``): a waiter that is cancelled, the
        one that started it included, leaves the load and the other waiters alone.
        """
        return await self._inflight.run(key_hash, lambda: self._load(key_hash))

    async def _load(self, key_hash: bytes) -> TokenMeta | None:
        """One PostgreSQL load; stores the result even if every waiter has gone meanwhile."""
        self.misses += 1
        async with self._load_slots:
            meta = await self._loader(key_hash)
        if meta is None:
            self._forget_hash(key_hash)
            if len(self._unknown) >= NEGATIVE_CACHE_MAX:
                self._unknown.clear()
            self._unknown[key_hash] = time.monotonic() + self._negative_ttl
        else:
            self._store(key_hash, meta)
        return meta

    def _store(self, key_hash: bytes, meta: TokenMeta) -> None:
        self._by_hash[key_hash] = meta
        self._hash_of_id[meta.id] = key_hash
        self._ids_of_user.setdefault(meta.user_id, set()).add(meta.id)

    def _forget_hash(self, key_hash: bytes) -> None:
        meta = self._by_hash.pop(key_hash, None)
        if meta is not None:
            self._hash_of_id.pop(meta.id, None)
            ids = self._ids_of_user.get(meta.user_id)
            if ids is not None:
                ids.discard(meta.id)

    def invalidate_token(self, token_id: int) -> None:
        key_hash = self._hash_of_id.get(token_id)
        if key_hash is not None:
            self._forget_hash(key_hash)

    def invalidate_user(self, user_id: int) -> None:
        for token_id in list(self._ids_of_user.get(user_id, ())):
            self.invalidate_token(token_id)

    def invalidate_all(self) -> None:
        self.invalidations += 1
        self._by_hash.clear()
        self._hash_of_id.clear()
        self._ids_of_user.clear()
        self._unknown.clear()

    def handle_message(self, message: str) -> None:
        """Apply one ``rg:inval`` message (``tok:<id>``, ``user:<id>``, ``*``)."""
        self.invalidations += 1
        kind, _, ident = message.partition(":")
        if kind == "tok" and ident.isdigit():
            self.invalidate_token(int(ident))
        elif kind == "user" and ident.isdigit():
            self.invalidate_user(int(ident))
        elif kind == "*":
            self.invalidate_all()
