"""Shared plumbing for the benchmarks: own database, own Redis key prefix, processes, wrk.

Every benchmark here:
  * creates its own PostgreSQL database (``relaygate_bench`` unless RG_BENCH_DB is set) and
    drops it at the end,
  * uses its own Redis key prefix (``rgbench`` unless RG_BENCH_PREFIX is set) and deletes
    only keys under that prefix (SCAN + UNLINK) — never FLUSHALL, never any other key,
  * starts real processes (``relaygate serve``, ``relaygate worker``, nginx, wrk) and stops
    them by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results"
BIN = Path(sys.executable).parent
RELAYGATE = str(BIN / "relaygate")
PG_HOST = os.environ.get("RG_BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
DB_NAME = os.environ.get("RG_BENCH_DB", "relaygate_bench")
DATABASE_URL = f"{PG_HOST}/{DB_NAME}"
REDIS_URL = os.environ.get("RG_BENCH_REDIS", "redis://127.0.0.1:6379/0")
PREFIX = os.environ.get("RG_BENCH_PREFIX", "rgbench")
NCPU = os.cpu_count() or 1
CLK_TCK = os.sysconf("SC_CLK_TCK")
BIG_QUOTA = 10**14  # quota units; New API's bound is 5e14

NS_MODEL = "gpt-4o-mini"  # served by the non-stream channel (nginx /v1/chat/completions)
STREAM_MODEL = "gpt-4o"  # served by the stream channel (nginx /stream/v1/chat/completions)
CHUNKED_MODEL = "gpt-4.1"  # bench/sse_mock.py /chunked: SSE chunk by chunk, no delay
DELAY_MODEL = "gpt-4.1-mini"  # bench/sse_mock.py /delay: SSE chunk by chunk, a few ms apart
SSE_CHUNKS = int(os.environ.get("BENCH_SSE_CHUNKS", "30"))
SSE_DELAY_MS = float(os.environ.get("BENCH_SSE_DELAY_MS", "2"))

# mode -> (model, stream?) for the request body; the upstream of each mode is in upstreams()
MODES: dict[str, tuple[str, bool]] = {
    "non-stream": (NS_MODEL, False),
    "stream": (STREAM_MODEL, True),
    "stream-chunked": (CHUNKED_MODEL, True),
    "stream-chunked-delay": (DELAY_MODEL, True),
}


def upstreams(nginx: str, sse: str | None) -> dict[str, str]:
    """Base URL of each mode's upstream (what a naive relay's --upstream gets)."""
    out = {"non-stream": nginx, "stream": f"{nginx}/stream"}
    if sse is not None:
        out["stream-chunked"] = f"{sse}/chunked"
        out["stream-chunked-delay"] = f"{sse}/delay"
    return out


def mode_body(mode: str) -> str:
    model, stream = MODES[mode]
    return body_for(model, stream)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def relay_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RELAYGATE_DATABASE_URL": DATABASE_URL,
            "RELAYGATE_REDIS_URL": REDIS_URL,
            "RELAYGATE_KEY_PREFIX": PREFIX,
            "RELAYGATE_LOG_LEVEL": "warning",
            "RELAYGATE_FLUSH_BLOCK_MS": "100",
            "RELAYGATE_ALLOW_LOOPBACK_UPSTREAMS": "true",  # nginx/mock upstreams on 127.0.0.1
        }
    )
    env.update(extra)
    return env


# --- database and Redis key space ---------------------------------------------------------


def _psql(sql: str, db: str = "postgres") -> None:
    subprocess.run(
        ["psql", f"{PG_HOST}/{db}", "-v", "ON_ERROR_STOP=1", "-qc", sql],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def create_database() -> None:
    _psql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
    _psql(f'CREATE DATABASE "{DB_NAME}"')
    subprocess.run([RELAYGATE, "migrate"], env=relay_env(), check=True, stdout=subprocess.DEVNULL)


def drop_database() -> None:
    with contextlib.suppress(subprocess.CalledProcessError):
        _psql(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')


def clean_redis_prefix() -> int:
    """Delete every key under ``PREFIX:`` (and nothing else). Returns how many."""
    import redis

    r = redis.Redis.from_url(REDIS_URL)
    n = 0
    batch: list[bytes] = []
    for key in r.scan_iter(match=f"{PREFIX}:*", count=5000):
        batch.append(key)
        if len(batch) >= 1000:
            n += r.unlink(*batch)
            batch = []
    if batch:
        n += r.unlink(*batch)
    r.close()
    return n


# --- processes ------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    args: list[str]
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None
    logfile: Path | None = None

    def start(self) -> Proc:
        RESULTS.mkdir(parents=True, exist_ok=True)
        self.logfile = RESULTS / f"{self.name}.log"
        fh = self.logfile.open("wb")
        self.popen = subprocess.Popen(self.args, env=self.env, stdout=fh, stderr=subprocess.STDOUT)
        fh.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def stop(self, timeout: float = 15) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)

    def tail(self) -> str:
        return (
            self.logfile.read_text(errors="replace")[-2000:]
            if self.logfile and self.logfile.exists()
            else ""
        )


def wait_http(
    url: str, proc: Proc | None = None, timeout: float = 30.0, method: str = "GET"
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen is not None and proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
        try:
            req = urllib.request.Request(url, method=method)
            with urllib.request.urlopen(req, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} not ready" + (f":\n{proc.tail()}" if proc else ""))


def pinned(cpus: str | None, args: Sequence[str]) -> list[str]:
    if cpus is None or shutil.which("taskset") is None:
        return list(args)
    return ["taskset", "-c", cpus, *args]


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (the forked ``serve --workers N`` children)."""
    out = [pid]
    i = 0
    while i < len(out):
        p = out[i]
        i += 1
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                with contextlib.suppress(OSError):
                    kids = Path(f"/proc/{p}/task/{task}/children").read_text().split()
                    out.extend(int(k) for k in kids if int(k) not in out)
    return out


def cpu_seconds(pids: Sequence[int]) -> float:
    """utime + stime of the given processes, seconds (from /proc/<pid>/stat)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def machine_cpu_seconds() -> float:
    """Busy CPU seconds of the whole machine so far (all CPUs, from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / CLK_TCK


def pids_named(name: str) -> list[int]:
    """Processes whose executable name is exactly ``name`` (redis-server, postgres, nginx)."""
    out = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


# --- nginx mock -----------------------------------------------------------------------------


@contextlib.contextmanager
def nginx_mock(port: int, cpus: str | None = "0", workers: int = 1) -> Iterator[str]:
    """Start the nginx mock (pinned to ``cpus``); yields the base URL."""
    script = str(BENCH / "start_nginx_mock.sh")
    env = dict(os.environ, NGINX_MOCK_WORKERS=str(workers))
    subprocess.run(
        pinned(cpus, [script, str(port)]), env=env, check=True, stdout=subprocess.DEVNULL
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([script, str(port), "stop"], env=env, check=False, stdout=subprocess.DEVNULL)


@contextlib.contextmanager
def sse_mock(port: int, cpus: str | None = "0") -> Iterator[tuple[str, int]]:
    """Start bench/sse_mock.py (chunk-by-chunk SSE, pinned to ``cpus``); yields the base URL
    and its pid (so its own CPU per request can be measured: it must stay far below the
    relays')."""
    p = Proc(
        "sse-mock",
        pinned(
            cpus,
            [
                sys.executable,
                str(BENCH / "sse_mock.py"),
                "--port",
                str(port),
                "--chunks",
                str(SSE_CHUNKS),
                "--delay-ms",
                str(SSE_DELAY_MS),
            ],
        ),
    ).start()
    try:
        wait_http(f"http://127.0.0.1:{port}/v1/models", p)
        yield f"http://127.0.0.1:{port}", p.pid
    finally:
        p.stop()


# --- wrk ------------------------------------------------------------------------------------


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk missing: apt-get install -y wrk")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if subprocess.run(
        ["apt-get", "install", "-y", "wrk"], env=env, stdout=subprocess.DEVNULL
    ).returncode:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(
            ["apt-get", "install", "-y", "wrk"], env=env, check=True, stdout=subprocess.DEVNULL
        )
    found = shutil.which("wrk")
    if not found:
        raise SystemExit("wrk could not be installed")
    return found


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int  # socket errors + non-2xx
    overhead_p50_ms: float | None = None
    overhead_p99_ms: float | None = None
    cpu_us_per_req: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def body_for(model: str, stream: bool) -> str:
    body: dict[str, Any] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Say hello in five words, please."},
        ],
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
    return json.dumps(body, separators=(",", ":"))


def run_wrk(
    url: str,
    body: str,
    keys: Sequence[str],
    *,
    connections: int = 64,
    threads: int = 2,
    duration: float = 10,
    cpus: str | None = "0",
    overhead: bool = False,
    cpu_pids: Sequence[int] = (),
    cpu_groups: dict[str, list[int]] | None = None,
    headers: dict[str, str] | None = None,
) -> WrkResult:
    """POST ``body`` to ``url`` rotating over ``keys`` (plus ``headers`` on every request);
    CPU of ``cpu_pids`` is sampled around the run (µs per completed request)."""
    wrk = ensure_wrk()
    env = dict(
        os.environ,
        WRK_BODY=body,
        WRK_KEYS=",".join(keys) if keys else "sk-none",
        WRK_OVERHEAD="1" if overhead else "0",
        WRK_HEADERS="\n".join(f"{k}: {v}" for k, v in (headers or {}).items()),
    )
    threads = max(1, min(threads, connections))
    args = pinned(
        cpus,
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--timeout",
            "10s",
            "-s",
            str(BENCH / "wrk_post.lua"),
            url,
        ],
    )
    groups = cpu_groups or {}
    group_before = {k: cpu_seconds(v) for k, v in groups.items()}
    machine_before = machine_cpu_seconds()
    before = cpu_seconds(cpu_pids) if cpu_pids else 0.0
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    after = cpu_seconds(cpu_pids) if cpu_pids else 0.0
    machine_after = machine_cpu_seconds()
    group_after = {k: cpu_seconds(v) for k, v in groups.items()}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}")
    d = json.loads(line[8:])
    res = WrkResult(
        requests=d["requests"],
        duration_s=d["duration_us"] / 1e6,
        rps=d["requests"] / (d["duration_us"] / 1e6),
        p50_ms=d["p50_us"] / 1000,
        p99_ms=d["p99_us"] / 1000,
        errors=d["errors"],
        overhead_p50_ms=d.get("ovh_p50"),
        overhead_p99_ms=d.get("ovh_p99"),
    )
    if cpu_pids and res.requests:
        res.cpu_us_per_req = (after - before) * 1e6 / res.requests
    if groups and res.requests:
        # µs of CPU per request by component, and the whole machine (the rest: wrk, kernel)
        by = {k: (group_after[k] - group_before[k]) * 1e6 / res.requests for k in groups}
        by["machine"] = (machine_after - machine_before) * 1e6 / res.requests
        res.extra["cpu_by"] = by
    return res


def mock_alone(
    upstream: dict[str, str],
    mode: str,
    body: str,
    sse_pid: int,
    path: str,
    *,
    conns: int,
    duration: float,
) -> WrkResult:
    """wrk straight at the mock serving ``mode``, with the mock's own CPU per request: it must
    stay far below the relays' for their figures to mean anything."""
    r = run_wrk(
        upstream[mode] + path,
        body,
        ["x"],
        connections=conns,
        duration=duration,
        cpu_pids=[sse_pid] if mode.startswith("stream-chunked") else pids_named("nginx"),
    )
    log(
        f"mock alone {mode}: {r.rps:,.0f} req/s p50 {r.p50_ms:.2f} ms, "
        f"mock cpu {fmt(r.cpu_us_per_req)} us/req"
    )
    return r


def median(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if vals else None


def fmt(x: float | None, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def write_json(name: str, data: Any) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(data, indent=2, default=lambda o: o.__dict__))
    return path


# --- provisioning through the admin CLI -----------------------------------------------------


def admin(*args: str) -> dict[str, Any]:
    out = subprocess.run(
        [RELAYGATE, "admin", *args], env=relay_env(), check=True, capture_output=True, text=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@dataclass
class Seed:
    user_id: int
    keys: list[str]


def seed_cli(mock_base: str, n_tokens: int = 8, sse_base: str | None = None) -> Seed:
    """A user, a non-stream and a stream channel on the nginx mock (and, with ``sse_base``,
    the two chunk-by-chunk channels on bench/sse_mock.py), and n big tokens."""
    user = admin("create-user", "--username", "bench", "--quota", str(BIG_QUOTA))
    if sse_base is not None:
        for name, path, model in (
            ("sse-chunked", "chunked", CHUNKED_MODEL),
            ("sse-delay", "delay", DELAY_MODEL),
        ):
            admin(
                "create-channel",
                "--name",
                name,
                "--base-url",
                f"{sse_base}/{path}",
                "--key",
                "sk-upstream",
                "--models",
                model,
            )
    admin(
        "create-channel",
        "--name",
        "nginx-ns",
        "--base-url",
        mock_base,
        "--key",
        "sk-upstream",
        "--models",
        NS_MODEL,
    )
    admin(
        "create-channel",
        "--name",
        "nginx-stream",
        "--base-url",
        f"{mock_base}/stream",
        "--key",
        "sk-upstream",
        "--models",
        STREAM_MODEL,
    )
    keys = []
    for i in range(n_tokens):
        tok = admin(
            "create-token",
            "--user-id",
            str(user["id"]),
            "--name",
            f"bench-{i}",
            "--remain-quota",
            str(BIG_QUOTA),
        )
        keys.append(tok["key"])
    return Seed(user_id=int(user["id"]), keys=keys)


@contextlib.contextmanager
def bench_space() -> Iterator[None]:
    """Own database + own Redis prefix for the duration; always cleaned up."""
    clean_redis_prefix()
    create_database()
    try:
        yield
    finally:
        n = clean_redis_prefix()
        drop_database()
        log(f"cleaned up: database {DB_NAME} dropped, {n} Redis keys under {PREFIX}: deleted")
