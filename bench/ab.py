"""A/B the relay's CPU cost per request between source trees, interleaved with the naive relay.

Why: this shared 2-vCPU machine drifts ±20% between minutes, so two `make bench` runs cannot
tell a 20 µs change apart. Here every variant and the naive pass-through run in the same
minute, interleaved, each pinned to the same core, and the medians of CPU µs/request and
of the ratio to the naive relay's req/s are printed.

    .venv/bin/python bench/ab.py [SRC_DIR ...]        # default: this checkout's src/
    BENCH_AB_MODES=non-stream BENCH_AB_REPS=5 BENCH_AB_DURATION=5 .venv/bin/python bench/ab.py \
        /tmp/rg-base/src src

Each SRC_DIR is put first on PYTHONPATH of its own ``relaygate serve`` (so a
``git worktree`` of an older commit is a valid variant). One database, one key prefix and
one flusher (from this checkout) serve all variants.

Modes (``BENCH_AB_MODES``): ``non-stream`` and ``stream`` on the nginx mock (whose SSE
answer arrives in one packet), ``stream-chunked`` and ``stream-chunked-delay`` on
bench/sse_mock.py (SSE chunk by chunk, one write per chunk; no delay / BENCH_SSE_DELAY_MS
apart). Default: all four.

Extra naive pass-throughs on other upstream clients (bench/naive_relay_clients.py):
``BENCH_AB_NAIVE=httptools,pyreqwest,aiosonic``, run with ``BENCH_AB_CLIENTS_PYTHON``
(default: this interpreter) since pyreqwest/aiosonic are not relaygate dependencies. The
``cpu x`` column is the naive aiohttp relay's CPU µs/request divided by the target's (>1:
cheaper than the naive aiohttp pass-through), median over the repetitions.

Latency at concurrency 1 (issue 16 Done-when 2): ``BENCH_CONNS=1`` runs wrk -t1 -c1 and, in
every repetition, the mock directly too (``direct|MODE``), so the ``added p50``/``added p99``
columns (target minus direct in the same repetition, median over repetitions) compare
variants on the c=1 path of run_bench.py, interleaved. Also with ``BENCH_AB_DIRECT=1``.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

import common as c

PATH = "/v1/chat/completions"
RELAY_CPU = "1"
LOADGEN_CPU = "0"
REPS = int(os.environ.get("BENCH_AB_REPS", "4"))
DURATION = float(os.environ.get("BENCH_AB_DURATION", "6"))
CONNS = int(os.environ.get("BENCH_CONNS", "64"))
MODES = os.environ.get(
    "BENCH_AB_MODES", "non-stream,stream,stream-chunked,stream-chunked-delay"
).split(",")
NAIVE_CLIENTS = [x for x in os.environ.get("BENCH_AB_NAIVE", "").split(",") if x]
CLIENTS_PYTHON = os.environ.get("BENCH_AB_CLIENTS_PYTHON", sys.executable)
DIRECT = CONNS == 1 or os.environ.get("BENCH_AB_DIRECT") == "1"


def serve_args(src: str, port: int) -> list[str]:
    code = "import sys; from relaygate.cli import main; main(sys.argv[1:])"
    return [sys.executable, "-c", code, "serve", "--port", str(port)]


def user_sys(pid: int) -> tuple[float, float]:
    """(utime, stime) seconds of one process: how much of the cost is the kernel's."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) / c.CLK_TCK, int(fields[12]) / c.CLK_TCK


def main() -> None:
    srcs = sys.argv[1:] or [str(c.ROOT / "src")]
    c.ensure_wrk()
    mock_port = c.free_port()
    procs: list[c.Proc] = []
    bodies = {m: c.mode_body(m) for m in MODES}
    with (
        c.nginx_mock(mock_port, cpus=LOADGEN_CPU, workers=1) as mock,
        c.sse_mock(c.free_port(), cpus=LOADGEN_CPU) as (sse, sse_pid),
    ):
        upstream = c.upstreams(mock, sse)
        with c.bench_space():
            try:
                seed = c.seed_cli(mock, 8, sse_base=sse)
                procs.append(
                    c.Proc(
                        "ab-flusher", c.pinned(LOADGEN_CPU, [c.RELAYGATE, "worker"]), c.relay_env()
                    ).start()
                )
                targets: dict[str, tuple[str, c.Proc]] = {}
                for mode in MODES:
                    port = c.free_port()
                    p = c.Proc(
                        f"ab-naive-{mode}",
                        c.pinned(
                            RELAY_CPU,
                            [
                                sys.executable,
                                str(c.BENCH / "naive_relay.py"),
                                "--port",
                                str(port),
                                "--upstream",
                                upstream[mode],
                            ],
                        ),
                    ).start()
                    procs.append(p)
                    c.wait_http(f"http://127.0.0.1:{port}/", p)
                    targets[f"naive|{mode}"] = (f"http://127.0.0.1:{port}{PATH}", p)
                    for client in NAIVE_CLIENTS:
                        port = c.free_port()
                        args = [CLIENTS_PYTHON, str(c.BENCH / "naive_relay_clients.py")]
                        args += ["--client", client, "--port", str(port)]
                        args += ["--upstream", upstream[mode]]
                        p = c.Proc(f"ab-naive-{client}-{mode}", c.pinned(RELAY_CPU, args)).start()
                        procs.append(p)
                        c.wait_http(f"http://127.0.0.1:{port}/", p)
                        targets[f"{client}|{mode}"] = (f"http://127.0.0.1:{port}{PATH}", p)
                for i, spec in enumerate(srcs):
                    # "SRC_DIR[:NAME=VALUE,...]": extra environment for that variant
                    src, _, extra = spec.partition(":")
                    port = c.free_port()
                    env = c.relay_env(PYTHONPATH=str(Path(src).resolve()))
                    env.update(kv.split("=", 1) for kv in extra.split(",") if kv)
                    p = c.Proc(f"ab-v{i}", c.pinned(RELAY_CPU, serve_args(src, port)), env).start()
                    procs.append(p)
                    c.wait_http(f"http://127.0.0.1:{port}/healthz", p)
                    for mode in MODES:
                        targets[f"v{i}|{mode}"] = (f"http://127.0.0.1:{port}{PATH}", p)
                for name, (url, _p) in targets.items():
                    mode = name.split("|")[1]
                    r = c.run_wrk(url, bodies[mode], seed.keys, connections=CONNS, duration=2)
                    if r.errors:
                        c.log(f"WARNING: warm-up {name}: {r.errors} errors of {r.requests}")
                for mode in MODES:
                    c.mock_alone(
                        upstream,
                        mode,
                        bodies[mode],
                        sse_pid,
                        PATH,
                        conns=CONNS,
                        duration=min(DURATION, 3),
                    )
                cpu: dict[str, list[float]] = {k: [] for k in targets}
                rps: dict[str, list[float]] = {k: [] for k in targets}
                ratio: dict[str, list[float]] = {k: [] for k in targets}
                sys_share: dict[str, list[float]] = {k: [] for k in targets}
                cpu_x: dict[str, list[float]] = {k: [] for k in targets}
                p50: dict[str, list[float]] = {k: [] for k in targets}
                p99: dict[str, list[float]] = {k: [] for k in targets}
                added50: dict[str, list[float]] = {k: [] for k in targets}
                added99: dict[str, list[float]] = {k: [] for k in targets}
                for rep in range(REPS):
                    for mode in MODES:
                        naive_rps = None
                        naive_cpu = None
                        direct = None
                        if DIRECT:
                            direct = c.run_wrk(
                                upstream[mode] + PATH,
                                bodies[mode],
                                ["x"],
                                connections=CONNS,
                                duration=DURATION,
                            )
                            c.log(
                                f"rep {rep + 1} direct|{mode:23s} p50 {direct.p50_ms:.3f} "
                                f"p99 {direct.p99_ms:.3f} ms"
                            )
                        for name, (url, p) in targets.items():
                            if not name.endswith("|" + mode):
                                continue
                            u0, s0 = user_sys(p.pid)
                            r = c.run_wrk(
                                url,
                                bodies[mode],
                                seed.keys,
                                connections=CONNS,
                                duration=DURATION,
                                cpu_pids=[p.pid],
                            )
                            u1, s1 = user_sys(p.pid)
                            sys_share[name].append((s1 - s0) / max(1e-9, (u1 - u0) + (s1 - s0)))
                            if r.errors:
                                c.log(f"WARNING: {name}: {r.errors} errors of {r.requests}")
                            cpu[name].append(r.cpu_us_per_req or 0.0)
                            rps[name].append(r.rps)
                            p50[name].append(r.p50_ms)
                            p99[name].append(r.p99_ms)
                            if direct is not None:
                                added50[name].append(r.p50_ms - direct.p50_ms)
                                added99[name].append(r.p99_ms - direct.p99_ms)
                            if name.startswith("naive|"):
                                naive_rps = r.rps
                                naive_cpu = r.cpu_us_per_req
                            elif naive_rps:
                                ratio[name].append(r.rps / naive_rps)
                            if naive_cpu and r.cpu_us_per_req:
                                cpu_x[name].append(naive_cpu / r.cpu_us_per_req)
                            c.log(
                                f"rep {rep + 1} {name:30s} {r.rps:8,.0f} req/s cpu {c.fmt(r.cpu_us_per_req)} us/req"
                                f" p50 {r.p50_ms:.3f} p99 {r.p99_ms:.3f} ms"
                            )
                        time.sleep(0.2)
                print(
                    f"\nA/B: {REPS} reps x {DURATION:g} s, wrk -c{CONNS}, relays pinned to CPU {RELAY_CPU}"
                )
                for i, src in enumerate(srcs):
                    print(f"  v{i} = {src}")
                print(
                    f"{'target':30s} {'req/s':>8s} {'cpu us/req':>11s} {'ratio':>6s} "
                    f"{'cpu x':>6s} {'sys%':>5s} {'p50 ms':>7s} {'p99 ms':>7s}"
                    + (f" {'added p50':>9s} {'added p99':>9s}" if DIRECT else "")
                )
                for name in targets:
                    r_med = statistics.median(ratio[name]) if ratio[name] else 1.0
                    x_med = statistics.median(cpu_x[name]) if cpu_x[name] else 1.0
                    print(
                        f"{name:30s} {statistics.median(rps[name]):8,.0f} "
                        f"{statistics.median(cpu[name]):11.0f} {r_med:6.2f} {x_med:6.2f} "
                        f"{100 * statistics.median(sys_share[name]):5.0f} "
                        f"{statistics.median(p50[name]):7.3f} {statistics.median(p99[name]):7.3f}"
                        + (
                            f" {statistics.median(added50[name]):9.3f} "
                            f"{statistics.median(added99[name]):9.3f}"
                            if DIRECT and added50[name]
                            else ""
                        )
                    )
            finally:
                for p in reversed(procs):
                    p.stop()


if __name__ == "__main__":
    main()
