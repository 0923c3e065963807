"""reap.lua leaves a reaped marker (rid -> refund time) that a late settle looks up."""

from __future__ import annotations

import fakeredis

from relaygate import ledger
from relaygate.config import from_env
from relaygate.keys import KeyScheme
from relaygate.ledger import Scripts

KEYS = KeyScheme("u", 4)
UID, TID = 5, 7
TOK, USER = KEYS.token(UID, TID), KEYS.user(UID)
DAY, MONTH = KEYS.token_day(UID, TID, "20260101"), KEYS.token_month(UID, TID, "202601")
RESV, REAPED = KEYS.reservations(UID), KEYS.reaped(UID)
ALL = (TOK, USER, DAY, MONTH, RESV, REAPED)
SCRIPTS = Scripts.load()


class Conn:
    def __init__(self) -> None:
        self.r = fakeredis.FakeStrictRedis()

    async def execute_command(self, *args, **_):  # type: ignore[no-untyped-def]
        return self.r.execute_command(*args)


def test_reaped_keys_share_the_shard_tag() -> None:
    assert KEYS.reaped(UID) == KEYS.reaped_of_shard(1) == "u:{1}:reaped"
    assert KEYS.reservations(UID).startswith("u:{1}:")


async def test_reap_records_reaped_marker_only_when_it_refunds() -> None:
    conn = Conn()
    conn.r.hset(TOK, mapping={"used": 100})
    conn.r.hset(USER, mapping={"used": 100})
    member = ledger.reservation_member(f"b|{TID}|{UID}|20260101|202601|i1", 100)
    conn.r.zadd(RESV, {member: 1})
    assert await ledger.reap(SCRIPTS, conn, ALL, member, 100)
    assert int(conn.r.hget(TOK, "used")) == 0
    first = conn.r.zscore(REAPED, "b")
    assert first is not None and first > 1_700_000_000
    conn.r.zadd(REAPED, {"b": 5})
    assert not await ledger.reap(SCRIPTS, conn, ALL, member, 100)  # already gone: no-op
    assert conn.r.zscore(REAPED, "b") == 5
    assert not await ledger.reap(SCRIPTS, conn, ALL, member.replace("b|", "c|"), 100)
    assert conn.r.zscore(REAPED, "c") is None


def test_reaped_retention_setting() -> None:
    assert from_env({}).reaped_retention == 7 * 86400
    assert from_env({"RELAYGATE_REAPED_RETENTION": "3600"}).reaped_retention == 3600
