"""`make bench-locust`: the locust scenarios (bench/locustfile.py), headless, fixed time.

Sets up a local stack — nginx mock upstream, own database and Redis prefix, relaygate
``serve --workers 2`` plus a ``relaygate worker`` flusher — provisions users and tokens
through the admin CLI (several users, many tokens, a few with a quota too small for one
request), runs locust headless for LOCUST_TIME (30s) with LOCUST_USERS (50) users, and
saves bench/results/locust_stats.csv (+ _failures, _history) and bench/results/locust.html.
Afterwards it checks the accounting: every 200 became exactly one usage row.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common as c

RUN_TIME = os.environ.get("LOCUST_TIME", "30s")
USERS = int(os.environ.get("LOCUST_USERS", "50"))
N_USERS = 3
TOKENS_PER_USER = 8
EXHAUSTED = 3


def locust_bin() -> str:
    found = shutil.which("locust") or str(c.BIN / "locust")
    if not os.path.exists(found):
        c.log("locust missing: pip install locust (the 'bench' extra)")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "locust"], check=True)
    return found


def provision(mock: str) -> dict[str, list[str]]:
    c.admin(
        "create-channel",
        "--name",
        "nginx-ns",
        "--base-url",
        mock,
        "--key",
        "sk-upstream",
        "--models",
        "gpt-4o-mini,gpt-3.5-turbo",
    )
    c.admin(
        "create-channel",
        "--name",
        "nginx-stream",
        "--base-url",
        f"{mock}/stream",
        "--key",
        "sk-upstream",
        "--models",
        "gpt-4o,gpt-4o-2024-08-06",
    )
    users = [
        c.admin("create-user", "--username", f"locust{i}", "--quota", str(c.BIG_QUOTA))["id"]
        for i in range(N_USERS)
    ]
    jobs = []
    for uid in users:
        for t in range(TOKENS_PER_USER):
            jobs.append(
                (
                    "create-token",
                    "--user-id",
                    str(uid),
                    "--name",
                    f"lt{t}",
                    "--remain-quota",
                    str(c.BIG_QUOTA),
                )
            )
    for i in range(EXHAUSTED):
        jobs.append(
            (
                "create-token",
                "--user-id",
                str(users[0]),
                "--name",
                f"empty{i}",
                "--remain-quota",
                "1",
            )
        )
    with ThreadPoolExecutor(4) as ex:
        made = list(ex.map(lambda a: c.admin(*a)["key"], jobs))
    n_big = N_USERS * TOKENS_PER_USER
    return {"keys": made[:n_big], "exhausted": made[n_big:]}


def main() -> None:
    locust = locust_bin()
    procs: list[c.Proc] = []
    port = c.free_port()
    with c.nginx_mock(port, cpus=None, workers=1) as mock, c.bench_space():
        try:
            tokens = provision(mock)
            c.log(
                f"provisioned {N_USERS} users, {len(tokens['keys'])} tokens, {len(tokens['exhausted'])} exhausted"
            )
            tokens_file = c.RESULTS / "locust_tokens.json"
            tokens_file.write_text(json.dumps(tokens))
            procs.append(c.Proc("locust-flusher", [c.RELAYGATE, "worker"], c.relay_env()).start())
            rport = c.free_port()
            relay = c.Proc(
                "locust-relay",
                [c.RELAYGATE, "serve", "--workers", "2", "--port", str(rport)],
                c.relay_env(),
            ).start()
            procs.append(relay)
            c.wait_http(f"http://127.0.0.1:{rport}/healthz", relay)
            args = [
                locust,
                "-f",
                str(c.BENCH / "locustfile.py"),
                "--headless",
                "-u",
                str(USERS),
                "-r",
                str(USERS),
                "-t",
                RUN_TIME,
                "--host",
                f"http://127.0.0.1:{rport}",
                "--csv",
                str(c.RESULTS / "locust"),
                "--html",
                str(c.RESULTS / "locust.html"),
                "--only-summary",
            ]
            c.log(" ".join(args[1:]))
            env = dict(os.environ, LOCUST_TOKENS_FILE=str(tokens_file))
            proc = subprocess.run(
                args, env=env, cwd=c.ROOT, check=False, capture_output=True, text=True
            )
            print(proc.stdout[-6000:])
            print(proc.stderr[-6000:])
            ok = count_ok_summary(proc.stdout + proc.stderr) or count_ok(
                c.RESULTS / "locust_stats.csv"
            )
            time.sleep(1)
            from run_bench import wait_flushed

            fl = wait_flushed()
            print(
                f"\naccounting: {ok:,} successful relayed requests (locust 200s), "
                f"{fl['rows']:,} usage rows in PostgreSQL (may exceed by the requests in flight when "
                "locust stopped: they still complete and are billed)"
            )
            print("reports: bench/results/locust_stats.csv, bench/results/locust.html")
        finally:
            for p in reversed(procs):
                p.stop()


def count_ok_summary(text: str) -> int:
    """Successful chat/stream requests from locust's final summary (the CSV is written a
    moment before the run stops, so it lags by the last few hundred requests)."""
    import re

    total = 0
    for m in re.finditer(r"^POST\s+(?:chat|stream) \S+\s+(\d+)\s+(\d+)\(", text, re.MULTILINE):
        total += int(m.group(1)) - int(m.group(2))
    return total


def count_ok(csv_path: os.PathLike[str]) -> int:
    import csv

    total = 0
    with open(csv_path) as fh:
        for row in csv.DictReader(fh):
            name = row.get("Name", "")
            if name.startswith(("chat ", "stream ")):
                total += int(row["Request Count"]) - int(row["Failure Count"])
    return total


if __name__ == "__main__":
    main()
