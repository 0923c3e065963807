"""`make bench-flusher`: events/s the flusher lands in PostgreSQL.

Pushes BENCH_FLUSH_EVENTS (200,000) synthetic usage events into the shard streams — the
entry format settle.lua writes (``quota`` plus the ``event`` JSON of
``relaygate.relay.accounting.usage_event``) — with XADD pipelines, then starts ``relaygate worker`` processes
(BENCH_FLUSH_WORKERS, default 1) and measures, from the first batch done to the last, how
many events per second reach the ``logs`` table for good (committed, then acked and
deleted from their stream: progress is polled from the streams' lengths, see
``left_in_streams``). Checks exactly-once afterwards: one row per event, and the tokens'
used_quota equals the sum of the events' quota.

Also reports the CPU the flusher's PostgreSQL backends spent per event (the other half of
the work; on this 2-vCPU machine the two share the cores with everything else).

A/B: ``BENCH_FLUSH_SRC=/path/a,/path/b`` runs the worker from each source tree in turn (its
``src`` first on PYTHONPATH, e.g. a ``git worktree`` of another commit; ``.`` is this one),
``BENCH_FLUSH_REPS`` (1) times, interleaved, each on a fresh database, then prints the medians.

Own database (relaygate_bench) and Redis prefix (rgbench); both cleaned up.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import orjson
import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common as c

EVENTS = int(os.environ.get("BENCH_FLUSH_EVENTS", "200000"))
WORKERS = int(os.environ.get("BENCH_FLUSH_WORKERS", "1"))
SHARDS = 16
N_TOKENS = 50
TARGET = 50_000
SRCS = [p for p in os.environ.get("BENCH_FLUSH_SRC", "").split(",") if p]
REPS = int(os.environ.get("BENCH_FLUSH_REPS", "1"))


def psql(sql: str) -> str:
    return subprocess.run(
        ["psql", c.DATABASE_URL, "-tAc", sql], capture_output=True, text=True, check=True
    ).stdout.strip()


def push_events(r: redis.Redis, tokens: list[tuple[int, int]]) -> int:
    """XADD EVENTS events (the entry format settle.lua writes); returns total quota."""
    from relaygate import events
    from relaygate.keys import KeyScheme

    keys = KeyScheme(c.PREFIX, SHARDS)
    other = orjson.dumps(
        {
            "model_ratio": 0.075,
            "completion_ratio": 4.0,
            "group_ratio": 1.0,
            "model_price": -1,
            "estimated": False,
            "reserved": 1234,
        }
    ).decode()
    now = int(time.time())
    total = 0
    pipe = r.pipeline(transaction=False)
    for i in range(EVENTS):
        uid, tid = tokens[i % len(tokens)]
        quota = 30 + i % 7
        total += quota
        event = {
            "rid": f"{time.time_ns():016x}{i:08x}",
            "ts": now,
            "user": uid,
            "token": tid,
            "tname": f"bench-{tid}",
            "uname": f"user{uid}",
            "model": "gpt-4o-mini",
            "chan": 1,
            "group": "default",
            "pt": 10,
            "ct": 20,
            "stream": i & 1,
            "lat": 3,
            "ip": "127.0.0.1",
            "other": other,
        }
        pipe.xadd(keys.stream_of_user(uid), {"quota": quota, "event": events.encode(event)})
        if len(pipe) >= 2000:
            pipe.execute()
    pipe.execute()
    return total


def main() -> None:
    if not SRCS:
        run_once(None)
        return
    results: dict[str, list[dict[str, float]]] = {src: [] for src in SRCS}
    for rep in range(REPS):
        for src in SRCS:
            c.log(f"rep {rep + 1}/{REPS}: {src}")
            results[src].append(run_once(src))
    print(
        "\nA/B medians (events/s first row to last, and including the process start; "
        "CPU us/event flusher + PostgreSQL):"
    )
    for src, runs in results.items():
        rates = sorted(round(x["steady_events_per_s"]) for x in runs)
        whole = statistics.median(x["events_per_s"] for x in runs)
        fl = statistics.median(x["cpu_us_per_event"] for x in runs)
        pg = statistics.median(x["pg_cpu_us_per_event"] for x in runs)
        st = statistics.median(x["steady_cpu_us_per_event"] for x in runs)
        print(
            f"  {src}: {statistics.median(rates):,.0f} events/s (runs {rates}; "
            f"{whole:,.0f} incl. start), "
            f"flusher {fl:.1f} ({st:.1f} after the first batch) + PostgreSQL {pg:.1f} us/event"
        )


def left_in_streams(r: redis.Redis) -> int:
    """Entries still in the shard streams. The flusher deletes an entry (XACK + XDEL) only
    after the transaction that recorded it committed, so EVENTS minus this is how many are
    in PostgreSQL for good. Why not ``count(*) FROM logs`` every poll: it scans the whole
    table, ~0.1 s of a CPU (and parallel workers) at a million rows, polled back to back,
    which took the cores the flusher and its backend were being measured on, and made the
    bigger backlogs look slower (bench/README.md, "Flusher")."""
    from relaygate.keys import KeyScheme

    pipe = r.pipeline(transaction=False)
    for stream in KeyScheme(c.PREFIX, SHARDS).streams():
        pipe.xlen(stream)
    return int(sum(pipe.execute()))


def pg_backends() -> list[int]:
    """The server processes of the flusher's connections to the bench database."""
    rows = psql(
        f"SELECT pid FROM pg_stat_activity WHERE datname = '{c.DB_NAME}' "
        "AND pid <> pg_backend_pid()"
    )
    return [int(x) for x in rows.split()]


def run_once(src: str | None) -> dict[str, float]:
    r = redis.Redis.from_url(c.REDIS_URL)
    procs: list[c.Proc] = []
    with c.bench_space():
        try:
            # Users and tokens straight in SQL (the flusher only adds to their used totals).
            psql(
                "INSERT INTO users (username, quota_limit) SELECT 'user' || g, 1000000000 FROM generate_series(1, 10) g;"
            )
            psql(
                "INSERT INTO tokens (user_id, key_hash, key_mask, name, quota_limit) "
                f"SELECT 1 + g % 10, sha256(g::text::bytea), 'sk-b**', 'bench-' || g, 1000 FROM generate_series(1, {N_TOKENS}) g"
            )
            rows = psql("SELECT id, user_id FROM tokens ORDER BY id")
            tokens = [(int(u), int(t)) for t, u in (ln.split("|") for ln in rows.splitlines())]
            t0 = time.perf_counter()
            total_quota = push_events(r, tokens)
            c.log(
                f"pushed {EVENTS:,} events into {SHARDS} streams in {time.perf_counter() - t0:.1f} s"
            )
            env = c.relay_env(RELAYGATE_SHARDS=str(SHARDS))
            if src is not None:
                tree = os.path.abspath(os.path.join(src, "src"))
                env["PYTHONPATH"] = os.pathsep.join(filter(None, [tree, env.get("PYTHONPATH")]))
            start = time.perf_counter()
            for i in range(WORKERS):
                procs.append(c.Proc(f"flusher-bench-{i}", [c.RELAYGATE, "worker"], env).start())
            spy = None
            if os.environ.get("BENCH_FLUSH_PROFILE") == "1":  # py-spy the first worker
                spy = subprocess.Popen(
                    [
                        str(c.BIN / "py-spy"),
                        "record",
                        "--pid",
                        str(procs[0].pid),
                        "--rate",
                        "200",
                        "--nonblocking",
                        "--format",
                        "raw",
                        "-o",
                        str(c.RESULTS / "profile-flusher.txt"),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            first = None
            cpu_first = 0.0
            done = 0
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                done = EVENTS - left_in_streams(r)
                now = time.perf_counter()
                if done and first is None:
                    first = (now, done)
                    cpu_first = c.cpu_seconds([p.pid for p in procs])  # start + first batch
                if done >= EVENTS:
                    break
                time.sleep(0.01)
            end = time.perf_counter()
            landed = int(psql("SELECT count(*) FROM logs"))
            cpu = c.cpu_seconds([p.pid for p in procs])
            pg_cpu = c.cpu_seconds(pg_backends())
            if spy is not None:
                spy.send_signal(2)
                spy.wait(30)
            for p in procs:
                p.stop()
            used = int(psql("SELECT coalesce(sum(used_quota), 0) FROM tokens"))
            dup = int(psql("SELECT count(*) - count(DISTINCT request_id) FROM logs"))
            wall = end - start
            steady = (landed - first[1]) / (end - first[0]) if first and end > first[0] else 0.0
            # The flusher's CPU per event once running (its start-up, ~0.5 s of imports,
            # excluded): what bounds one worker's rate on a core of its own.
            steady_cpu = (cpu - cpu_first) * 1e6 / max(landed - (first[1] if first else 0), 1)
            rate = landed / wall
            print(
                f"\nflusher: {landed:,} of {EVENTS:,} events in PostgreSQL in {wall:.2f} s "
                f"(incl. process start) = {rate:,.0f} events/s; first-row-to-last {steady:,.0f} events/s; "
                f"{WORKERS} worker process(es), flusher CPU {cpu * 1e6 / max(landed, 1):.1f} us/event "
                f"({steady_cpu:.1f} after the first batch), "
                f"its PostgreSQL backends {pg_cpu * 1e6 / max(landed, 1):.1f} us/event"
            )
            print(
                f"exactly once: duplicates {dup}, tokens used_quota {used:,} vs events' quota {total_quota:,} "
                f"-> {'OK' if dup == 0 and used == total_quota and landed == EVENTS else 'MISMATCH'}"
            )
            print(f"target >= {TARGET:,} events/s: {'met' if steady >= TARGET else 'MISSED'}")
            path = c.write_json(
                "flusher",
                {
                    "events": EVENTS,
                    "landed": landed,
                    "wall_s": wall,
                    "events_per_s": rate,
                    "steady_events_per_s": steady,
                    "workers": WORKERS,
                    "duplicates": dup,
                    "used_quota": used,
                    "expected_quota": total_quota,
                    "cpu_us_per_event": cpu * 1e6 / max(landed, 1),
                    "pg_cpu_us_per_event": pg_cpu * 1e6 / max(landed, 1),
                    "steady_cpu_us_per_event": steady_cpu,
                    "src": src or ".",
                },
            )
            print(f"JSON: {path.relative_to(c.ROOT)}")
            return {
                "events_per_s": rate,
                "steady_events_per_s": steady,
                "cpu_us_per_event": cpu * 1e6 / max(landed, 1),
                "pg_cpu_us_per_event": pg_cpu * 1e6 / max(landed, 1),
                "steady_cpu_us_per_event": steady_cpu,
            }
        finally:
            for p in procs:
                p.stop()
            r.close()


if __name__ == "__main__":
    main()
