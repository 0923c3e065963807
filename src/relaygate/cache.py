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
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from relaygate.keys import KeyScheme, token_of_base
from relaygate.ledger import token_orphan_field, user_orphan_field
from relaygate.netaddr import parse_network
from relaygate.singleflight import SingleFlight

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
NEGATIVE_CACHE_MAX = 100_000
STALE_RETRY_SECONDS = 5.0
MAX_CONCURRENT_LOADS = 16


SHARED_MAX = 4096  # distinct allowlist texts remembered for sharing; forgotten when full


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Owner:
    """What every token of one user holds alike: names, status and ledger keys.

    One object per distinct user state, shared by all that user's cached tokens (a million
    tokens over a few thousand users would otherwise carry a million copies of these
    strings). Frozen: a user change produces a new ``Owner`` on the next load, never an
    edit that would reach tokens loaded before it.
    """

    user_id: int
    username: str
    user_role: int
    user_status: int
    user_group: str
    base: str  # the shard's key prefix, from which each token's ledger key is built
    user_key: str
    stream_key: str
    orphans_key: str
    resv_key: str
    refused_key: str
    reaped_key: str
    user_orphan: str


@dataclass(slots=True)
class TokenMeta:
    """One cached token: only what differs from token to token is stored here.

    Per-user state lives in the shared ``owner``; the allowlists are shared objects too
    (most tokens have none, and tokens with one mostly have the same text); the token's
    own ledger key and orphan field are built when asked for (a few hundred nanoseconds on a
    request, against ~130 bytes a token for keeping them).
    """

    id: int
    name: str
    status: int
    expired_time: int
    unlimited: bool
    models: frozenset[str] | None  # None = any model
    networks: tuple[IPNetwork, ...] | None  # None = any IP
    group: str  # the using group: token group if set, else the user's group
    token_group: str  # "" when the token uses its user's group
    ver: int
    owner: Owner
    loaded_at: float

    @property
    def user_id(self) -> int:
        return self.owner.user_id

    @property
    def username(self) -> str:
        return self.owner.username

    @property
    def user_role(self) -> int:
        return self.owner.user_role

    @property
    def user_status(self) -> int:
        return self.owner.user_status

    @property
    def user_group(self) -> str:
        return self.owner.user_group

    @property
    def token_key(self) -> str:
        return token_of_base(self.owner.base, self.id)

    @property
    def token_orphan(self) -> str:
        return token_orphan_field(self.id)

    @property
    def user_key(self) -> str:
        return self.owner.user_key

    @property
    def stream_key(self) -> str:
        return self.owner.stream_key

    @property
    def orphans_key(self) -> str:
        return self.owner.orphans_key

    @property
    def resv_key(self) -> str:
        return self.owner.resv_key

    @property
    def refused_key(self) -> str:
        return self.owner.refused_key

    @property
    def reaped_key(self) -> str:
        return self.owner.reaped_key

    @property
    def user_orphan(self) -> str:
        return self.owner.user_orphan

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


class Shared:
    """One copy of what many cached tokens hold equal, owned by the token loader.

    Owners are kept only while some cached token refers to them (weak values): a user whose
    tokens are all dropped leaves nothing behind. Allowlists are kept by their text (parsing
    is a pure function of it, so a remembered result is never stale); the table is emptied
    when it reaches ``SHARED_MAX`` texts, which only costs sharing, never correctness.
    """

    def __init__(self, keys: KeyScheme) -> None:
        self.keys = keys
        self._owners: weakref.WeakValueDictionary[tuple[int, str, int, int, str], Owner] = (
            weakref.WeakValueDictionary()
        )
        self._models: dict[str, frozenset[str]] = {}
        self._networks: dict[str, tuple[IPNetwork, ...]] = {}

    def owner(self, user_id: int, username: str, role: int, status: int, group: str) -> Owner:
        ident = (user_id, username, role, status, group)
        found = self._owners.get(ident)
        if found is not None:
            return found
        keys = self.keys
        intern = sys.intern
        made = Owner(
            user_id=user_id,
            username=intern(username),
            user_role=role,
            user_status=status,
            user_group=intern(group),
            base=keys.base(user_id),
            user_key=keys.user(user_id),
            stream_key=keys.stream_of_user(user_id),
            orphans_key=keys.orphans(user_id),
            resv_key=intern(keys.reservations(user_id)),
            refused_key=intern(keys.refusals(user_id)),
            reaped_key=intern(keys.reaped(user_id)),
            user_orphan=user_orphan_field(user_id),
        )
        self._owners[ident] = made
        return made

    def models(self, raw: str) -> frozenset[str]:
        found = self._models.get(raw)
        if found is None:
            if len(self._models) >= SHARED_MAX:
                self._models.clear()
            found = self._models[raw] = parse_model_limits(raw)
        return found

    def networks(self, raw: str) -> tuple[IPNetwork, ...]:
        """The allowlist of ``raw``; an unparsable one is empty (fail closed, nobody gets in)."""
        found = self._networks.get(raw)
        if found is None:
            if len(self._networks) >= SHARED_MAX:
                self._networks.clear()
            try:
                found = parse_allow_ips(raw)
            except ValueError:
                found = ()
            self._networks[raw] = found
        return found


def meta_from_row(row: Any, keys: KeyScheme, now: float, shared: Shared | None = None) -> TokenMeta:
    """A ``TokenMeta`` from a ``TOKEN_META_BY_HASH`` row; ``shared`` (the loader's) makes
    tokens that hold equal things hold one object (without it, nothing is shared)."""
    if shared is None:
        shared = Shared(keys)
    intern = sys.intern
    user_group = row["user_group"]
    return TokenMeta(
        id=int(row["id"]),
        name=row["name"],
        status=int(row["status"]),
        expired_time=int(row["expired_time"]),
        unlimited=bool(row["unlimited_quota"]),
        models=shared.models(row["model_limits"]) if row["model_limits_enabled"] else None,
        networks=shared.networks(row["allow_ips"]) if row["allow_ips"].strip() else None,
        group=intern(row["group"] or user_group),
        token_group=intern(row["group"]),
        ver=int(row["ver"]),
        owner=shared.owner(
            int(row["user_id"]),
            row["username"],
            int(row["role"]),
            int(row["user_status"]),
            user_group,
        ),
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
        if kind == "tok" and ident.isascii() and ident.isdigit():
            self.invalidate_token(int(ident))
        elif kind == "user" and ident.isascii() and ident.isdigit():
            self.invalidate_user(int(ident))
        elif kind == "*":
            self.invalidate_all()
