"""The flusher: usage events from the Redis streams into PostgreSQL, exactly once.

Per round: read a batch across every shard's stream (XREADGROUP, group ``flushers``), write
it in ONE PostgreSQL transaction (the log rows and the totals they add, ``store.logs``:
a COPY, or insert ... on conflict do nothing returning when some are already recorded),
commit, then XACK + XDEL. A flusher killed before the
commit leaves the entries pending: another flusher claims them with XAUTOCLAIM once idle, or
the same consumer re-reads them. One killed after the commit gets them redelivered and the
unique key skips them. While PostgreSQL is down, entries wait in Redis (pending) and the
flusher retries with backoff.

Under a backlog the rounds overlap (``round``): while batch N is written, batch N+1 is read
and decoded and batch N-1's XACK + XDEL runs. A batch's XACK is only ever sent after its
own commit returned, and at most one is in flight; a crash with one in flight is the
"killed after the commit" case above.

An event that can never be recorded (malformed, or refused by PostgreSQL for a data reason:
the batch is bisected to find it) is moved to its shard's dead-letter stream
(``KeyScheme.dead_letter``) with the reason, atomically with its XACK + XDEL.

The flusher also runs the reaper (``relaygate.reaper``) every ``REAP_INTERVAL`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import hiredis
from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from relaygate.config import Settings
from relaygate.events import MalformedEvent
from relaygate.keys import STREAM_GROUP, KeyScheme
from relaygate.ledger import Script, Scripts
from relaygate.reaper import Reaper
from relaygate.store.logs import PartitionKeeper, Row, event_row, write_rows

log = logging.getLogger(__name__)

REAP_INTERVAL = 5.0
MAX_BACKOFF = 10.0
# The worker's garbage collector runs once per this many new container objects (Python's
# default: 700). See ``tune_gc``.
GC_GEN0_THRESHOLD = 50_000
# (stream, entry id, fields): a dict, or the flat list of a raw XREADGROUP reply; None (or
# empty) for an entry deleted while pending.
Entry = tuple[str, bytes, dict[bytes, bytes] | list[bytes] | None]


@dataclass
class Batch:
    """What one read brought, decoded: what to ack, the log rows (with the entry of each, to
    dead-letter one PostgreSQL refuses) and the malformed entries with the reason."""

    entries: list[Entry]
    rows: list[Row] = field(default_factory=list)
    row_entries: list[Entry] = field(default_factory=list)
    malformed: list[tuple[Entry, str]] = field(default_factory=list)


# Entries decoded between two yields to the event loop in ``prepare_yielding``.
DECODE_SLICE = 500


def prepare(entries: list[Entry]) -> Batch:
    """Decode a read (CPU only)."""
    batch = Batch(entries)
    _decode_into(batch, entries)
    return batch


async def prepare_yielding(entries: list[Entry]) -> Batch:
    """``prepare``, letting the event loop run every DECODE_SLICE entries. The prefetch
    decodes while the previous batch's COPY streams to PostgreSQL; decoding a whole batch
    (16,000 entries, ~40 ms) in one go held the loop, so the COPY stopped sending and
    PostgreSQL sat idle once it had drained the socket buffers."""
    batch = Batch(entries)
    for lo in range(0, len(entries), DECODE_SLICE):
        if lo:
            await asyncio.sleep(0)
        _decode_into(batch, entries[lo : lo + DECODE_SLICE])
    return batch


def _decode_into(batch: Batch, entries: list[Entry]) -> None:
    rows, row_entries = batch.rows, batch.row_entries
    for entry in entries:
        fields = entry[2]
        if not fields:
            continue  # deleted before we got to it: nothing to write
        try:
            rows.append(event_row(fields))
        except (MalformedEvent, TypeError, ValueError) as exc:
            batch.malformed.append((entry, f"malformed: {exc}"))
            continue
        row_entries.append(entry)


class Flusher:
    def __init__(
        self, settings: Settings, pool: asyncpg.Pool, redis: Redis, scripts: Scripts
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.redis = redis
        # XREADGROUP's replies as Redis sent them: redis-py's own parsing (a dict and a
        # tuple per entry) cost the flusher more than decoding the event did.
        self._reader = Redis(connection_pool=redis.connection_pool)
        self._reader.set_response_callback("XREADGROUP", _raw_reply)
        self.scripts = scripts
        self.keys = KeyScheme(settings.key_prefix, settings.shards)
        self.streams = self.keys.streams()
        self._dead_keys = {
            self.keys.stream(i): self.keys.dead_letter(i) for i in range(settings.shards)
        }
        self._dead_letter_script = Script("dead_letter")
        self.consumer = f"{socket.gethostname()}-{os.getpid()}-{os.urandom(3).hex()}"
        self.partitions = PartitionKeeper()
        self._own_pending = True  # start by re-reading anything already ours
        self._last_claim = 0.0
        self._last_reap = 0.0
        # The next batch, read and decoded while the current one is written (see ``round``).
        self._prefetch: asyncio.Task[Batch] | None = None
        # The previous batch's XACK + XDEL, sent after its commit, running while the current
        # batch is written (see ``round``); at most one.
        self._acking: asyncio.Task[None] | None = None
        self.flushed = 0
        self.batches = 0  # batches committed to PostgreSQL (and acked)
        self.failures = 0  # rounds that failed (retried after a backoff)
        self.reaper = Reaper(settings, redis, scripts, self.keys)
        self.dead_lettered = 0  # entries moved to a dead-letter stream by this process

    async def setup(self) -> None:
        for stream in self.streams:
            try:
                await self.redis.xgroup_create(stream, STREAM_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    async def run(self, stop: asyncio.Event) -> None:
        await self.setup()
        tune_gc()
        try:
            await self._run(stop)
        finally:
            await self._drop_prefetch()  # its entries stay pending: re-read or claimed later
            try:
                await self._finish_ack()  # committed: ack it rather than leave a redelivery
            except Exception as exc:
                log.warning("acking the last batch failed (%s); it will be redelivered", exc)

    async def _run(self, stop: asyncio.Event) -> None:
        backoff = 0.1
        while not stop.is_set():
            try:
                handled = await self.round()
                backoff = 0.1
                if 0 < handled < self.settings.flush_batch // 4 and self._prefetch is None:
                    # A trickle: let events gather for a moment rather than run one
                    # PostgreSQL transaction per event (at low rates that was ~1 ms of flusher
                    # and PostgreSQL CPU per request, next to the relays it shares cores with;
                    # each transaction also briefly takes a core from them, which showed in
                    # their p99 latency at 20 transactions a second).
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.settings.flush_linger_ms / 1000)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                if is_nogroup(exc):
                    await self._recreate_groups()  # then the usual (short at first) backoff
                expected = (
                    OSError,
                    asyncpg.PostgresError,
                    asyncpg.InterfaceError,
                    RedisError,
                    asyncio.TimeoutError,
                )
                if isinstance(exc, expected):
                    log.warning(
                        "flush round failed (%s: %s); retrying in %.1fs",
                        type(exc).__name__,
                        exc,
                        backoff,
                    )
                else:
                    log.exception("flush round failed unexpectedly; retrying in %.1fs", backoff)
                self._own_pending = True
                try:
                    await asyncio.wait_for(stop.wait(), backoff)
                except TimeoutError:
                    pass
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _recreate_groups(self) -> bool:
        """NOGROUP: Redis lost the streams with their group (restarted empty). Without the
        group every read fails forever, so create it again; entries appended since the
        restart are read from the start. True if that worked."""
        log.warning("consumer group missing (Redis restarted empty?); creating it again")
        try:
            await self.setup()
        except RedisError as exc:
            log.warning("re-creating the consumer groups failed: %s", exc)
            return False
        return True

    async def round(self) -> int:
        """One read-write-ack cycle; returns how many entries were handled.

        While a full batch is being written to PostgreSQL, the next one is already being
        read from Redis (only new entries, ``>``) and decoded, and the previous one's XACK
        + XDEL is running, so the flusher's, PostgreSQL's and Redis's work overlap (a
        serial XACK + XDEL of 16,000 entries left PostgreSQL idle for a fifth of each
        round). Entries are acked only after their own batch commits; a prefetched batch
        is simply pending under this consumer until then, and is dropped (to be re-read
        from the pending list) if the current batch fails. A round that has no prefetched
        batch to go on with waits for its ack, so it returns with everything it wrote
        acked.
        """
        await self.housekeeping()
        batch = await self._take_prefetched()
        if batch is None:
            if self._own_pending:
                # Re-reading from "0": let an ack in flight land first, or its entries
                # would be read again and (harmlessly but slowly) written the ON CONFLICT way.
                await self._finish_ack()
            batch = prepare(await self.read())
        entries = batch.entries
        if not entries:
            await self._finish_ack()
            return 0
        if not self._own_pending and len(entries) >= self.settings.flush_batch:
            # A full batch: more is probably waiting. Read it while this one is written.
            self._prefetch = asyncio.ensure_future(self._read_prepared())
        try:
            await self.write_batch(batch)
            await self._finish_ack()  # the previous batch's: at most one in flight
            acking = asyncio.ensure_future(self._ack_committed(entries))
            if self._prefetch is None:
                await acking
            else:
                self._acking = acking
        except BaseException:
            await self._drop_prefetch()
            raise
        return len(entries)

    async def _read_prepared(self) -> Batch:
        return await prepare_yielding(await self.read())

    async def _ack_committed(self, entries: list[Entry]) -> None:
        """XACK + XDEL a batch whose transaction has committed."""
        await self.ack(entries)
        self.batches += 1

    async def _finish_ack(self) -> None:
        """Wait for the XACK + XDEL in flight, if any; raises its error (the entries are
        then pending under this consumer, recorded: re-read, they are skipped by the
        unique key and acked)."""
        task, self._acking = self._acking, None
        if task is None:
            return
        try:
            await task
        except Exception:
            self._own_pending = True
            raise

    async def housekeeping(self) -> None:
        """Claim abandoned entries and reap, each when due, on every round: under a steady
        full load every round takes a prefetched batch, and skipping these then would leave
        a dead flusher's entries and dead relays' reservations alone for as long as it lasts."""
        now = time.monotonic()
        if now - self._last_claim >= self.settings.flush_claim_idle_ms / 2000:
            self._last_claim = now
            if await self.claim_abandoned():
                self._own_pending = True
        if now - self._last_reap >= REAP_INTERVAL:
            self._last_reap = now
            await self.reap()

    async def _take_prefetched(self) -> Batch | None:
        task, self._prefetch = self._prefetch, None
        if task is None:
            return None
        try:
            return await task
        except asyncio.CancelledError:
            task.cancel()
            raise
        except Exception:
            self._own_pending = True  # whatever it may have read is pending under us
            raise

    async def _drop_prefetch(self) -> None:
        task, self._prefetch = self._prefetch, None
        if task is None:
            return
        task.cancel()
        try:
            await task
        except BaseException:
            pass
        self._own_pending = True  # entries it read are pending: re-read them from "0"

    async def read(self) -> list[Entry]:
        if self._own_pending:
            reply = await self._reader.xreadgroup(
                STREAM_GROUP,
                self.consumer,
                {s: "0" for s in self.streams},
                count=self.settings.flush_batch,
            )
            entries = _flatten(reply)
            if entries:
                return entries
            self._own_pending = False
        reply = await self._reader.xreadgroup(
            STREAM_GROUP,
            self.consumer,
            {s: ">" for s in self.streams},
            count=self.settings.flush_batch,
            block=self.settings.flush_block_ms,
        )
        return _flatten(reply)

    async def write_batch(self, batch: Batch) -> None:
        """Record the batch. Malformed entries, and entries PostgreSQL refuses for a data
        reason (found by bisecting, see ``_write_range``), go to the dead-letter stream; an
        outage raises (the round is retried and nothing is dead-lettered)."""
        for entry, reason in batch.malformed:
            await self.dead_letter(entry, reason)
        rows = batch.rows
        n = len(rows)
        if not n:
            return
        refused: list[tuple[int, str]] = []
        async with self.pool.acquire() as conn:
            await self.partitions.ensure(conn, {row[1] for row in rows})
            new = await self._write_range(conn, rows, 0, n, refused)
        for i, reason in refused:
            await self.dead_letter(batch.row_entries[i], reason)
        self.flushed += new
        if new + len(refused) != n:
            log.info("skipped %d already-recorded events (redelivery)", n - new - len(refused))

    async def _write_range(
        self, conn: Any, rows: list[Row], lo: int, hi: int, refused: list[tuple[int, str]]
    ) -> int:
        """Write rows ``lo:hi``; if PostgreSQL refuses them for a data reason, split in two and
        retry each half, so every good row lands and the bad ones end in ``refused`` (one
        poison event would otherwise fail the whole batch forever). Each part commits on its
        own; a redelivery after a crash mid-way skips the committed ones by the unique key."""
        try:
            return await write_rows(conn, rows[lo:hi] if lo or hi < len(rows) else rows)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            if hi - lo == 1:
                refused.append((lo, f"refused by PostgreSQL: {type(exc).__name__}: {exc}"[:500]))
                return 0
        mid = (lo + hi) // 2
        return await self._write_range(conn, rows, lo, mid, refused) + await self._write_range(
            conn, rows, mid, hi, refused
        )

    async def dead_letter(self, entry: Entry, reason: str) -> None:
        """Move one entry to its dead-letter stream (atomically acked and deleted, so a retry
        never appends it twice); counted and logged once."""
        stream, entry_id, _ = entry
        moved = await self._dead_letter_script(
            self.redis,
            (stream, self._dead_keys[stream]),
            (STREAM_GROUP, entry_id, reason),
        )
        if int(moved):
            self.dead_lettered += 1
            log.error(
                "usage event %s in %s moved to the dead-letter stream: %s",
                entry_id.decode() if isinstance(entry_id, bytes) else entry_id,
                stream,
                reason,
            )

    async def ack(self, entries: list[Entry]) -> None:
        """XACK + XDEL the entries, all in one MULTI/EXEC (``xack_xdel``)."""
        by_stream: dict[str, list[bytes]] = {}
        for stream, entry_id, _ in entries:
            ids = by_stream.get(stream)
            if ids is None:
                by_stream[stream] = [entry_id]
            else:
                ids.append(entry_id)
        await xack_xdel(self.redis, STREAM_GROUP, by_stream)

    async def claim_abandoned(self) -> bool:
        """Take over entries another (dead) flusher left pending for too long."""
        claimed_any = False
        for stream in self.streams:
            start = "0-0"
            while True:
                reply = await self.redis.xautoclaim(
                    stream,
                    STREAM_GROUP,
                    self.consumer,
                    min_idle_time=self.settings.flush_claim_idle_ms,
                    start_id=start,
                    count=self.settings.flush_batch,
                )
                next_start, ids = reply[0], reply[1]
                if ids:
                    claimed_any = True
                    log.info("claimed %d abandoned entries from %s", len(ids), stream)
                if next_start in (b"0-0", "0-0"):
                    break
                start = next_start.decode() if isinstance(next_start, bytes) else next_start
        return claimed_any

    async def reap(self) -> int:
        """One reaper pass (``relaygate.reaper``)."""
        return await self.reaper.reap()

    @property
    def reaped(self) -> int:
        return self.reaper.reaped


# hiredis's stub types its argument as a 1-tuple; it takes any number of arguments.
_pack_command: Callable[[tuple[Any, ...]], bytes] = hiredis.pack_command
_MULTI = b"*1\r\n$5\r\nMULTI\r\n"
_EXEC = b"*1\r\n$4\r\nEXEC\r\n"


def pack_xack_xdel(group: str, by_stream: dict[str, list[bytes]]) -> list[bytes]:
    """MULTI, then XACK and XDEL of each stream's ids, then EXEC, as the RESP Redis reads.

    Each stream's ids are packed once (hiredis, in C) and the same bytes end both commands.
    redis-py's pipeline packed every id twice through a Python generator per argument:
    ~7.5 ms of the flusher's CPU per 20,000 ids, 2.4 with hiredis packing each command,
    about half that again with the shared block (bench/README.md, "Flusher")."""
    out = [_MULTI]
    for stream, ids in by_stream.items():
        block = _pack_command(tuple(ids))  # "*<n>\r\n" then the ids
        ids_resp = block[block.index(b"\r\n") + 2 :]
        out.append(_resp_head(len(ids) + 3, ("XACK", stream, group)))
        out.append(ids_resp)
        out.append(_resp_head(len(ids) + 2, ("XDEL", stream)))
        out.append(ids_resp)
    out.append(_EXEC)
    return out


def _resp_head(argc: int, first: tuple[str, ...]) -> bytes:
    """The start of a command of ``argc`` arguments whose first ones are ``first``."""
    packed = _pack_command(first)
    return b"*%d\r\n" % argc + packed[packed.index(b"\r\n") + 2 :]


async def xack_xdel(redis: Redis, group: str, by_stream: dict[str, list[bytes]]) -> None:
    """Send ``pack_xack_xdel`` on a connection of the client's pool and read the replies:
    +OK, +QUEUED per command, then EXEC's. Like the pipeline it replaces, it raises the
    first error EXEC reports. Any failure on the way (an error queueing a command, a
    timeout, a lost connection) closes the connection, which discards the transaction if
    EXEC was not reached: nothing or everything is acked, and what is not stays pending."""
    payload = pack_xack_xdel(group, by_stream)
    pool = redis.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(payload)
        for _ in range(1 + 2 * len(by_stream)):
            await conn.read_response()  # raises on an error reply
        replies = await conn.read_response()
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    for reply in replies or ():
        if isinstance(reply, Exception):
            raise reply


def tune_gc() -> None:
    """Make the cycle collector rarer in the worker.

    Each event makes ~5 container objects (hiredis's lists, the decoded dict, the row), so
    at Python's default threshold (700) the collector ran every ~140 events, and its
    older-generation passes walked the two batches held in memory: ~1 µs per event, a
    fifth of decoding (bench/README.md, "Flusher"), to find no cycles (rows and entries
    hold none; reference counting frees them). The collector still runs, every
    GC_GEN0_THRESHOLD allocations, for whatever else in the process makes cycles. (Not
    ``gc.freeze()`` as well: frozen objects drop out of ``gc.get_referrers``, which
    surprised a test tool sharing the process.)"""
    gen0, gen1, gen2 = gc.get_threshold()
    if gen0 and gen0 < GC_GEN0_THRESHOLD:
        gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def is_nogroup(exc: BaseException) -> bool:
    """Redis has no such stream or consumer group (XREADGROUP, XAUTOCLAIM, XACK)."""
    return isinstance(exc, ResponseError) and str(exc).startswith("NOGROUP")


def is_data_error(exc: BaseException) -> bool:
    """PostgreSQL (or asyncpg encoding the arguments) refused the values themselves: retrying
    the same rows can never succeed. Anything else (connection lost, server shutting down,
    too many connections, timeouts) is an outage: retried, never dead-lettered."""
    # Server side: SQLSTATE class 22 (data exception: numeric value out of range, invalid
    # text representation, character not in repertoire, ...). Client side: asyncpg's own
    # DataError ("invalid input for query argument"), an InterfaceError + ValueError; and,
    # from a COPY, the encoder's own OverflowError (an integer beyond BIGINT).
    return isinstance(exc, (asyncpg.DataError, asyncpg.exceptions._base.DataError, OverflowError))


def _raw_reply(response: Any, **options: Any) -> Any:
    return response


def _flatten(reply: Any) -> list[Entry]:
    """The entries of a raw XREADGROUP reply: a map of stream to entries (RESP3) or a list of
    [stream, entries] (RESP2); an entry is [id, [name, value, ...]], its fields None once
    deleted."""
    out: list[Entry] = []
    if not reply:
        return out
    for stream, items in reply.items() if isinstance(reply, dict) else reply:
        name = stream.decode() if isinstance(stream, bytes) else stream
        out.extend([(name, entry_id, fields) for entry_id, fields in items])
    return out
