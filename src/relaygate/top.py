"""The figures of ``relaygate top``, read from Redis only (docs/operators.md "relaygate top").

One *sample* is a bounded SCAN of every master (each Redis Cluster primary, or the one
server) for the scheme's ledger keys, then one pipeline per master reading what they hold:
token and user hashes (``limit``, ``used``, ``n`` = admitted requests), today's and this
month's counters, the open reservations and the refusal counts. Rates are differences
between samples: quota/min over the last minute and requests/s over the last interval.
Nothing here touches PostgreSQL; names come from the caller (loaded once at start-up).
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import ConnectionPool, Redis

from relaygate.keys import KeyScheme, day_and_month, day_key, month_key
from relaygate.ledger import Code, parse_reservation_member

RATE_WINDOW_SECONDS = 60.0
DEFAULT_MAX_KEYS = 200_000  # keys one sample may SCAN in all (its bounded cost)
MAX_RESERVATIONS = 10_000  # open reservations read per shard
SCAN_COUNT = 1000

SORT_KEYS = ("rate", "rps", "used", "remaining", "today", "month", "inflight", "id")
REFUSAL_NAMES = {c.value: c.name.lower() for c in Code if c.value >= 10}


@dataclass(slots=True)
class Ledger:
    """One token's or user's figures in a sample (plus rates once two samples exist)."""

    kind: str  # "token" / "user"
    id: int
    user: int
    limit: int
    used: int
    unlimited: bool
    status: int
    admitted: int  # requests admitted (token: its `n` field; user: the sum of its tokens')
    today: int = 0
    month: int = 0
    inflight: int = 0  # open reservations
    inflight_quota: int = 0
    name: str = ""
    rate: float = 0.0  # quota/min over the last minute
    rps: float = 0.0  # admitted requests/s over the last interval

    @property
    def remaining(self) -> int | None:
        return None if self.unlimited else self.limit - self.used

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["remaining"] = self.remaining
        out["rate"] = round(self.rate, 3)
        out["rps"] = round(self.rps, 3)
        return out


@dataclass(slots=True)
class Sample:
    at: float
    tokens: dict[int, Ledger] = field(default_factory=dict)
    users: dict[int, Ledger] = field(default_factory=dict)
    refusals: dict[int, int] = field(default_factory=dict)  # code -> count since forever
    scanned: int = 0
    truncated: bool = False


_TOKEN = re.compile(r"\{\d+\}:tok:(\d+)$")
_USER = re.compile(r"\{\d+\}:user:(\d+)$")


async def masters(redis: Redis) -> list[Redis]:
    """The clients to SCAN: every primary of a Redis Cluster, else ``redis`` itself.

    A cluster's keys are spread over its primaries by hash slot and SCAN sees one node's
    keys only, so each primary is scanned (and read) on its own connection.
    """
    info = await redis.info("cluster")
    if not int(info.get("cluster_enabled", 0)):
        return [redis]
    raw = await redis.execute_command("CLUSTER", "NODES")  # type: ignore[no-untyped-call]
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    # Each node's pool copies the seed's connection settings (timeouts, password, TLS: the
    # connection class) with only the address changed. Not ``Redis(**connection_kwargs)``:
    # those are a connection's arguments, not the client's (redis-py refuses some of them).
    seed = redis.connection_pool
    nodes = []
    for host, port in cluster_primaries(text):
        pool = ConnectionPool(
            connection_class=seed.connection_class,
            **{**seed.connection_kwargs, "host": host, "port": port},
        )
        nodes.append(Redis.from_pool(pool))
    return nodes


def cluster_primaries(nodes: str) -> list[tuple[str, int]]:
    """(host, port) of each healthy primary in a ``CLUSTER NODES`` reply."""
    out = []
    for line in nodes.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        flags = parts[2].split(",")
        if "master" not in flags or "fail" in flags or "noaddr" in flags:
            continue
        addr = parts[1].split("@", 1)[0]
        host, _, port = addr.rpartition(":")
        out.append((host, int(port)))
    return out


async def _scan(node: Redis, pattern: str, budget: int) -> tuple[list[str], bool]:
    """Keys of ``node`` matching ``pattern``, at most ``budget`` keys examined by SCAN."""
    found: list[str] = []
    cursor, examined = 0, 0
    while True:
        cursor, batch = await node.scan(cursor, match=pattern, count=SCAN_COUNT)
        examined += SCAN_COUNT
        found.extend(k.decode() if isinstance(k, bytes) else k for k in batch)
        if int(cursor) == 0:
            return found, False
        if examined >= budget:
            return found, True


async def take_sample(
    nodes: Sequence[Redis], keys: KeyScheme, max_keys: int = DEFAULT_MAX_KEYS
) -> Sample:
    sample = Sample(at=time.time())
    day, month = day_and_month(sample.at)
    budget = max(SCAN_COUNT, max_keys // max(1, len(nodes)))
    for node in nodes:
        found, truncated = await _scan(node, f"{keys.prefix}:{{*}}:*", budget)
        sample.scanned += len(found)
        sample.truncated |= truncated
        await _read_node(node, keys, found, day, month, sample)
    _sum_users(sample)
    return sample


async def _read_node(
    node: Redis, keys: KeyScheme, found: list[str], day: str, month: str, sample: Sample
) -> None:
    toks = [k for k in found if _TOKEN.search(k)]
    users = [k for k in found if _USER.search(k)]
    resvs = [k for k in found if k.endswith(":resv")]
    refused = [k for k in found if k.endswith(":refused")]
    pipe = node.pipeline(transaction=False)
    for k in toks:
        pipe.hmget(k, "limit", "used", "unlimited", "status", "user", "n")
        pipe.get(day_key(k, day))
        pipe.get(month_key(k, month))
    for k in users:
        pipe.hmget(k, "limit", "used", "status")
    for k in resvs:
        pipe.zrange(k, 0, MAX_RESERVATIONS - 1)
    for k in refused:
        pipe.hgetall(k)
    replies = list(await pipe.execute()) if (toks or users or resvs or refused) else []
    pos = 0
    for k in toks:
        h, d, m = replies[pos : pos + 3]
        pos += 3
        if h[3] is None:
            continue  # deleted between SCAN and read
        tid = int(_match(_TOKEN, k))
        sample.tokens[tid] = Ledger(
            "token",
            tid,
            _int(h[4]),
            _int(h[0]),
            _int(h[1]),
            _int(h[2]) == 1,
            _int(h[3]),
            _int(h[5]),
            today=_int(d),
            month=_int(m),
        )
    for k in users:
        h = replies[pos]
        pos += 1
        if h[2] is None:
            continue
        uid = int(_match(_USER, k))
        sample.users[uid] = Ledger("user", uid, uid, _int(h[0]), _int(h[1]), False, _int(h[2]), 0)
    for _ in resvs:
        _count_reservations(replies[pos], sample)
        pos += 1
    for _ in refused:
        for code, n in replies[pos].items():
            c = int(code)
            sample.refusals[c] = sample.refusals.get(c, 0) + int(n)
        pos += 1


def _match(rx: re.Pattern[str], key: str) -> str:
    m = rx.search(key)
    assert m is not None
    return m.group(1)


def _int(raw: Any) -> int:
    return 0 if raw is None else int(raw)


def _count_reservations(members: Iterable[bytes | str], sample: Sample) -> None:
    """Reservations are counted on the token (users get theirs in ``_sum_users``)."""
    for raw in members:
        try:
            r = parse_reservation_member(raw.decode() if isinstance(raw, bytes) else raw)
        except ValueError:
            continue
        tok = sample.tokens.get(r.token_id)
        if tok is not None:
            tok.inflight += 1
            tok.inflight_quota += r.amount


def _sum_users(sample: Sample) -> None:
    for tok in sample.tokens.values():
        user = sample.users.get(tok.user)
        if user is None:
            continue
        user.admitted += tok.admitted
        user.inflight += tok.inflight
        user.inflight_quota += tok.inflight_quota
        user.today += tok.today
        user.month += tok.month


class Rates:
    """The samples of the last minute, and the rates they give."""

    def __init__(self, window: float = RATE_WINDOW_SECONDS) -> None:
        self.window = window
        self.samples: deque[Sample] = deque()

    def add(self, sample: Sample) -> None:
        """Keep ``sample`` (and the newest one older than the window, the rate's base)."""
        self.samples.append(sample)
        while len(self.samples) > 2 and sample.at - self.samples[1].at >= self.window:
            self.samples.popleft()
        if len(self.samples) < 2:
            return
        base, prev = self.samples[0], self.samples[-2]
        for kind in ("tokens", "users"):
            now_rows: dict[int, Ledger] = getattr(sample, kind)
            base_rows: dict[int, Ledger] = getattr(base, kind)
            prev_rows: dict[int, Ledger] = getattr(prev, kind)
            for ident, row in now_rows.items():
                first = base_rows.get(ident)
                since = base.at
                if first is None:  # new since the window began: from its first sighting
                    first, since = self._first(kind, ident)
                row.rate = _per(row.used, first, "used", sample.at - since, 60)
                row.rps = _per(
                    row.admitted, prev_rows.get(ident), "admitted", sample.at - prev.at, 1
                )

    def _first(self, kind: str, ident: int) -> tuple[Ledger | None, float]:
        for s in self.samples:
            row = getattr(s, kind).get(ident)
            if row is not None:
                return row, s.at
        return None, 0.0

    def refusal_rates(self) -> dict[int, float]:
        """Refusals per minute by code, over the window."""
        if len(self.samples) < 2:
            return {}
        base, now = self.samples[0], self.samples[-1]
        span = now.at - base.at
        if span <= 0:
            return {}
        return {c: max(0, n - base.refusals.get(c, 0)) * 60 / span for c, n in now.refusals.items()}


def _per(value: int, before: Ledger | None, attr: str, span: float, unit: float) -> float:
    """Growth of ``value`` per ``unit`` seconds; a fall (refund, rebuilt hash) counts as 0."""
    if before is None or span <= 0:
        return 0.0
    return max(0, value - int(getattr(before, attr))) * unit / span


def matches(row: Ledger, needle: str) -> bool:
    """The filter: ``user:N``, ``token:N``, a bare id (token or user), or part of a name."""
    needle = needle.strip().lower()
    if not needle:
        return True
    kind, _, value = needle.partition(":")
    if value and kind in ("user", "token"):
        return (
            value.isascii()
            and value.isdigit()
            and int(value) == (row.user if kind == "user" else row.id)
        )
    if needle.isascii() and needle.isdigit():
        return int(needle) in (row.id, row.user)
    return needle in row.name.lower()


def ordered(rows: Iterable[Ledger], key: str, needle: str = "") -> list[Ledger]:
    """Rows passing the filter, largest first by ``key`` (ascending for ``id``)."""
    if key not in SORT_KEYS:
        raise ValueError(f"unknown sort key {key!r} (one of {', '.join(SORT_KEYS)})")
    kept = [r for r in rows if matches(r, needle)]
    if key == "id":
        return sorted(kept, key=lambda r: r.id)
    if key == "remaining":
        return sorted(kept, key=lambda r: (r.remaining is None, r.remaining or 0))

    def by(r: Ledger) -> tuple[float, int]:
        return (float(getattr(r, key)), -r.id)

    return sorted(kept, key=by, reverse=True)


def summary(sample: Sample, rates: Rates) -> dict[str, Any]:
    """The header figures: totals over every token."""
    per_min = rates.refusal_rates()
    return {
        "tokens": len(sample.tokens),
        "users": len(sample.users),
        "quota_per_min": round(sum(t.rate for t in sample.tokens.values()), 3),
        "requests_per_second": round(sum(t.rps for t in sample.tokens.values()), 3),
        "inflight": sum(t.inflight for t in sample.tokens.values()),
        "refusals": {
            REFUSAL_NAMES.get(c, str(c)): {"total": n, "per_min": round(per_min.get(c, 0.0), 3)}
            for c, n in sorted(sample.refusals.items())
        },
        "scanned_keys": sample.scanned,
        "truncated": sample.truncated,
    }


def name_rows(sample: Sample, tokens: dict[int, str], users: dict[int, str]) -> None:
    for t in sample.tokens.values():
        t.name = tokens.get(t.id, "")
    for u in sample.users.values():
        u.name = users.get(u.id, "")
