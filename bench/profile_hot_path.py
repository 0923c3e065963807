"""Profile the relay hot path with py-spy under wrk load (`make bench-profile`).

Starts the nginx mock, a seeded relaygate (one process pinned to CPU 1, full accounting,
flusher as a separate process), drives it with wrk -c64 for BENCH_PROFILE_SECONDS (15) per
mode while ``py-spy record`` samples it, and writes for each mode:
  bench/results/profile-<mode>.svg        flame graph
  bench/results/profile-<mode>.txt        collapsed stacks (py-spy --format raw)
  bench/results/profile-<mode>-top.txt    self time and inclusive time per function
"""

from __future__ import annotations

import collections
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common as c

SECONDS = float(os.environ.get("BENCH_PROFILE_SECONDS", "15"))
MODES = os.environ.get("BENCH_PROFILE_MODES", "non-stream,stream").split(",")
CONNS = int(os.environ.get("BENCH_PROFILE_CONNS", "64"))
FLUSHER = os.environ.get("BENCH_PROFILE_FLUSHER", "1") == "1"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(c.BIN / "py-spy")
    if not os.path.exists(found):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "py-spy"], check=True)
    return found


def summarize(raw_path: str, out_path: str, top: int = 45) -> str:
    self_t: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    with open(raw_path) as fh:
        for line in fh:
            stack, _, n = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(n)
            total += count
            frames = stack.split(";")
            self_t[frames[-1]] += count
            for f in set(frames):
                incl[f] += count
    lines = [f"{total} samples", "", "self time:"]
    lines += [f"{100 * v / total:5.1f}%  {k}" for k, v in self_t.most_common(top)]
    lines += ["", "inclusive time:"]
    lines += [f"{100 * v / total:5.1f}%  {k}" for k, v in incl.most_common(top)]
    text = "\n".join(lines)
    with open(out_path, "w") as fh:
        fh.write(text + "\n")
    return text


def main() -> None:
    spy = py_spy()
    port = c.free_port()
    procs: list[c.Proc] = []
    with c.nginx_mock(port, cpus="0") as mock, c.bench_space():
        try:
            seed = c.seed_cli(mock, 8)
            procs.append(
                c.Proc("flusher", c.pinned("0", [c.RELAYGATE, "worker"]), c.relay_env()).start()
            )
            rport = c.free_port()
            relay = c.Proc(
                "relay-profile",
                c.pinned("1", [c.RELAYGATE, "serve", "--port", str(rport)]),
                c.relay_env(),
            ).start()
            procs.append(relay)
            c.wait_http(f"http://127.0.0.1:{rport}/healthz", relay)
            url = f"http://127.0.0.1:{rport}/v1/chat/completions"
            for mode in MODES:
                body = c.body_for(
                    c.STREAM_MODEL if mode == "stream" else c.NS_MODEL, mode == "stream"
                )
                c.run_wrk(url, body, seed.keys, duration=2)  # warm-up
                base = str(c.RESULTS / (f"profile-{mode}" + ("" if CONNS == 64 else f"-c{CONNS}")))
                rec = [
                    spy,
                    "record",
                    "--pid",
                    str(relay.pid),
                    "--rate",
                    "250",
                    "--nonblocking",
                    "--duration",
                    str(int(SECONDS)),
                ]
                svg = subprocess.Popen(
                    [*rec, "--format", "flamegraph", "-o", base + ".svg"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                raw = subprocess.Popen(
                    [*rec, "--format", "raw", "-o", base + ".txt"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                r = c.run_wrk(
                    url,
                    body,
                    seed.keys,
                    connections=CONNS,
                    threads=min(2, CONNS),
                    duration=SECONDS,
                    cpu_pids=[relay.pid],
                )
                svg.wait()
                raw.wait()
                c.log(
                    f"{mode}: {r.rps:,.0f} req/s, {c.fmt(r.cpu_us_per_req)} us CPU/req under py-spy"
                )
                print(f"== {mode} ==")
                print(summarize(base + ".txt", base + "-top.txt"))
        finally:
            for p in reversed(procs):
                p.stop()


if __name__ == "__main__":
    main()
