"""What every dev-service starter shares: the error type, probe results, timeouts, processes.

Errors are raised as :class:`DevStackError` whose message is one human-readable line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import fcntl
import os
import pathlib
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

Log = Callable[[str], None]
T = TypeVar("T")

PROBE_TIMEOUT = 2.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
# After apt-get install: how long the package's own service may take to answer.
INSTALL_SETTLE_TIMEOUT = 5.0


def strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


class DevStackError(RuntimeError):
    """A dev service could not be reused or started; the message is one actionable line."""


# --------------------------------------------------------------------------- probing


class Probe(enum.Enum):
    """What answers on a service address."""

    USABLE = "usable"  # the right kind of server, and it accepts our credentials
    BUSY = "busy"  # the right kind of server, still loading/starting
    FOREIGN = "foreign"  # something answers that we cannot use
    ABSENT = "absent"  # nothing listens


@dataclass(frozen=True, slots=True)
class ProbeResult:
    state: Probe
    detail: str = ""


def connect(host: str, port: int, timeout: float) -> socket.socket | ProbeResult:
    try:
        return socket.create_connection((strip_brackets(host), port), timeout=timeout)
    except TimeoutError:
        return ProbeResult(Probe.FOREIGN, "connect timed out")
    except OSError as exc:
        return ProbeResult(Probe.ABSENT, exc.strerror or str(exc))


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, even when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def wait_usable(
    probe: Callable[[], ProbeResult],
    timeout: float,
    retry: tuple[Probe, ...] = (Probe.BUSY,),
) -> ProbeResult:
    """Poll while the probe's state is in ``retry`` (a server still starting), at most
    ``timeout`` seconds; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        res = probe()
        if res.state not in retry or time.monotonic() >= deadline:
            return res
        time.sleep(0.2)


STARTING = (Probe.BUSY, Probe.ABSENT)


# --------------------------------------------------------------------------- processes


def pid_running(pid: int, name_hint: str) -> bool:
    """Whether ``pid`` is alive and (where /proc exists) is a ``name_hint`` process.

    The name check protects against pid reuse: after a reboot or in a container, the pid in an
    old pid file may belong to something unrelated that we must never signal. Zombies (empty
    cmdline) count as gone.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = pathlib.Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
            cmdline = (proc / "cmdline").read_bytes()
            comm = (proc / "comm").read_text().strip()
        except (OSError, IndexError):
            return False
        if state in ("Z", "X"):
            return False
        return name_hint.encode() in cmdline or comm == name_hint[:15]
    return True


def read_int(path: pathlib.Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_pid_gone(pid: int, name_hint: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_running(pid, name_hint):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def run_command(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = START_TIMEOUT,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> tuple[int, str]:
    """Run a command, returning (exit code, combined output).

    Output goes to a temporary file rather than a pipe: daemons we start (redis-server,
    postgres via pg_ctl) could otherwise inherit the pipe and make us wait for them to exit.
    """
    with tempfile.TemporaryFile(mode="w+") as out:
        try:
            proc = subprocess.run(
                [os.fspath(c) for c in cmd],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env=env,
                cwd=cwd,
                check=False,
            )
        except FileNotFoundError as exc:
            return 127, str(exc)
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {timeout:.0f}s"
        out.seek(0)
        return proc.returncode, out.read()


def last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def tail(path: pathlib.Path) -> str:
    try:
        return last_line(path.read_text(errors="replace"))
    except OSError:
        return "(no log)"


def show(path: pathlib.Path) -> str:
    """A path as the developer would type it: relative to the cwd when inside it."""
    try:
        return str(path.resolve().relative_to(pathlib.Path.cwd().resolve()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def locked(data_dir: pathlib.Path, name: str) -> Iterator[None]:
    """Serialise ``ensure_*`` between processes (``make dev`` and ``make test`` at once)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / f".{name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
