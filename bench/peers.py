"""`make bench-peers`: relaygate vs Portkey's AI gateway and LiteLLM's proxy, same nginx
mock, same wrk load, one run.

LiteLLM is installed into its own venv, bench/.peers/litellm (git-ignored), with
``pip install 'litellm[proxy]'``; it runs offline with LITELLM_LOCAL_MODEL_COST_MAP=True,
no database, a master key only, one worker. Portkey's gateway (``@portkey-ai/gateway``
from the npm registry) is installed into bench/.peers/portkey (git-ignored, never
globally) and started with ``node build/start-server.js --headless``, from a copy carrying
a one-line fix without which it fails every stream (``PORTKEY_FIX``; labelled "+ stream
fix" in the table); each request names the provider and the mock in headers
(``x-portkey-provider: openai``, ``x-portkey-custom-host: <mock>/v1`` or
``<mock>/stream/v1``: 127.0.0.1 is one of its default trusted custom hosts).

Every proxy is one process pinned to CPU 1 — exactly like relaygate (one process pinned to
CPU 1, full accounting, flusher on CPU 0); the proxies not being measured are stopped
(SIGSTOP) meanwhile, as all share CPU 1. A peer that cannot be installed (no npm, no
network) or started is skipped with the reason printed; relaygate is measured anyway.

Env: BENCH_DURATION (10), BENCH_CONNS (64), BENCH_REPS (2).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common as c

DURATION = float(os.environ.get("BENCH_DURATION", "10"))
CONNS = int(os.environ.get("BENCH_CONNS", "64"))
REPS = int(os.environ.get("BENCH_REPS", "2"))
VENV = c.BENCH / ".peers" / "litellm"
PORTKEY_DIR = c.BENCH / ".peers" / "portkey"
PORTKEY_PKG = "@portkey-ai/gateway"
MASTER_KEY = "sk-litellm-bench-master"
PATH = "/v1/chat/completions"


def install_litellm() -> tuple[Path | None, str]:
    """(path of the litellm executable, or None; explanation)."""
    exe = VENV / "bin" / "litellm"
    if exe.exists():
        return exe, "already installed"
    try:
        if not (VENV / "bin" / "python").exists():
            subprocess.run(
                [sys.executable, "-m", "venv", str(VENV)],
                check=True,
                capture_output=True,
                text=True,
            )
        c.log("installing litellm[proxy] into bench/.peers/litellm (a minute or two)")
        proc = subprocess.run(
            [str(VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
            capture_output=True,
            text=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        return None, f"could not create the venv: {exc}"
    if proc.returncode != 0 or not exe.exists():
        lines = [
            ln
            for ln in (proc.stderr + proc.stdout).splitlines()
            if ln.strip() and "WARNING" not in ln
        ]
        return None, "pip install 'litellm[proxy]' failed: " + " | ".join(lines[-5:])
    return exe, "installed"


def litellm_version() -> str:
    out = subprocess.run(
        [str(VENV / "bin" / "pip"), "show", "litellm"], capture_output=True, text=True
    ).stdout
    return next(
        (ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Version:")), "?"
    )


def install_portkey() -> tuple[Path | None, str]:
    """(path of the gateway's start-server.js, or None; explanation)."""
    server = PORTKEY_DIR / "node_modules" / PORTKEY_PKG / "build" / "start-server.js"
    if server.exists():
        return server, "already installed"
    npm, node = shutil.which("npm"), shutil.which("node")
    if npm is None or node is None:
        return None, "npm/node not found on PATH: install Node.js (20+) to measure Portkey"
    PORTKEY_DIR.mkdir(parents=True, exist_ok=True)
    c.log(f"installing {PORTKEY_PKG} into bench/.peers/portkey (npm, a minute)")
    try:
        proc = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--prefix", str(PORTKEY_DIR), PORTKEY_PKG],
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"npm install {PORTKEY_PKG} failed: {exc}"
    if proc.returncode != 0 or not server.exists():
        lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        return None, f"npm install {PORTKEY_PKG} failed: " + " | ".join(lines[-5:])
    return server, "installed"


# Portkey 1.15.2 answers every stream with HTTP 500 on Node ("TypeError: immutable" in
# ResponseService.updateHeaders: it appends its x-portkey-* headers to a Response whose
# headers are immutable; Portkey-AI/gateway issues #1389 and #1550, fix proposed in #1551).
# The bench runs a copy with that fix: when the append fails, the same response is re-made
# with mutable headers and the headers appended to it. Nothing changes on a path that works.
PORTKEY_HOOK = "updateHeaders(e,t,a){"
PORTKEY_FIX = (
    "updateHeaders(e,t,a){try{return this.rgBenchUpdate(e,t,a)}catch(_){return "
    "this.rgBenchUpdate(new Response(e.body,{status:e.status,statusText:e.statusText,"
    "headers:new Headers(e.headers)}),t,a)}}rgBenchUpdate(e,t,a){"
)


def portkey_with_stream_fix(server: Path) -> tuple[Path, bool]:
    """(the server to start, whether the stream fix is in it): a patched copy beside the
    original when the hook is found exactly once, else the original as installed."""
    text = server.read_text()
    if text.count(PORTKEY_HOOK) != 1:
        return server, False
    fixed = server.with_name("start-server.bench-fix.js")
    fixed.write_text(text.replace(PORTKEY_HOOK, PORTKEY_FIX))
    return fixed, True


def portkey_version() -> str:
    try:
        meta = json.loads((PORTKEY_DIR / "node_modules" / PORTKEY_PKG / "package.json").read_text())
        return str(meta.get("version", "?"))
    except (OSError, ValueError):
        return "?"


def portkey_headers(mock: str) -> dict[str, dict[str, str]]:
    """Per mode, the headers that route a Portkey request to the mock's matching path."""
    base = {"x-portkey-provider": "openai"}
    return {
        "non-stream": {**base, "x-portkey-custom-host": f"{mock}/v1"},
        "stream": {**base, "x-portkey-custom-host": f"{mock}/stream/v1"},
    }


def probe(url: str, body: str, key: str, headers: dict[str, str]) -> str | None:
    """One request through a peer: None when it answers 200, else what it said (a peer
    that fails a mode is reported, not timed)."""
    req = urllib.request.Request(
        url,
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {key}", **headers},
    )
    try:
        with urllib.request.urlopen(req, timeout=15) as resp:
            resp.read()
            return None if resp.status == 200 else f"HTTP {resp.status}"
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read()[:200].decode(errors='replace')}"
    except OSError as exc:
        return f"no answer: {exc}"


def litellm_config(mock: str) -> Path:
    cfg = c.RESULTS / "litellm_config.yaml"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(
        f"""model_list:
  - model_name: {c.NS_MODEL}
    litellm_params:
      model: openai/{c.NS_MODEL}
      api_base: {mock}/v1
      api_key: sk-upstream
  - model_name: {c.STREAM_MODEL}
    litellm_params:
      model: openai/{c.STREAM_MODEL}
      api_base: {mock}/stream/v1
      api_key: sk-upstream
litellm_settings:
  telemetry: false
  drop_params: true
  set_verbose: false
general_settings:
  master_key: {MASTER_KEY}
"""
    )
    return cfg


@contextlib.contextmanager
def paused(procs: list[c.Proc]) -> Iterator[None]:
    """SIGSTOP these processes (and their children) for the duration, SIGCONT after."""
    pids = [pid for p in procs for pid in c.process_tree(p.pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


Target = tuple[str, c.Proc, list[str], dict[str, dict[str, str]]]


def main() -> None:
    c.ensure_wrk()
    exe, why = install_litellm()
    pk_server, pk_why = install_portkey()
    bodies = {
        "non-stream": c.body_for(c.NS_MODEL, False),
        "stream": c.body_for(c.STREAM_MODEL, True),
    }
    results: dict[str, Any] = {"litellm": {"status": why}, "portkey": {"status": pk_why}}
    procs: list[c.Proc] = []
    port = c.free_port()
    with c.nginx_mock(port, cpus="0") as mock, c.bench_space():
        try:
            seed = c.seed_cli(mock, 8)
            procs.append(
                c.Proc(
                    "peers-flusher", c.pinned("0", [c.RELAYGATE, "worker"]), c.relay_env()
                ).start()
            )
            rport = c.free_port()
            relay = c.Proc(
                "peers-relay",
                c.pinned("1", [c.RELAYGATE, "serve", "--port", str(rport)]),
                c.relay_env(),
            ).start()
            procs.append(relay)
            c.wait_http(f"http://127.0.0.1:{rport}/healthz", relay)
            no_headers: dict[str, dict[str, str]] = {"non-stream": {}, "stream": {}}
            targets: dict[str, Target] = {
                "relaygate": (f"http://127.0.0.1:{rport}{PATH}", relay, seed.keys, no_headers)
            }
            if pk_server is not None:
                pport = c.free_port()
                server, fixed = portkey_with_stream_fix(pk_server)
                results["portkey"]["stream_fix"] = fixed
                pk = c.Proc(
                    "peers-portkey",
                    c.pinned("1", ["node", str(server), f"--port={pport}", "--headless"]),
                    dict(os.environ, NODE_ENV="production"),
                ).start()
                procs.append(pk)
                try:
                    c.wait_http(f"http://127.0.0.1:{pport}/", pk, timeout=60)
                    targets["portkey"] = (
                        f"http://127.0.0.1:{pport}{PATH}",
                        pk,
                        ["sk-upstream"],
                        portkey_headers(mock),
                    )
                    results["portkey"]["version"] = portkey_version()
                except (RuntimeError, TimeoutError) as exc:
                    results["portkey"]["status"] = f"installed but did not start: {str(exc)[-600:]}"
            if exe is not None:
                lport = c.free_port()
                env = dict(
                    os.environ,
                    LITELLM_LOCAL_MODEL_COST_MAP="True",
                    LITELLM_LOG="ERROR",
                    LITELLM_TELEMETRY="False",
                    DISABLE_ADMIN_UI="True",
                )
                env.pop("DATABASE_URL", None)
                lite = c.Proc(
                    "peers-litellm",
                    c.pinned(
                        "1",
                        [
                            str(exe),
                            "--config",
                            str(litellm_config(mock)),
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(lport),
                            "--num_workers",
                            "1",
                        ],
                    ),
                    env,
                ).start()
                procs.append(lite)
                try:
                    c.wait_http(f"http://127.0.0.1:{lport}/health/liveliness", lite, timeout=180)
                    targets["litellm"] = (
                        f"http://127.0.0.1:{lport}{PATH}",
                        lite,
                        [MASTER_KEY],
                        no_headers,
                    )
                    results["litellm"]["version"] = litellm_version()
                except (RuntimeError, TimeoutError) as exc:
                    results["litellm"]["status"] = f"installed but did not start: {str(exc)[-600:]}"
            for mode in ("non-stream", "stream"):
                for name, (url, proc, keys, headers) in targets.items():
                    others = [t[1] for n, t in targets.items() if n != name]
                    # All proxies are pinned to CPU 1: the idle ones are stopped (SIGSTOP)
                    # while one is measured, so their background loops cannot take that CPU.
                    with paused(others):
                        failure = probe(url, bodies[mode], keys[0], headers[mode])
                        if failure is not None:
                            c.log(f"{name} {mode}: not measured, a probe request got {failure}")
                            results.setdefault(name, {})[f"{mode} failure"] = failure
                            continue
                        warm = c.run_wrk(
                            url,
                            bodies[mode],
                            keys,
                            connections=CONNS,
                            duration=3,
                            headers=headers[mode],
                        )
                        if warm.errors:
                            c.log(f"WARNING: warm-up {name} {mode}: {warm.errors} errors")
                        runs = []
                        for _ in range(REPS):
                            pids = c.process_tree(proc.pid)
                            runs.append(
                                c.run_wrk(
                                    url,
                                    bodies[mode],
                                    keys,
                                    connections=CONNS,
                                    duration=DURATION,
                                    cpu_pids=pids,
                                    headers=headers[mode],
                                )
                            )
                            c.log(
                                f"{name} {mode}: {runs[-1].rps:,.0f} req/s errors {runs[-1].errors}"
                            )
                    results.setdefault(name, {})[mode] = {
                        "rps": c.median([r.rps for r in runs]),
                        "p50_ms": c.median([r.p50_ms for r in runs]),
                        "p99_ms": c.median([r.p99_ms for r in runs]),
                        "cpu_us": c.median([r.cpu_us_per_req for r in runs]),
                        "errors": sum(r.errors for r in runs),
                    }
        finally:
            for p in reversed(procs):
                p.stop()
    print_table(results)
    path = c.write_json("peers", results)
    print(f"JSON: {path.relative_to(c.ROOT)}")


PEERS = {"portkey": ("Portkey gateway", 4.0), "litellm": ("LiteLLM proxy", 50.0)}


def print_table(res: dict[str, Any]) -> None:
    print(
        f"\nrelaygate vs peers — wrk -c{CONNS}, {DURATION:g} s runs, median of {REPS}, "
        "each one process pinned to CPU 1 (the others SIGSTOPped), nginx mock"
    )
    print(
        "\n| proxy | mode | req/s | p50 ms | p99 ms | CPU µs/req "
        "| relaygate / this (req/s) | per core (CPU µs) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for mode in ("non-stream", "stream"):
        ours = res.get("relaygate", {}).get(mode)
        for name in ("relaygate", *PEERS):
            row = res.get(name, {}).get(mode)
            label = name
            if name in PEERS:
                label = f"{PEERS[name][0]} {res[name].get('version', '')}".strip()
                if res[name].get("stream_fix"):
                    label += " (+ stream fix)"
            if not row or "rps" not in row:
                failure = res.get(name, {}).get(f"{mode} failure")
                if failure:
                    print(f"| {label} | {mode} | fails: {failure[:120]} | | | | | |")
                continue
            ratio = f"{ours['rps'] / row['rps']:.1f}x" if ours and row["rps"] else "-"
            core = f"{per_core(ours, row):.1f}x" if ours else "-"
            err = f" ({row['errors']} errors)" if row["errors"] else ""
            print(
                f"| {label} | {mode} | {row['rps']:,.0f}{err} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
                f"| {c.fmt(row['cpu_us'])} | {ratio} | {core} |"
            )
    for name, (label, bar) in PEERS.items():
        peer = res.get(name, {})
        modes = [m for m in ("non-stream", "stream") if m in peer]
        if not modes:
            print(f"\n{label} not measured: {peer.get('status')}")
            continue
        ok = all(per_core(res["relaygate"][m], peer[m]) >= bar for m in modes)
        print(
            f"\ntarget relaygate >= {bar:g}x {label} per core (CPU µs per request; "
            f"{', '.join(modes)}): {'met' if ok else 'MISSED'}"
        )


def per_core(ours: dict[str, Any], theirs: dict[str, Any]) -> float:
    """How many of our requests one core serves per request of theirs: the ratio of CPU µs
    per request (what "per core" means on a shared machine, where a pinned proxy does not
    get its whole core); the req/s ratio when CPU was not sampled."""
    if ours.get("cpu_us") and theirs.get("cpu_us"):
        return float(theirs["cpu_us"] / ours["cpu_us"])
    return float(ours["rps"] / theirs["rps"]) if theirs.get("rps") else 0.0


if __name__ == "__main__":
    t0 = time.time()
    main()
    c.log(f"done in {time.time() - t0:.0f} s")
