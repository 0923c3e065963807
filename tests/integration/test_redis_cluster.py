"""Issue 14: "works against a Redis Cluster too", on a real local 3-primary cluster
(tests/rediscluster.py).

(a) The ledger scripts (sync, reserve, settle, reap) run on the cluster through redis-py's
    cluster client: every key one call passes carries the user's shard hash tag, so they
    share one slot (docs/redis.md) — and a call mixing two shards' keys is refused, which
    shows the check is real.
(b) ``relaygate top --once --json`` pointed at any one node reads every primary (its SCAN
    sees one node only) and agrees with the ledger read through the cluster client.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisClusterException, ResponseError

from relaygate import events, ledger
from relaygate.keys import KeyScheme, day_and_month
from relaygate.ledger import Code, ReserveRequest, Scripts, SettleCall

from ..rediscluster import REDIS_CLI, REDIS_SERVER, LocalCluster
from .test_top import run_once

pytestmark = pytest.mark.skipif(
    REDIS_SERVER is None or REDIS_CLI is None, reason="redis-server / redis-cli not installed"
)
SCRIPTS = Scripts.load()
TTLS = (2 * 86400, 32 * 86400)
USERS = (1, 2, 3, 4)  # shards 1, 2, 3, 0 of 4: spread over the primaries


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(Path(tmp_path_factory.mktemp("redis-cluster")))
    try:
        yield c.start()
    finally:
        c.stop()


@pytest.fixture
async def rc(cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    client = RedisCluster.from_url(cluster.url)
    await client.initialize()
    yield client
    await client.aclose()


class Ledger:
    """The keys of one user's token, as the relay passes them to the scripts."""

    def __init__(self, keys: KeyScheme, uid: int) -> None:
        self.uid, self.tid = uid, 100 + uid
        self.day, self.month = day_and_month()
        self.tok, self.user = keys.token(uid, self.tid), keys.user(uid)
        self.dkey = keys.token_day(uid, self.tid, self.day)
        self.mkey = keys.token_month(uid, self.tid, self.month)
        self.stream, self.orphans = keys.stream_of_user(uid), keys.orphans(uid)
        self.resv, self.reaped = keys.reservations(uid), keys.reaped(uid)
        self.refused = keys.refusals(uid)

    def all(self) -> tuple[str, ...]:
        return (self.tok, self.user, self.dkey, self.mkey, self.stream, self.orphans)

    @property
    def reserve_keys(self) -> tuple[str, ...]:
        return (self.tok, self.user, self.dkey, self.mkey, self.resv, self.refused)

    @property
    def settle_keys(self) -> tuple[str, ...]:
        return (self.tok, self.user, self.dkey, self.mkey, self.stream, self.orphans, self.resv, self.reaped)  # fmt: skip

    @property
    def reap_keys(self) -> tuple[str, ...]:
        return (self.tok, self.user, self.dkey, self.mkey, self.resv, self.reaped)

    def member_prefix(self, rid: str) -> str:
        return f"{rid}|{self.tid}|{self.uid}|{self.day}|{self.month}|cluster-test"


async def build(rc: RedisCluster, led: Ledger, limit: int) -> None:
    tok = {"limit": limit, "used": 0, "unlimited": 0, "status": 1, "expires": -1,
           "user": led.uid, "dlimit": 0, "mlimit": 0}  # fmt: skip
    got = await ledger.sync(SCRIPTS, rc, led.tok, led.orphans, "init", 1, f"t{led.tid}", 0, tok)
    assert got == 1
    user = {"limit": 10**9, "used": 0, "status": 1}
    got = await ledger.sync(SCRIPTS, rc, led.user, led.orphans, "init", 1, f"u{led.uid}", 0, user)
    assert got == 1


async def reserve(rc: RedisCluster, led: Ledger, rid: str, base: int) -> ledger.Reservation:
    now = int(time.time())
    req = ReserveRequest(1, now, base, 0, 0, False, led.member_prefix(rid), now + 600)
    return await ledger.reserve(SCRIPTS, rc, led.reserve_keys, req, TTLS)


async def settle(rc: RedisCluster, led: Ledger, rid: str, reserved: int, actual: int) -> int:
    event = events.encode({"rid": rid, "ts": 1, "user": led.uid, "token": led.tid})
    member = ledger.reservation_member(led.member_prefix(rid), reserved)
    call = SettleCall(
        led.settle_keys, reserved, actual, (f"t{led.tid}", f"u{led.uid}"), member, rid, event
    )
    return (await ledger.settle(SCRIPTS, rc, call)).charged


async def traffic(rc: RedisCluster, keys: KeyScheme) -> list[Ledger]:
    """Per user: 3 requests reserved at 100 and settled at 60, one left open, one refused."""
    out = []
    for uid in USERS:
        led = Ledger(keys, uid)
        await build(rc, led, limit=450)
        for i in range(3):
            assert (await reserve(rc, led, f"r{uid}-{i}", 100)).code == Code.OK
            assert await settle(rc, led, f"r{uid}-{i}", 100, 60) == 60
        assert (await reserve(rc, led, f"open{uid}", 100)).code == Code.OK  # in flight
        refused = await reserve(rc, led, f"no{uid}", 200)  # 280 used: 200 more > 450
        assert refused.code == Code.TOKEN_QUOTA
        out.append(led)
    return out


async def test_ledger_scripts_run_on_a_cluster(rc: RedisCluster) -> None:
    keys = KeyScheme(f"rgc{secrets.token_hex(4)}", 4)
    primaries = set()
    for uid in USERS:
        led = Ledger(keys, uid)
        every = {*led.all(), led.resv, led.reaped, led.refused}
        assert len({key_slot(k.encode()) for k in every}) == 1, every  # one hash tag, one slot
        primaries.add(rc.get_node_from_key(led.tok).port)
    assert len(primaries) >= 2  # the shards really are spread over the primaries

    leds = await traffic(rc, keys)
    for led in leds:
        used, n = await rc.hmget(led.tok, "used", "n")
        assert (int(used), int(n)) == (3 * 60 + 100, 4)
        assert int(await rc.hget(led.user, "used")) == 280
        assert int(await rc.get(led.dkey)) == int(await rc.get(led.mkey)) == 280
        assert await rc.xlen(led.stream) == 3
        assert await rc.zcard(led.resv) == 1
        assert await rc.hget(led.refused, "30") == b"1"
        # the reaper's refund of the open reservation
        member = ledger.reservation_member(led.member_prefix(f"open{led.uid}"), 100)
        assert await ledger.reap(SCRIPTS, rc, led.reap_keys, member, 100)
        assert int(await rc.hget(led.tok, "used")) == 180
        assert await rc.zcard(led.resv) == 0

    # keys of two shards in one call: the cluster client (or the node) refuses it
    a, b = Ledger(keys, 1), Ledger(keys, 2)
    mixed = (a.tok, b.user, a.dkey, a.mkey, a.resv, a.refused)
    now = int(time.time())
    req = ReserveRequest(1, now, 1, 0, 0, False, a.member_prefix("x"), now + 600)
    with pytest.raises((RedisClusterException, ResponseError)):
        await ledger.reserve(SCRIPTS, rc, mixed, req, TTLS)


async def test_top_once_json_reads_every_primary(
    rc: RedisCluster, cluster: LocalCluster, settings: Any
) -> None:
    keys = KeyScheme(settings.key_prefix, settings.shards)
    assert settings.shards == 4
    leds = await traffic(rc, keys)
    # seed at each node in turn: whichever node top is pointed at, it sees all of them
    for port in cluster.ports:
        out = await run_once(
            settings.replace(redis_url=f"redis://127.0.0.1:{port}/0"), "--no-names"
        )
        tokens = {t["id"]: t for t in out["tokens"]}
        users = {u["id"]: u for u in out["users"]}
        assert set(tokens) == {led.tid for led in leds}
        assert set(users) == set(USERS)
        for led in leds:
            limit, used, n = await rc.hmget(led.tok, "limit", "used", "n")
            row = tokens[led.tid]
            assert (row["limit"], row["used"], row["admitted"]) == (int(limit), int(used), int(n))
            assert row["remaining"] == int(limit) - int(used)
            assert row["today"] == int(await rc.get(led.dkey))
            assert row["month"] == int(await rc.get(led.mkey))
            assert (row["inflight"], row["inflight_quota"]) == (1, 100)
            assert users[led.uid]["used"] == int(await rc.hget(led.user, "used"))
        s = out["summary"]
        assert s["tokens"] == len(USERS) and s["inflight"] == len(USERS)
        assert s["refusals"]["token_quota"]["total"] == len(USERS)
        assert not s["truncated"]
