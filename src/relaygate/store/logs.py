"""Writing usage events to PostgreSQL exactly once (the flusher's transaction).

Two ways to write a batch, one transaction each, the log rows and the totals they add always
together:

* ``copy_rows``, the usual one: a binary COPY of the rows straight into ``logs``, then the
  totals. COPY has no ON CONFLICT, but the unique key (request_id, created_at) still holds:
  a batch holding any event already recorded fails whole, and nothing of it is kept.
* ``write_columns``, for such a batch (a redelivery after a crash between commit and XACK):
  INSERT ... ON CONFLICT DO NOTHING RETURNING, and only the returned rows' totals.

``write_rows`` tries the first and falls back to the second. Why not always the second: its
array parameters cost the flusher twice the CPU to encode (asyncpg inspects every element),
and ON CONFLICT's speculative insertion costs PostgreSQL a third more per row, for a case
that only follows a crash (bench/README.md, "Flusher").
"""

from __future__ import annotations

import calendar
import functools
import operator
import time
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg
import orjson

from relaygate import events
from relaygate.events import MalformedEvent

INSERT_LOGS = """
INSERT INTO logs (request_id, created_at, type, user_id, username, token_id, token_name,
                  model_name, channel_id, "group", quota, prompt_tokens, completion_tokens,
                  use_time_ms, is_stream, ip, content, other)
SELECT * FROM unnest($1::text[], $2::bigint[], $3::int[], $4::bigint[], $5::text[], $6::bigint[],
                     $7::text[], $8::text[], $9::bigint[], $10::text[], $11::bigint[], $12::bigint[],
                     $13::bigint[], $14::bigint[], $15::bool[], $16::text[], $17::text[], $18::text[])
ON CONFLICT (request_id, created_at) DO NOTHING
RETURNING token_id, user_id, channel_id, quota, created_at
"""

# The columns of INSERT_LOGS (and of every row tuple), in its order.
LOG_COLUMNS = (
    "request_id",
    "created_at",
    "type",
    "user_id",
    "username",
    "token_id",
    "token_name",
    "model_name",
    "channel_id",
    "group",
    "quota",
    "prompt_tokens",
    "completion_tokens",
    "use_time_ms",
    "is_stream",
    "ip",
    "content",
    "other",
)

# The three totals in one statement (one round trip; every data-modifying WITH part runs).
ADD_TOTALS = """
WITH tok AS (
    UPDATE tokens AS t
    SET used_quota = t.used_quota + v.q, accessed_time = GREATEST(t.accessed_time, v.ts)
    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, q, ts)
    WHERE t.id = v.id
), usr AS (
    UPDATE users AS u SET used_quota = u.used_quota + v.q, request_count = u.request_count + v.n
    FROM unnest($4::bigint[], $5::bigint[], $6::bigint[]) AS v(id, q, n)
    WHERE u.id = v.id
)
UPDATE channels AS c SET used_quota = c.used_quota + v.q
FROM unnest($7::bigint[], $8::bigint[]) AS v(id, q)
WHERE c.id = v.id
"""


def month_bounds(ts: int) -> tuple[str, int, int]:
    """(partition suffix YYYYMM, first second of the month, first second of the next)."""
    t = time.gmtime(ts)
    year, month = t.tm_year, t.tm_mon
    ny, nm = (year + 1, 1) if month == 12 else (year, month + 1)
    start = calendar.timegm((year, month, 1, 0, 0, 0))
    end = calendar.timegm((ny, nm, 1, 0, 0, 0))
    return f"{year:04d}{month:02d}", start, end


class PartitionKeeper:
    """Creates the month partition of the log table before the first row of that month."""

    def __init__(self) -> None:
        self._known: set[str] = set()

    async def ensure(self, conn: Any, timestamps: Iterable[int]) -> None:
        for ts in {month_bounds(ts) for ts in set(timestamps)}:
            suffix, start, end = ts
            if suffix in self._known:
                continue
            try:
                await conn.execute(
                    f"CREATE TABLE IF NOT EXISTS logs_{suffix} PARTITION OF logs "
                    f"FOR VALUES FROM ({start}) TO ({end})"
                )
            except (asyncpg.DuplicateTableError, asyncpg.UniqueViolationError):
                pass  # another flusher created it a moment ago
            self._known.add(suffix)


N_COLUMNS = len(LOG_COLUMNS)
Row = tuple[Any, ...]  # one log row, LOG_COLUMNS order
# What add_totals needs of a row: token_id, user_id, channel_id, quota, created_at.
_TOTALS_FACTS = operator.itemgetter(5, 3, 8, 10, 1)


async def write_rows(conn: Any, rows: Sequence[Row]) -> int:
    """Record the rows and add their quota to the totals, exactly once; returns how many rows
    were new. COPY first; if any row is already recorded (the unique key refuses the whole
    COPY, and its transaction is rolled back), INSERT ... ON CONFLICT DO NOTHING instead."""
    try:
        return await copy_rows(conn, rows)
    except asyncpg.UniqueViolationError:
        pass
    return await write_columns(conn, list(zip(*rows, strict=True)))


async def copy_rows(conn: Any, rows: Sequence[Row]) -> int:
    """COPY the rows into ``logs`` and add all of them to the totals, in one transaction.
    Raises UniqueViolationError, having written nothing, if any of them is already there."""
    async with conn.transaction():
        await conn.copy_records_to_table("logs", records=rows, columns=LOG_COLUMNS)
        await add_totals(conn, map(_TOTALS_FACTS, rows))
    return len(rows)


async def write_columns(conn: Any, cols: Sequence[Sequence[Any]]) -> int:
    """Insert the rows (column by column, INSERT_LOGS order) and add the newly inserted
    ones' quota to the totals, in one transaction.

    Rows already present (a redelivery after a crash between commit and XACK) are skipped by
    the unique key and add nothing. Returns how many rows were new.
    """
    async with conn.transaction():
        inserted = await conn.fetch(INSERT_LOGS, *cols)
        if not inserted:
            return 0
        await add_totals(conn, inserted)  # RETURNING gives the totals' order
    return len(inserted)


async def add_totals(conn: Any, facts: Iterable[Sequence[int]]) -> None:
    """Add quota to the token, user and channel totals; ``facts`` are (token_id, user_id,
    channel_id, quota, created_at) per row. One statement, ids in order so that concurrent
    flushers lock the rows in the same order."""
    tokens: dict[int, list[int]] = {}
    users: dict[int, list[int]] = {}
    channels: dict[int, int] = {}
    for tid, uid, cid, q, ts in facts:
        tok = tokens.get(tid)
        if tok is None:
            tokens[tid] = [q, ts]
        else:
            tok[0] += q
            if ts > tok[1]:
                tok[1] = ts
        usr = users.get(uid)
        if usr is None:
            users[uid] = [q, 1]
        else:
            usr[0] += q
            usr[1] += 1
        channels[cid] = channels.get(cid, 0) + q
    tids = sorted(tokens)
    uids = sorted(users)
    cids = sorted(channels)
    await conn.execute(
        ADD_TOTALS,
        tids,
        [tokens[i][0] for i in tids],
        [tokens[i][1] for i in tids],
        uids,
        [users[i][0] for i in uids],
        [users[i][1] for i in uids],
        cids,
        [channels[i] for i in cids],
    )


ESTIMATED_NOTE = "usage estimated: upstream reported none"
_loads = orjson.loads


def event_row(f: dict[bytes, bytes] | list[bytes]) -> Row:
    """One usage event's log row (LOG_COLUMNS order, the types COPY needs) from its stream
    entry's fields: those of ``events.decode_entry``, as a dict or the flat list of a raw
    XREADGROUP reply.

    Raises MalformedEvent on a malformed event (sent to the dead-letter stream); a value of
    the wrong type raises ValueError or TypeError (the flusher dead-letters those too).

    The entries settle.lua writes (``quota``, ``event``) are decoded here, inline: going
    through ``events.decode_entry`` (three calls, the checks of ``events._checked`` and a
    second dict lookup per column) cost as much as parsing the JSON did (bench/README.md,
    "Flusher"). Every other shape still goes through it.
    """
    if type(f) is list and len(f) == 4 and f[0] == b"quota" and f[2] == b"event":
        try:
            e = _loads(f[3])
        except ValueError as exc:  # orjson.JSONDecodeError
            raise MalformedEvent(str(exc)) from None
        if type(e) is not dict:
            raise MalformedEvent("event is not a JSON object")
        try:
            quota = int(f[1])
        except ValueError as exc:
            raise MalformedEvent(str(exc)) from None
    else:
        e = events.decode_entry(f)
        quota = e["quota"]
    get = e.get
    other = str(get("other", ""))
    try:
        row = (
            str(e["rid"]),
            int(e["ts"]),
            2,  # log type: consume
            int(e["user"]),
            str(get("uname", "")),
            int(e["token"]),
            str(get("tname", "")),
            str(get("model", "")),
            int(get("chan", 0)),
            str(get("group", "")),
            int(quota),
            int(get("pt", 0)),
            int(get("ct", 0)),
            int(get("lat", 0)),
            get("stream") == 1,
            str(get("ip", "")),
            ESTIMATED_NOTE if '"estimated":true' in other else "",
            other,
        )
    except KeyError as exc:  # rid, ts, user or token: the first missing, as events._checked
        raise MalformedEvent(f"event has no {exc.args[0]!r}") from None
    if not _storable_day(row[1] // 86400):
        raise MalformedEvent(f"timestamp {row[1]} fits no log partition")
    return row


@functools.lru_cache(maxsize=64)
def _storable_day(day: int) -> bool:
    """Whether a log partition can be named for this day (month_bounds works: a year in
    1..9999). Otherwise the partition step would fail every round for one bad event."""
    try:
        month_bounds(day * 86400)
    except (ValueError, OverflowError, OSError):
        return False
    return True
