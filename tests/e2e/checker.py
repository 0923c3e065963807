"""The history checker of issue 9, on real processes (Jepsen-style).

Relays and workers (flusher, reaper, reconciler) run as ``relaygate`` processes on a
private Redis (AOF, fsync always) and on PostgreSQL reached through a cuttable TCP proxy.
The upstream is an in-process mock that honours ``max_tokens`` (long answers otherwise),
streams chunk by chunk and records what it produced for each request. Clients with and
without ``max_tokens``, streaming and not, spend a few hot tokens with small quotas (topped
up now and then) and one ample token, while a fault schedule runs: SIGKILL of relays and of
workers, Redis SIGSTOP (stall), SCRIPT FLUSH, Redis killed and restarted from its AOF,
PostgreSQL unreachable, upstream errors and streams broken mid-answer.

Every request's outcome is recorded. After the drain the books must hold, per token:

* every completed answer has exactly one log row, charging exactly its upstream usage;
* a broken answer (headers seen, body cut) or a lost one (no answer: its relay was killed)
  has at most one row, charging at most what the upstream produced for it;
* no request id is logged twice; an error answer is never charged;
* Redis ``used`` == PostgreSQL ``used_quota`` == Σ log rows, for tokens and the user;
* Redis ``limit`` == PostgreSQL ``quota_limit`` (no quota change half-applied) and
  ``used`` <= that limit (what a token was delivered never exceeds what it was granted);
* no reservation is left and no request hung past its deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from redis.asyncio import Redis

from relaygate.accounts import Accounts
from relaygate.admin import Admin, AdminError, LedgerPending
from relaygate.ledger import Scripts
from relaygate.pricing import PriceBook, Rates

from ..conftest import free_port
from ..integration.privredis import PrivateRedis
from .procs import Proc, Stack, TcpProxy

MODEL = "gpt-4o-mini"
LONG_ANSWER = 3000  # completion tokens when the request sets no bound
TOKENS_PER_CHUNK = 100
PROMPT_TOKENS = 10
PROMPT_SLACK = 64  # a relay's prompt estimate for these tiny prompts stays below this
HANG_BOUND = 25.0  # seconds: Redis deadline + upstream timeout + generous slack


# --- the upstream ---------------------------------------------------------------------------


@dataclass
class Upstream:
    """An OpenAI-compatible mock that records, per request marker, the cost it produced."""

    rates: Rates
    produced: dict[str, int] = field(default_factory=dict)
    faulty: bool = False  # while set, some answers fail: 500s, streams cut mid-answer
    rng: random.Random = field(default_factory=lambda: random.Random(11))
    counts: Counter[str] = field(default_factory=Counter)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self.chat)
        return app

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        marker = str(body["messages"][0]["content"])
        bound = body.get("max_completion_tokens") or body.get("max_tokens")
        completion = min(int(bound), LONG_ANSWER) if bound else LONG_ANSWER
        self.produced[marker] = self.rates.charge(PROMPT_TOKENS, completion)
        usage = {
            "prompt_tokens": PROMPT_TOKENS,
            "completion_tokens": completion,
            "total_tokens": PROMPT_TOKENS + completion,
        }
        fail = self.faulty and self.rng.random() < 0.4
        if not body.get("stream"):
            await asyncio.sleep(0.05)
            if fail:
                self.counts["upstream_500"] += 1
                return web.json_response({"error": {"message": "overloaded"}}, status=500)
            return web.json_response(
                {
                    "id": "c",
                    "object": "chat.completion",
                    "model": MODEL,
                    "choices": [
                        {
                            "index": 0,
                            "finish_reason": "stop",
                            "message": {"role": "assistant", "content": "ab" * 50},
                        }
                    ],
                    "usage": usage,
                }
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        chunks = -(-completion // TOKENS_PER_CHUNK)
        cut_at = self.rng.randint(1, chunks) if fail else -1
        for i in range(chunks):
            if i == cut_at:
                self.counts["upstream_cut_stream"] += 1
                assert request.transport is not None
                request.transport.close()  # the chunked body never ends
                return resp
            # "ab" is two bytes per token, so a relay's estimate (bytes / 4) stays below usage
            delta = {
                "id": "c",
                "object": "chat.completion.chunk",
                "model": MODEL,
                "choices": [{"index": 0, "delta": {"content": "ab" * TOKENS_PER_CHUNK}}],
            }
            await resp.write(b"data: " + orjson.dumps(delta) + b"\n\n")
            await asyncio.sleep(0.01)
        tail = {
            "id": "c",
            "object": "chat.completion.chunk",
            "model": MODEL,
            "choices": [],
            "usage": usage,
        }
        await resp.write(b"data: " + orjson.dumps(tail) + b"\n\ndata: [DONE]\n\n")
        await resp.write_eof()
        return resp


# --- the history ------------------------------------------------------------------------------


@dataclass
class Outcome:
    token: int
    marker: str
    kind: str  # ok | broken | lost | refused | error | hung
    rid: str | None = None
    cost: int = 0  # for ok: the cost of the usage the client received
    detail: str = ""


@dataclass
class History:
    outcomes: list[Outcome] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)

    def summary(self) -> dict[str, int]:
        return dict(Counter(o.kind if o.kind != "error" else o.detail for o in self.outcomes))


def _stream_usage(lines: list[bytes]) -> tuple[bool, dict[str, Any] | None]:
    """(saw [DONE], the usage object) of an OpenAI SSE body."""
    done, usage = False, None
    for line in lines:
        if not line.startswith(b"data: "):
            continue
        data = line[6:].strip()
        if data == b"[DONE]":
            done = True
        elif data:
            chunk = orjson.loads(data)
            if chunk.get("usage"):
                usage = chunk["usage"]
    return done, usage


async def one_request(
    session: aiohttp.ClientSession,
    url: str,
    key: str,
    token: int,
    marker: str,
    body: dict[str, Any],
    rates: Rates,
) -> Outcome:
    """Send one request and classify what the client saw."""
    rid: str | None = None
    try:
        async with asyncio.timeout(HANG_BOUND):
            async with session.post(
                f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
            ) as resp:
                rid = resp.headers.get("X-Oneapi-Request-Id")
                if resp.status != 200:
                    data = await resp.json(content_type=None)
                    code = data.get("error", {}).get("code") if isinstance(data, dict) else None
                    return Outcome(token, marker, "error", rid, detail=f"{resp.status} {code}")
                if body.get("stream"):
                    lines = [line async for line in resp.content]
                    done, usage = _stream_usage(lines)
                    if not (done and usage):
                        return Outcome(token, marker, "broken", rid, detail="stream ended early")
                else:
                    usage = (await resp.json())["usage"]
                cost = rates.charge(usage["prompt_tokens"], usage["completion_tokens"])
                return Outcome(token, marker, "ok", rid, cost)
    except TimeoutError:
        return Outcome(token, marker, "hung", rid)
    except aiohttp.ClientConnectorError:
        return Outcome(token, marker, "refused")  # never reached a relay: nothing to charge
    except (aiohttp.ClientError, OSError, ValueError) as exc:
        return Outcome(token, marker, "broken" if rid else "lost", rid, detail=type(exc).__name__)


# --- the system under test ---------------------------------------------------------------------


@dataclass
class System:
    env: Any
    stack: Stack
    redis: PrivateRedis
    proxy: TcpProxy
    pg_port: int
    journal: Path
    relays: list[Proc] = field(default_factory=list)
    workers: list[Proc] = field(default_factory=list)

    def _extra(self) -> dict[str, str]:
        db = self.env.settings.database_url.rsplit("/", 1)[1]
        return {
            "RELAYGATE_REDIS_URL": self.redis.url,
            "RELAYGATE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{self.pg_port}/{db}",
            "RELAYGATE_REDIS_TIMEOUT": "0.5",
            "RELAYGATE_JOURNAL_DIR": str(self.journal),
            "RELAYGATE_UPSTREAM_TIMEOUT": "10",
            "RELAYGATE_LOG_LEVEL": "error",
        }

    async def start_relay(self, port: int) -> Proc:
        relay = await self.stack.relay(port, **self._extra())
        return relay

    def start_worker(self, name: str) -> Proc:
        return self.stack.worker(name, **self._extra())

    async def kill_relay(self, index: int) -> None:
        old = self.relays[index]
        old.kill()
        await asyncio.sleep(1.0)
        self.relays[index] = await self.start_relay(old.port)

    def kill_worker(self, index: int) -> None:
        self.workers[index].kill()
        self.workers[index] = self.start_worker(f"w{index}-{time.monotonic_ns()}")


async def _sleep_until(t0: float, when: float) -> None:
    await asyncio.sleep(max(0.0, t0 + when - time.monotonic()))


async def fault_cycle(
    sys_: System, up: Upstream, topup: Any, history: History, cycle: int, long_faults: bool
) -> None:
    """One round of every fault, ~24 s. In a long run every fifth cycle stalls Redis for 5 s
    and the third one stops it for 60 s while answers are being delivered."""
    log = history.faults
    t0 = time.monotonic()
    await _sleep_until(t0, 1)
    await sys_.kill_relay(cycle % len(sys_.relays))
    log["relay_sigkill"] += 1
    await _sleep_until(t0, 3)
    stall = 5.0 if (not long_faults or cycle % 5 == 1) else 2.0
    sys_.redis.pause()
    log["redis_stall"] += 1
    await asyncio.sleep(stall)
    sys_.redis.resume()
    await _sleep_until(t0, 9)
    sys_.kill_worker(cycle % len(sys_.workers))
    log["worker_sigkill"] += 1
    await topup()
    admin = Redis.from_url(sys_.redis.url)
    with contextlib.suppress(Exception):
        await admin.script_flush()
        log["script_flush"] += 1
    await admin.aclose()
    await _sleep_until(t0, 11)
    sys_.redis.stop()
    log["redis_restart"] += 1
    await asyncio.sleep(60.0 if long_faults and cycle == 2 else 2.0)
    sys_.redis.start()
    await _sleep_until(t0, 15)
    await sys_.proxy.cut()
    log["postgres_cut"] += 1
    await asyncio.sleep(3.0)
    await sys_.proxy.start(sys_.pg_port)
    await _sleep_until(t0, 19)
    up.faulty = True
    log["upstream_faults"] += 1
    await asyncio.sleep(3.0)
    up.faulty = False
    await topup()
    await _sleep_until(t0, 24)


@dataclass
class Tokens:
    user_id: int
    ids: list[int]
    keys: list[str]
    hot: set[int]


async def run_checker(env: Any, stack: Stack, tmp: Path, duration: float) -> None:
    """Run fault cycles for ``duration`` seconds (at least one), drain, check the books."""
    rates = PriceBook().rates(MODEL, "default")
    assert rates is not None
    private = PrivateRedis()
    private.start()
    proxy = TcpProxy("127.0.0.1", int(env.settings.database_url.split(":")[-1].split("/")[0]))
    pg_port = await proxy.start()
    up = Upstream(rates)
    runner = web.AppRunner(up.app())
    await runner.setup()
    up_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", up_port).start()
    redis = Redis.from_url(private.url)
    accounts = Accounts(env.pool, redis, Scripts.load(), env.keys)
    admin = Admin(env.pool, accounts, allow_loopback_upstreams=True)
    sys_ = System(env, stack, private, proxy, pg_port, tmp / "journal")
    history = History()
    stop = asyncio.Event()
    try:
        user_id, _ = await admin.create_user("root", 100, 10**12)
        await admin.create_channel("mock", f"http://127.0.0.1:{up_port}", "upstream-secret", MODEL)
        hot_quota = 3 * rates.charge(PROMPT_TOKENS, 16384)
        ids, keys = [], []
        for i in range(4):
            tok = await admin.create_token(
                user_id, f"t{i}", remain_quota=hot_quota if i < 3 else 10**10
            )
            ids.append(tok.id)
            keys.append(f"sk-{tok.key}")
        tokens = Tokens(user_id, ids, keys, set(ids[:3]))
        sys_.relays = [await sys_.start_relay(free_port()) for _ in range(3)]
        sys_.workers = [sys_.start_worker("a"), sys_.start_worker("b")]

        async def topup() -> None:
            for tid in tokens.hot:
                try:
                    await admin.update_token(tid, {"add_quota": hot_quota // 2})
                    history.faults["topup"] += 1
                except LedgerPending:
                    history.faults["topup_pending"] += 1
                except AdminError:
                    history.faults["topup_refused"] += 1

        async def faults() -> None:
            end = time.monotonic() + duration
            cycle = 0
            while True:
                await fault_cycle(sys_, up, topup, history, cycle, duration > 120)
                cycle += 1
                if time.monotonic() >= end:
                    break
            stop.set()

        await asyncio.gather(faults(), _clients(sys_, tokens, rates, history, stop))
        await _drain(env, sys_, redis)
        print(
            f"\nhistory: {history.summary()}\nfaults: {dict(history.faults)}; "
            f"upstream: {dict(up.counts)}; requests upstream saw: {len(up.produced)}"
        )
        violations = await _check(env, redis, tokens, history, up)
        assert history.summary().get("ok", 0) > 0
        assert not violations, "\n".join(violations[:30])
    finally:
        stop.set()
        stack.close()
        await redis.aclose()
        await runner.cleanup()
        await proxy.cut()
        private.close()


async def _clients(
    sys_: System, tokens: Tokens, rates: Rates, history: History, stop: asyncio.Event
) -> None:
    rng = random.Random(9)
    counter = iter(range(10**9))

    async def client() -> None:
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                i = rng.randrange(len(tokens.ids))
                marker = f"m{next(counter)}"
                body: dict[str, Any] = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": marker}],
                }
                if rng.random() < 0.5:
                    body["max_tokens"] = rng.randint(50, 2500)
                if rng.random() < 0.5:
                    body["stream"] = True
                url = rng.choice(sys_.relays).url
                out = await one_request(
                    session, url, tokens.keys[i], tokens.ids[i], marker, body, rates
                )
                history.outcomes.append(out)
                if out.kind != "ok":
                    await asyncio.sleep(0.05)

    await asyncio.gather(*(client() for _ in range(16)))


async def _drain(env: Any, sys_: System, redis: Redis) -> None:
    """Faults over: relays stop gracefully (kept settles applied or journaled), a fresh relay
    adopts any journal, workers flush and reap until nothing is open."""
    for relay in sys_.relays:
        relay.stop()
    sys_.relays = [await sys_.start_relay(free_port())]  # adopts journals left behind
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        events = sum([await redis.xlen(s) for s in env.keys.streams()])
        open_resv = sum(
            [await redis.zcard(env.keys.reservations_of_shard(s)) for s in range(env.keys.shards)]
        )
        journals = [p for p in sys_.journal.glob("*.jsonl") if p.stat().st_size > 0]
        if events == 0 and open_resv == 0 and not journals:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # the reconciler's last pass


async def _check(
    env: Any, redis: Redis, tokens: Tokens, history: History, up: Upstream
) -> list[str]:
    v: list[str] = []
    async with env.pool.acquire() as conn:
        rows = await conn.fetch("SELECT token_id, quota, request_id FROM logs")
        pg_tokens = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT id, used_quota, quota_limit FROM tokens WHERE id = ANY($1)", tokens.ids
            )
        }
        pg_user = int(
            await conn.fetchval("SELECT used_quota FROM users WHERE id = $1", tokens.user_id)
        )
    hung = [o for o in history.outcomes if o.kind == "hung"]
    if hung:
        v.append(f"{len(hung)} requests hung past {HANG_BOUND}s")
    for shard in range(env.keys.shards):
        if left := await redis.zcard(env.keys.reservations_of_shard(shard)):
            v.append(f"{left} reservations left in shard {shard}")
    if pending := sum([await redis.xlen(s) for s in env.keys.streams()]):
        v.append(f"{pending} usage events never reached PostgreSQL")
    by_rid: dict[str, Any] = {}
    for row in rows:
        if row["request_id"] in by_rid:
            v.append(f"request {row['request_id']} logged twice")
        by_rid[row["request_id"]] = row
    bound = max(up.produced.values(), default=0) + up.rates.charge(PROMPT_SLACK, 0)
    known: set[str] = set()
    lost: Counter[int] = Counter()
    lost_cost: dict[int, int] = defaultdict(int)
    for o in history.outcomes:
        row = by_rid.get(o.rid) if o.rid else None
        if o.rid:
            known.add(o.rid)
        produced = up.produced.get(o.marker, 0) + up.rates.charge(PROMPT_SLACK, 0)
        if o.kind == "ok":
            if row is None:
                v.append(f"answered {o.rid} ({o.marker}) has no log row")
            elif int(row["quota"]) != o.cost:
                v.append(f"answered {o.rid}: delivered {o.cost}, charged {row['quota']}")
        elif o.kind == "broken" and row is not None and int(row["quota"]) > produced:
            v.append(f"broken {o.rid}: charged {row['quota']} > produced {produced}")
        elif o.kind in ("error", "refused") and row is not None:
            v.append(f"{o.kind} answer {o.rid} ({o.detail}) was charged {row['quota']}")
        elif o.kind == "lost":
            lost[o.token] += 1
            lost_cost[o.token] += produced
    unknown: dict[int, list[int]] = defaultdict(list)
    for rid, row in by_rid.items():
        if rid not in known:
            unknown[int(row["token_id"])].append(int(row["quota"]))
    for tid, charges in unknown.items():
        if len(charges) > lost[tid] or sum(charges) > lost_cost[tid] or max(charges) > bound:
            v.append(
                f"token {tid}: {len(charges)} rows for unknown requests "
                f"(lost {lost[tid]}), charged {sum(charges)} > {lost_cost[tid]}"
            )
    logged: dict[int, int] = defaultdict(int)
    for row in rows:
        logged[int(row["token_id"])] += int(row["quota"])
    for tid in tokens.ids:
        key = env.keys.token(tokens.user_id, tid)
        used = int(await redis.hget(key, "used") or 0)
        limit = int(await redis.hget(key, "limit") or 0)
        pg = pg_tokens[tid]
        books = (used, int(pg["used_quota"]), logged[tid])
        if len(set(books)) != 1:
            v.append(f"token {tid}: Redis used / PostgreSQL used / logged = {books}")
        if limit != int(pg["quota_limit"]):
            v.append(f"token {tid}: Redis limit {limit} != PostgreSQL {pg['quota_limit']}")
        if tid in tokens.hot and used > int(pg["quota_limit"]):
            v.append(f"token {tid}: used {used} > granted {pg['quota_limit']}")
    user_used = int(await redis.hget(env.keys.user(tokens.user_id), "used") or 0)
    if not user_used == pg_user == sum(logged.values()):
        v.append(f"user: Redis {user_used}, PostgreSQL {pg_user}, logs {sum(logged.values())}")
    return v


def soak_seconds() -> float:
    return float(os.environ.get("RELAYGATE_SOAK_SECONDS", "0"))
