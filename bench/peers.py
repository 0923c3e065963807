"""`make bench-peers`: relaygate vs LiteLLM's proxy, same nginx mock, same wrk load.

LiteLLM is installed into its own venv, bench/.peers/litellm (git-ignored), with
``pip install 'litellm[proxy]'``; it runs offline with LITELLM_LOCAL_MODEL_COST_MAP=True,
no database, a master key only, one worker pinned to CPU 1 — exactly like relaygate (one
process pinned to CPU 1, full accounting, flusher on CPU 0); the proxy not being measured
is stopped (SIGSTOP) meanwhile, as both share CPU 1. If LiteLLM cannot be installed or
started, this prints exactly why and still measures relaygate.

Env: BENCH_DURATION (10), BENCH_CONNS (64), BENCH_REPS (2).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common as c

DURATION = float(os.environ.get("BENCH_DURATION", "10"))
CONNS = int(os.environ.get("BENCH_CONNS", "64"))
REPS = int(os.environ.get("BENCH_REPS", "2"))
VENV = c.BENCH / ".peers" / "litellm"
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


def main() -> None:
    c.ensure_wrk()
    exe, why = install_litellm()
    bodies = {
        "non-stream": c.body_for(c.NS_MODEL, False),
        "stream": c.body_for(c.STREAM_MODEL, True),
    }
    results: dict[str, Any] = {"litellm": {"status": why}}
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
            targets: dict[str, tuple[str, c.Proc, list[str]]] = {
                "relaygate": (f"http://127.0.0.1:{rport}{PATH}", relay, seed.keys)
            }
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
                    targets["litellm"] = (f"http://127.0.0.1:{lport}{PATH}", lite, [MASTER_KEY])
                    results["litellm"]["version"] = litellm_version()
                except (RuntimeError, TimeoutError) as exc:
                    results["litellm"]["status"] = f"installed but did not start: {str(exc)[-600:]}"
            for name, (url, _proc, keys) in targets.items():  # warm-up
                r = c.run_wrk(url, bodies["non-stream"], keys, connections=CONNS, duration=3)
                if r.errors:
                    c.log(f"WARNING: warm-up {name}: {r.errors} errors of {r.requests}")
            for mode in ("non-stream", "stream"):
                for name, (url, proc, keys) in targets.items():
                    runs = []
                    # Both proxies are pinned to CPU 1: the idle one is stopped (SIGSTOP) while
                    # the other is measured, so its background loops cannot take that CPU.
                    others = [p for n, (_, p, _) in targets.items() if n != name]
                    with paused(others):
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


def print_table(res: dict[str, Any]) -> None:
    lite = res.get("litellm", {})
    print(
        f"\nrelaygate vs LiteLLM proxy — wrk -c{CONNS}, {DURATION:g} s runs, median of {REPS}, "
        "each one process pinned to CPU 1, nginx mock"
    )
    print("\n| proxy | mode | req/s | p50 ms | p99 ms | CPU µs/req | relaygate / this |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for mode in ("non-stream", "stream"):
        ours = res.get("relaygate", {}).get(mode)
        for name in ("relaygate", "litellm"):
            row = res.get(name, {}).get(mode) if isinstance(res.get(name), dict) else None
            if not row or "rps" not in row:
                continue
            label = name if name == "relaygate" else f"LiteLLM proxy {lite.get('version', '')}"
            ratio = f"{ours['rps'] / row['rps']:.1f}x" if ours and row["rps"] else "-"
            err = f" ({row['errors']} errors)" if row["errors"] else ""
            print(
                f"| {label} | {mode} | {row['rps']:,.0f}{err} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} "
                f"| {c.fmt(row['cpu_us'])} | {ratio} |"
            )
    if "non-stream" not in lite:
        print(f"\nLiteLLM not measured: {lite.get('status')}")
    else:
        ok = all(
            res["relaygate"][m]["rps"] >= 50 * lite[m]["rps"]
            for m in ("non-stream", "stream")
            if m in lite
        )
        print(f"\ntarget relaygate >= 50x LiteLLM req/s: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    t0 = time.time()
    main()
    c.log(f"done in {time.time() - t0:.0f} s")
