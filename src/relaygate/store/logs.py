"""Writing usage events to PostgreSQL exactly once (the flusher's transaction)."""

from __future__ import annotations

import calendar
import functools
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

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

ADD_TOKEN_USED = """
UPDATE tokens AS t SET used_quota = t.used_quota + v.q, accessed_time = GREATEST(t.accessed_time, v.ts)
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, q, ts)
WHERE t.id = v.id
"""

ADD_USER_USED = """
UPDATE users AS u SET used_quota = u.used_quota + v.q, request_count = u.request_count + v.n
FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS v(id, q, n)
WHERE u.id = v.id
"""

ADD_CHANNEL_USED = """
UPDATE channels AS c SET used_quota = c.used_quota + v.q
FROM unnest($1::bigint[], $2::bigint[]) AS v(id, q)
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

    async def ensure(self, conn: Any, timestamps: Sequence[int]) -> None:
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


N_COLUMNS = 18  # the columns of INSERT_LOGS, in its order


def empty_columns() -> list[list[Any]]:
    return [[] for _ in range(N_COLUMNS)]


async def write_columns(conn: Any, cols: Sequence[list[Any]]) -> int:
    """Insert the rows (column by column, INSERT_LOGS order) and add the newly inserted
    ones' quota to the totals, in one transaction.

    Rows already present (a redelivery after a crash between commit and XACK) are skipped by
    the unique key and add nothing. Returns how many rows were new.
    """
    async with conn.transaction():
        inserted = await conn.fetch(INSERT_LOGS, *cols)
        if not inserted:
            return 0
        tokens: dict[int, list[int]] = {}
        users: dict[int, list[int]] = {}
        channels: dict[int, int] = {}
        for rec in inserted:
            q = int(rec["quota"])
            tok = tokens.setdefault(int(rec["token_id"]), [0, 0])
            tok[0] += q
            tok[1] = max(tok[1], int(rec["created_at"]))
            usr = users.setdefault(int(rec["user_id"]), [0, 0])
            usr[0] += q
            usr[1] += 1
            channels[int(rec["channel_id"])] = channels.get(int(rec["channel_id"]), 0) + q
        tids = sorted(tokens)
        await conn.execute(
            ADD_TOKEN_USED, tids, [tokens[i][0] for i in tids], [tokens[i][1] for i in tids]
        )
        uids = sorted(users)
        await conn.execute(
            ADD_USER_USED, uids, [users[i][0] for i in uids], [users[i][1] for i in uids]
        )
        cids = sorted(channels)
        await conn.execute(ADD_CHANNEL_USED, cids, [channels[i] for i in cids])
    return len(inserted)


ESTIMATED_NOTE = "usage estimated: upstream reported none"


def append_fields(cols: list[list[Any]], f: dict[bytes, bytes]) -> None:
    """One usage event's columns, appended in INSERT_LOGS order (no row object per event).

    Raises MalformedEvent on a malformed event (sent to the dead-letter stream) before
    appending anything.
    """
    e = events.decode(f)
    get = e.get
    other = str(get("other", ""))
    values = (
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
        e["quota"],
        int(get("pt", 0)),
        int(get("ct", 0)),
        int(get("lat", 0)),
        get("stream") == 1,
        str(get("ip", "")),
        ESTIMATED_NOTE if '"estimated":true' in other else "",
        other,
    )
    if not _storable_day(values[1] // 86400):
        raise MalformedEvent(f"timestamp {values[1]} fits no log partition")
    for col, value in zip(cols, values, strict=True):
        col.append(value)


@functools.lru_cache(maxsize=64)
def _storable_day(day: int) -> bool:
    """Whether a log partition can be named for this day (month_bounds works: a year in
    1..9999). Otherwise the partition step would fail every round for one bad event."""
    try:
        month_bounds(day * 86400)
    except (ValueError, OverflowError, OSError):
        return False
    return True
