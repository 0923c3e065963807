"""The Lua ledger scripts on fakeredis (with lupa): reserve, settle, reap, sync."""

from __future__ import annotations

import asyncio

import fakeredis
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from relaygate import events, ledger
from relaygate.keys import KeyScheme
from relaygate.ledger import Code, ReserveRequest, Scripts

KEYS = KeyScheme("u", 4)
UID, TID = 5, 7
TOK, USER = KEYS.token(UID, TID), KEYS.user(UID)
DAY, MONTH = KEYS.token_day(UID, TID, "20260101"), KEYS.token_month(UID, TID, "202601")
STREAM, ORPH, RESV = KEYS.stream_of_user(UID), KEYS.orphans(UID), KEYS.reservations(UID)
REAPED = KEYS.reaped(UID)
SETTLE_KEYS = (TOK, USER, DAY, MONTH, STREAM, ORPH, RESV, REAPED)
REAP_KEYS = (TOK, USER, DAY, MONTH, RESV, REAPED)
SCRIPTS = Scripts.load()


class Conn:
    """Synchronous fakeredis behind the async ``execute_command`` the ledger expects."""

    def __init__(self) -> None:
        self.r = fakeredis.FakeStrictRedis()

    async def execute_command(self, *args, **_):  # type: ignore[no-untyped-def]
        return self.r.execute_command(*args)


def _init(conn: Conn, limit: int = 1000, ulimit: int = 10**9, **extra: int) -> None:
    fields = {
        "limit": limit,
        "used": 0,
        "unlimited": 0,
        "status": 1,
        "expires": -1,
        "user": UID,
        "ver": 1,
        "dlimit": 0,
        "mlimit": 0,
        **extra,
    }
    conn.r.hset(TOK, mapping=fields)
    conn.r.hset(USER, mapping={"limit": ulimit, "used": 0, "status": 1, "ver": 1})


def _req(
    rid: str,
    base: int = 100,
    ptm: int = 0,
    full: int = 0,
    ver: int = 1,
    clamp: bool = True,
) -> ReserveRequest:
    return ReserveRequest(
        ver,
        1_700_000_000,
        base,
        ptm,
        full,
        clamp,
        f"{rid}|{TID}|{UID}|20260101|202601|i1",
        1_700_000_900,
    )


async def _reserve(conn: Conn, req: ReserveRequest) -> ledger.Reservation:
    return await ledger.reserve(SCRIPTS, conn, (TOK, USER, DAY, MONTH, RESV), req, (100, 100))


async def _settle(
    conn: Conn, rid: str, reserved: int, actual: int, log: bool = True
) -> tuple[int, bool]:
    member = ledger.reservation_member(f"{rid}|{TID}|{UID}|20260101|202601|i1", reserved)
    event = events.encode({"rid": rid, "ts": 1, "user": UID, "token": TID}) if log else None
    done = await ledger.settle(
        SCRIPTS,
        conn,
        ledger.SettleCall(SETTLE_KEYS, reserved, actual, ("t7", "u5"), member, rid, event),
    )
    return done.charged, done.capped


def used(conn: Conn) -> int:
    return int(conn.r.hget(TOK, "used"))


async def test_reserve_all_or_nothing_and_refusal_reasons():
    conn = Conn()
    _init(conn, limit=250)
    assert (await _reserve(conn, _req("a"))).code == Code.OK
    assert (await _reserve(conn, _req("b"))).code == Code.OK
    assert (await _reserve(conn, _req("c"))).code == Code.TOKEN_QUOTA
    assert used(conn) == 200 and int(conn.r.hget(USER, "used")) == 200
    assert conn.r.zcard(RESV) == 2


async def test_missing_stale_and_status_codes():
    conn = Conn()
    assert (await _reserve(conn, _req("a"))).code == Code.TOKEN_MISSING
    _init(conn)
    assert (await _reserve(conn, _req("a", ver=2))).code == Code.STALE
    conn.r.hset(TOK, "status", 2)
    assert (await _reserve(conn, _req("a"))).code == Code.TOKEN_DISABLED
    conn.r.hset(TOK, mapping={"status": 1, "expires": 5})
    assert (await _reserve(conn, _req("a"))).code == Code.TOKEN_EXPIRED
    conn.r.hset(TOK, "expires", -1)
    conn.r.hset(USER, "status", 2)
    assert (await _reserve(conn, _req("a"))).code == Code.USER_DISABLED
    conn.r.delete(USER)
    assert (await _reserve(conn, _req("a"))).code == Code.USER_MISSING


async def test_daily_and_user_limits():
    conn = Conn()
    _init(conn, limit=10**6, dlimit=150)
    assert (await _reserve(conn, _req("a"))).code == Code.OK
    assert (await _reserve(conn, _req("b"))).code == Code.DAILY_QUOTA
    conn2 = Conn()
    _init(conn2, limit=10**6, ulimit=150)
    assert (await _reserve(conn2, _req("a"))).code == Code.OK
    assert (await _reserve(conn2, _req("b"))).code == Code.USER_QUOTA


async def test_clamp_reserves_what_is_affordable():
    conn = Conn()
    _init(conn, limit=1000)
    # base 100, 1 unit per completion token (1e6 micro), wants 4096: only 900 tokens affordable
    res = await _reserve(conn, _req("a", base=100, ptm=1_000_000, full=4096))
    assert res.code == Code.OK and res.clamp_tokens == 900 and res.amount == 1000
    conn2 = Conn()
    _init(conn2, limit=1000)
    res = await _reserve(conn2, _req("a", base=100, ptm=1_000_000, full=4096, clamp=False))
    assert res.code == Code.TOKEN_QUOTA


async def test_settle_adjusts_caps_and_logs_once():
    conn = Conn()
    _init(conn, limit=300)
    await _reserve(conn, _req("a"))
    charged, capped = await _settle(conn, "a", 100, 60)
    assert (charged, capped) == (60, False) and used(conn) == 60
    assert conn.r.xlen(STREAM) == 1 and conn.r.zcard(RESV) == 0
    await _reserve(conn, _req("b"))
    charged, capped = await _settle(conn, "b", 100, 10_000)  # far beyond the limit
    assert capped and used(conn) == 300 and charged == 240


async def test_settle_retry_is_idempotent_and_reaped_reservation_charges_from_zero():
    conn = Conn()
    _init(conn)
    await _reserve(conn, _req("a"))
    await _settle(conn, "a", 100, 80)
    member = ledger.reservation_member(f"a|{TID}|{UID}|20260101|202601|i1", 100)
    raw = await SCRIPTS.settle(
        conn, SETTLE_KEYS, [100, 80, 1, "t7", "u5", member, "a", b'{"rid":"a"}']
    )
    assert int(raw[2]) == -1 and used(conn) == 80 and conn.r.xlen(STREAM) == 1
    # b's relay "dies": reaper refunds; a late settle then charges the full actual amount
    await _reserve(conn, _req("b"))
    bm = ledger.reservation_member(f"b|{TID}|{UID}|20260101|202601|i1", 100)
    assert await ledger.reap(SCRIPTS, conn, REAP_KEYS, bm, 100)
    assert used(conn) == 80
    assert not await ledger.reap(SCRIPTS, conn, REAP_KEYS, bm, 100)
    assert conn.r.zscore(REAPED, "b") is not None
    await _settle(conn, "b", 100, 50)
    assert used(conn) == 130 and conn.r.zscore(REAPED, "b") is None
    await _settle(conn, "b", 100, 50)  # a second replay of the same settle: nothing
    assert used(conn) == 130 and conn.r.xlen(STREAM) == 2


async def test_sync_init_and_update_respect_versions_and_orphans():
    conn = Conn()
    fields = {"limit": 10, "used": 3, "status": 1}
    assert await ledger.sync(SCRIPTS, conn, USER, ORPH, "init", 4, "u5", 0, fields) == 1
    assert await ledger.sync(SCRIPTS, conn, USER, ORPH, "init", 4, "u5", 0, fields) == 0
    assert await ledger.sync(SCRIPTS, conn, USER, ORPH, "update", 4, "u5", 0, {"limit": 99}) == 0
    assert await ledger.sync(SCRIPTS, conn, USER, ORPH, "update", 5, "u5", 0, {"limit": 99}) == 1
    assert conn.r.hget(USER, "limit") == b"99" and conn.r.hget(USER, "used") == b"3"
    conn.r.hset(ORPH, "t7", 2)
    assert await ledger.sync(SCRIPTS, conn, TOK, ORPH, "init", 1, "t7", 0, fields) == -1
    assert await ledger.sync(SCRIPTS, conn, TOK, ORPH, "init", 1, "t7", 2, fields) == 1
    assert conn.r.hget(ORPH, "t7") is None


class LedgerModel(RuleBasedStateMachine):
    """Random interleavings of reserve / settle / reap / top-up against the real scripts:
    ``used`` never exceeds ``limit``, and equals what is held plus what was charged.
    (Hypothesis' stateful runner is synchronous, so each rule drives its own loop.)"""

    def __init__(self) -> None:
        super().__init__()
        self.conn = Conn()
        self.loop = asyncio.new_event_loop()
        self.open: dict[str, int] = {}
        self.charged = 0
        self.limit = 0
        self.n = 0

    def teardown(self) -> None:
        self.loop.close()

    def run(self, coro):  # type: ignore[no-untyped-def]
        return self.loop.run_until_complete(coro)

    @initialize(limit=st.integers(0, 2000))
    def start(self, limit: int) -> None:
        self.limit = limit
        _init(self.conn, limit=limit)

    @rule(base=st.integers(0, 400))
    def reserve(self, base: int) -> None:
        self.n += 1
        rid = f"r{self.n}"
        res = self.run(_reserve(self.conn, _req(rid, base=base)))
        if res.code == Code.OK:
            self.open[rid] = res.amount

    @rule(data=st.data(), actual=st.integers(0, 800))
    def settle(self, data: st.DataObject, actual: int) -> None:
        if self.open:
            rid = data.draw(st.sampled_from(sorted(self.open)))
            charged, _ = self.run(_settle(self.conn, rid, self.open.pop(rid), actual))
            self.charged += charged

    @rule(data=st.data())
    def reap(self, data: st.DataObject) -> None:
        if self.open:
            rid = data.draw(st.sampled_from(sorted(self.open)))
            amount = self.open.pop(rid)
            member = ledger.reservation_member(f"{rid}|{TID}|{UID}|20260101|202601|i1", amount)
            assert self.run(ledger.reap(SCRIPTS, self.conn, REAP_KEYS, member, amount))

    @rule(delta=st.integers(0, 500))
    def top_up(self, delta: int) -> None:
        self.limit += delta
        self.conn.r.hincrby(TOK, "limit", delta)

    @invariant()
    def books(self) -> None:
        u = used(self.conn)
        assert u <= self.limit
        assert u == self.charged + sum(self.open.values())


def test_ledger_model() -> None:
    run_state_machine_as_test(
        LedgerModel, settings=hsettings(max_examples=40, stateful_step_count=30, deadline=None)
    )


async def test_set_remain_moves_limit_only():
    conn = Conn()
    _init(conn, limit=1000)
    await _reserve(conn, _req("a"))  # used 100
    assert int(await SCRIPTS.set_remain(conn, (TOK,), (50,))) == 150
    assert conn.r.hget(TOK, "used") == b"100" and conn.r.hget(TOK, "limit") == b"150"
    assert int(await SCRIPTS.set_remain(conn, ("u:{1}:tok:404",), (50,))) == -1


async def test_period_counters_get_their_ttl_when_created():
    conn = Conn()
    _init(conn)
    await _reserve(conn, _req("a"))
    assert 0 < conn.r.ttl(DAY) <= 100 and 0 < conn.r.ttl(MONTH) <= 100
    conn.r.expire(DAY, 5000)  # a later reservation leaves the TTL alone
    await _reserve(conn, _req("b"))
    assert conn.r.ttl(DAY) > 100 and int(conn.r.get(DAY)) == 200
