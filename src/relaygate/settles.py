"""Ledger writes that could not reach Redis yet: kept in order, replayed until applied, and
journaled on local disk so that neither a Redis outage nor a restart of the relay loses one.

Why: an answer that was delivered must be charged. When a settle's reply is lost (Redis
stalled past the deadline, restarted, the connection dropped, NOSCRIPT), the relay does not
know whether it ran; replaying it is safe because settle.lua decides exactly-once itself (it
applies a settle only while the reservation is open, or reaped). So the keeper simply
replays until Redis answers. The reaper never refunds a reservation whose relay is alive
(its heartbeat is refreshed first when Redis comes back), so a kept settle finds its
reservation still open.

The journal is only written on this failure path (the hot path never touches the disk): a
line per kept operation, fsync'd before ``keep`` returns, and a ``done`` line once applied;
emptied when nothing is left. A relay killed with operations still kept leaves its file; the
next relay with the same key prefix that starts on this host adopts it (under an exclusive
``flock``, so two relays never replay one file) and replays it.

Besides settles, the keeper holds the release of a reservation whose reserve reply was lost
(the script may have run): without it, the quota would stay held while this relay is alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pathlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any

import orjson
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relaygate import ledger
from relaygate.ledger import Scripts, SettleCall

log = logging.getLogger(__name__)

BACKOFF_MIN = 0.05
BACKOFF_MAX = 2.0
# A relay with this many writes kept refuses new requests (503) until Redis takes them: new
# requests could not be admitted without Redis anyway, and memory stays bounded.
MAX_KEPT = 100_000
JOURNAL_SUFFIX = ".ledger.jsonl"


@dataclass(frozen=True, slots=True)
class LostReserve:
    """A reserve whose reply was lost: find its reservation by member prefix and refund it."""

    resv_key: str
    ledger_keys: tuple[str, ...]  # token, user, day, month
    prefix: str  # "<rid>|<token>|<user>|<day>|<month>|<instance>"


Operation = SettleCall | LostReserve


def to_record(seq: int, op: Operation) -> dict[str, Any]:
    if isinstance(op, SettleCall):
        return {
            "seq": seq,
            "kind": "settle",
            "keys": list(op.keys),
            "reserved": op.reserved,
            "actual": op.actual,
            "orphans": list(op.orphan_fields),
            "member": op.member,
            "rid": op.rid,
            "event": op.event.decode() if op.event is not None else None,
        }
    return {
        "seq": seq,
        "kind": "release",
        "resv": op.resv_key,
        "keys": list(op.ledger_keys),
        "prefix": op.prefix,
    }


def from_record(rec: dict[str, Any]) -> Operation:
    """An operation from its journal line; raises KeyError/ValueError/TypeError if malformed."""
    if rec["kind"] == "settle":
        orphans = rec["orphans"]
        event = rec["event"]
        return SettleCall(
            keys=tuple(str(k) for k in rec["keys"]),
            reserved=int(rec["reserved"]),
            actual=int(rec["actual"]),
            orphan_fields=(str(orphans[0]), str(orphans[1])),
            member=str(rec["member"]),
            rid=str(rec["rid"]),
            event=event.encode() if isinstance(event, str) else None,
        )
    if rec["kind"] == "release":
        return LostReserve(str(rec["resv"]), tuple(str(k) for k in rec["keys"]), str(rec["prefix"]))
    raise ValueError(f"unknown journal record kind {rec['kind']!r}")


def read_journal(path: pathlib.Path) -> list[Operation]:
    """The operations of a journal not marked done, in order; a torn last line is skipped."""
    kept: dict[int, Operation] = {}
    with path.open("rb") as fh:
        for line in fh:
            try:
                rec = orjson.loads(line)
                if "done" in rec:
                    kept.pop(int(rec["done"]), None)
                else:
                    kept[int(rec["seq"])] = from_record(rec)
            except (orjson.JSONDecodeError, KeyError, ValueError, TypeError, IndexError):
                log.error("unreadable line in ledger journal %s skipped", path.name)
    return [kept[seq] for seq in sorted(kept)]


class Journal:
    """This process's journal file: created (and locked) on first use."""

    def __init__(self, directory: pathlib.Path, name: str) -> None:
        self.directory = directory
        self.path = directory / f"{name}{JOURNAL_SUFFIX}"
        self._fh: IO[bytes] | None = None

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            # Locked under a temporary name, then renamed: another relay adopting journals
            # must never see (and take) a file whose owner is alive.
            tmp = self.path.with_name(f".{self.path.name}.tmp")
            fh = tmp.open("ab")
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            os.replace(tmp, self.path)
            self._fh = fh
        return self._fh

    def append(self, record: dict[str, Any]) -> None:
        fh = self._open()
        fh.write(orjson.dumps(record) + b"\n")
        fh.flush()
        os.fsync(fh.fileno())

    def clear(self) -> None:
        if self._fh is not None:
            self._fh.truncate(0)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def close(self, empty: bool) -> None:
        if self._fh is None:
            return
        if empty:
            with contextlib.suppress(OSError):
                self.path.unlink()
        self._fh.close()
        self._fh = None


def adopt_journals(
    directory: pathlib.Path,
    prefix: str,
    own: pathlib.Path,
    keep: Callable[[Sequence[Operation]], None],
) -> int:
    """Take over the journals left by dead relays of this key prefix: their operations are
    handed to ``keep`` (which journals them in our own file) before the old file is deleted,
    so a crash in between replays them twice at worst, which settle.lua makes harmless."""
    adopted = 0
    if not directory.is_dir():
        return adopted
    for path in sorted(directory.glob(f"{prefix}-*{JOURNAL_SUFFIX}")):
        if path == own:
            continue
        try:
            fh = path.open("rb+")
        except OSError:
            continue
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its relay is alive
            ops = read_journal(path)
            keep(ops)
            path.unlink()
        if ops:
            adopted += len(ops)
            log.warning("adopted %d ledger writes from %s", len(ops), path.name)
    return adopted


class SettleKeeper:
    def __init__(
        self,
        scripts: Scripts,
        redis: Redis,
        journal: Journal,
        reaped_key_of: Callable[[str], str],
        heartbeat: Callable[[], Awaitable[None]],
    ) -> None:
        self.scripts = scripts
        self.redis = redis
        self.journal = journal
        self._reaped_key_of = reaped_key_of  # reservations zset key -> its reaped zset key
        self._heartbeat = heartbeat
        self._ops: deque[tuple[int, Operation]] = deque()
        self._seq = 0
        self._wake = asyncio.Event()
        self.applied = 0
        self.kept_total = 0

    @property
    def pending(self) -> int:
        return len(self._ops)

    def keep(self, op: Operation) -> None:
        """Hold ``op`` until Redis applies it; durable (journaled) when this returns."""
        self._seq += 1
        try:
            self.journal.append(to_record(self._seq, op))
        except OSError as exc:
            log.error("ledger journal write failed (%s): write kept in memory only", exc)
        self._ops.append((self._seq, op))
        self.kept_total += 1
        self._wake.set()

    def keep_all(self, ops: Sequence[Operation]) -> None:
        for op in ops:
            self.keep(op)

    async def run(self, closing: asyncio.Event) -> None:
        """Replay kept operations in order until each is applied; back off while Redis is
        away. Before the first replay after a failure, refresh this relay's heartbeat, so the
        reaper sees us alive before it could mistake our open reservations for abandoned."""
        backoff = BACKOFF_MIN
        healthy = True
        while not closing.is_set():
            if not self._ops:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            try:
                if not healthy:
                    await self._heartbeat()
                await self.replay_one()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away or refusing; never let the replayer die
                if healthy:
                    log.warning("ledger replay waits for Redis (%s); %d kept", exc, self.pending)
                healthy = False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closing.wait(), backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if not healthy:
                log.warning("Redis is back: replaying %d kept ledger writes", self.pending)
            healthy, backoff = True, BACKOFF_MIN

    async def replay_one(self) -> None:
        seq, op = self._ops[0]
        await self.apply(op)
        self._ops.popleft()
        self.applied += 1
        try:
            if self._ops:
                self.journal.append({"done": seq})
            else:
                self.journal.clear()
        except OSError as exc:
            log.error("ledger journal write failed (%s)", exc)

    async def apply(self, op: Operation) -> None:
        if isinstance(op, SettleCall):
            await ledger.settle(self.scripts, self.redis, op)
            return
        reaped = self._reaped_key_of(op.resv_key)
        async for raw, _deadline in self.redis.zscan_iter(op.resv_key, match=f"{op.prefix}|*"):
            member = raw.decode() if isinstance(raw, bytes) else str(raw)
            amount = int(member.rsplit("|", 1)[1])
            keys = (*op.ledger_keys, op.resv_key, reaped)
            await ledger.reap(self.scripts, self.redis, keys, member, amount)

    async def flush(self, within: float) -> None:
        """At shutdown: try to apply what is kept, for a bounded time; the rest stays in the
        journal for the next start."""
        with contextlib.suppress(TimeoutError, RedisError, OSError):
            async with asyncio.timeout(within):
                while self._ops:
                    await self.replay_one()

    def close(self) -> None:
        if self._ops:
            log.error(
                "%d ledger writes could not reach Redis; kept in %s for the next start",
                self.pending,
                self.journal.path,
            )
        self.journal.close(empty=not self._ops)
