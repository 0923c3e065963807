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
# relaygate, and/or the naive pass-through on relaygate's own upstream client: profiled
# under the same load, their difference is what relaygate's accounting costs.
TARGETS = os.environ.get("BENCH_PROFILE_TARGETS", "relaygate").split(",")
RATE = os.environ.get("BENCH_PROFILE_RATE", "250")


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


def profile(spy: str, label: str, target: c.Proc, url: str, mode: str, keys: list[str]) -> None:
    body = c.mode_body(mode)
    c.run_wrk(url, body, keys, duration=2)  # warm-up
    name = f"profile-{label}{mode}" + ("" if CONNS == 64 else f"-c{CONNS}")
    base = str(c.RESULTS / name)
    rec = [spy, "record", "--pid", str(target.pid), "--rate", RATE, "--nonblocking"]
    rec += ["--duration", str(int(SECONDS))]
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
        keys,
        connections=CONNS,
        threads=min(2, CONNS),
        duration=SECONDS,
        cpu_pids=[target.pid],
    )
    svg.wait()
    raw.wait()
    c.log(f"{name}: {r.rps:,.0f} req/s, {c.fmt(r.cpu_us_per_req)} us CPU/req under py-spy")
    print(f"== {name} ==")
    print(summarize(base + ".txt", base + "-top.txt"))


def main() -> None:
    spy = py_spy()
    port = c.free_port()
    procs: list[c.Proc] = []
    sse_port = c.free_port()
    with c.nginx_mock(port, cpus="0") as mock, c.sse_mock(sse_port) as (sse, _), c.bench_space():
        try:
            seed = c.seed_cli(mock, 8, sse_base=sse)
            procs.append(
                c.Proc("flusher", c.pinned("0", [c.RELAYGATE, "worker"]), c.relay_env()).start()
            )
            # (label, process, relay base URL, modes it serves)
            targets: list[tuple[str, c.Proc, str, list[str]]] = []
            if "relaygate" in TARGETS:
                rport = c.free_port()
                relay = c.Proc(
                    "relay-profile",
                    c.pinned("1", [c.RELAYGATE, "serve", "--port", str(rport)]),
                    c.relay_env(),
                ).start()
                procs.append(relay)
                c.wait_http(f"http://127.0.0.1:{rport}/healthz", relay)
                targets.append(("", relay, f"http://127.0.0.1:{rport}", MODES))
            for mode in MODES if "naivefast" in TARGETS else ():
                nport = c.free_port()
                upstream = c.upstreams(mock, sse)[mode]
                args = [sys.executable, str(c.BENCH / "naive_relay_clients.py"), "--client"]
                args += ["fast", "--port", str(nport), "--upstream", upstream]
                naive = c.Proc(f"naivefast-{mode}", c.pinned("1", args)).start()
                procs.append(naive)
                c.wait_http(f"http://127.0.0.1:{nport}/", naive)
                targets.append(("naivefast-", naive, f"http://127.0.0.1:{nport}", [mode]))
            for label, target, base_url, modes in targets:
                for mode in modes:
                    profile(spy, label, target, base_url + "/v1/chat/completions", mode, seed.keys)
        finally:
            for p in reversed(procs):
                p.stop()


if __name__ == "__main__":
    main()
