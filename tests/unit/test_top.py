"""Issue 14 item 1: relaygate.top's sampling and rates on fakeredis, and the reserve.lua
counters it reads (admitted requests per token, refusals by code)."""

from __future__ import annotations

import fakeredis
import pytest

from relaygate import ledger
from relaygate.keys import KeyScheme, day_and_month
from relaygate.ledger import Code, ReserveRequest, Scripts
from relaygate.top import Ledger, Rates, Sample, cluster_primaries, ordered, take_sample

KEYS = KeyScheme("tp", 4)
UID, TID = 5, 7
SCRIPTS = Scripts.load()


def _row(ident: int, used: int, admitted: int = 0, name: str = "", user: int = UID) -> Ledger:
    return Ledger("token", ident, user, 1000, used, False, 1, admitted, name=name)


def _sample(at: float, **used: int) -> Sample:
    s = Sample(at=at)
    for name, value in used.items():
        ident = int(name[1:])
        s.tokens[ident] = _row(ident, value, admitted=value // 10)
    return s


def test_rates_are_quota_per_minute_over_the_window() -> None:
    rates = Rates(window=60)
    rates.add(_sample(0, t1=0))
    rates.add(_sample(30, t1=300, t2=50))
    last = _sample(60, t1=600, t2=50)
    rates.add(last)
    assert last.tokens[1].rate == pytest.approx(600.0)  # 600 in 60 s
    assert last.tokens[1].rps == pytest.approx(1.0)  # 30 admitted in 30 s
    assert last.tokens[2].rate == 0.0  # unchanged since first seen
    later = _sample(90, t1=600, t2=50)
    rates.add(later)  # the window now starts at 30 s
    assert later.tokens[1].rate == pytest.approx(300 * 60 / 60)


def test_a_fall_of_used_is_no_negative_rate() -> None:
    rates = Rates()
    rates.add(_sample(0, t1=500))
    s = _sample(1, t1=100)
    rates.add(s)
    assert s.tokens[1].rate == 0.0


def test_filter_and_sort_keys() -> None:
    rows = [_row(1, 10, name="alpha"), _row(2, 30, name="beta", user=9), _row(3, 20)]
    assert [r.id for r in ordered(rows, "used")] == [2, 3, 1]
    assert [r.id for r in ordered(rows, "remaining")] == [2, 3, 1]
    assert [r.id for r in ordered(rows, "id", "user:9")] == [2]
    assert [r.id for r in ordered(rows, "id", "token:3")] == [3]
    assert [r.id for r in ordered(rows, "id", "ALP")] == [1]
    assert [r.id for r in ordered(rows, "id", "9")] == [2]
    with pytest.raises(ValueError, match="unknown sort key"):
        ordered(rows, "bogus")


def test_cluster_primaries_skips_replicas_and_failed_nodes() -> None:
    nodes = (
        "a1 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460\n"
        "b2 10.0.0.2:7001@17001 master - 0 0 2 connected 5461-10922\n"
        "c3 10.0.0.3:7002@17002 slave a1 0 0 1 connected\n"
        "d4 10.0.0.4:7003@17003 master,fail - 0 0 3 connected\n"
    )
    assert cluster_primaries(nodes) == [("10.0.0.1", 7000), ("10.0.0.2", 7001)]


class Conn:
    def __init__(self, r: fakeredis.FakeStrictRedis) -> None:
        self.r = r

    async def execute_command(self, *args, **_):  # type: ignore[no-untyped-def]
        return self.r.execute_command(*args)


async def test_reserve_counts_admitted_and_refused_and_top_reads_them() -> None:
    server = fakeredis.FakeServer()
    sync = fakeredis.FakeStrictRedis(server=server)
    tok, user = KEYS.token(UID, TID), KEYS.user(UID)
    day, month = day_and_month()
    sync.hset(tok, mapping={"limit": 250, "used": 0, "unlimited": 0, "status": 1})
    sync.hset(tok, mapping={"expires": -1, "user": UID, "ver": 1, "dlimit": 0, "mlimit": 0})
    sync.hset(user, mapping={"limit": 10**9, "used": 0, "status": 1, "ver": 1})
    keys = (
        tok,
        user,
        KEYS.token_day(UID, TID, day),
        KEYS.token_month(UID, TID, month),
        KEYS.reservations(UID),
        KEYS.refusals(UID),
    )
    codes = []
    for rid in ("r1", "r2", "r3"):
        req = ReserveRequest(
            1, 1_700_000_000, 100, 0, 0, False, f"{rid}|{TID}|{UID}|{day}|{month}|i", 9
        )
        codes.append((await ledger.reserve(SCRIPTS, Conn(sync), keys, req, (100, 100))).code)
    assert codes == [Code.OK, Code.OK, Code.TOKEN_QUOTA]
    assert sync.hget(tok, "n") == b"2"
    assert sync.hgetall(KEYS.refusals(UID)) == {b"30": b"1"}

    node = fakeredis.FakeAsyncRedis(server=server)
    sample = await take_sample([node], KEYS)
    row = sample.tokens[TID]
    assert (row.limit, row.used, row.remaining, row.admitted) == (250, 200, 50, 2)
    assert (row.today, row.month, row.inflight, row.inflight_quota) == (200, 200, 2, 200)
    assert sample.users[UID].used == 200 and sample.users[UID].inflight == 2
    assert sample.refusals == {30: 1}
    assert not sample.truncated
    await node.aclose()
