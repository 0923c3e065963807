"""``relaygate serve``: one process, or a fork supervisor over ``--workers`` processes that
share the port (SO_REUSEPORT), receive its stop signals, and are restarted when they die.

Restart policy (docs/deploy.md "Lifecycle"): a worker that dies while the supervisor is not
stopping (crash, OOM kill, ``kill -9``) is forked again, after a back-off that doubles (1 s
to 30 s) while replacements keep dying before they serve and resets once one serves. A
worker reports "serving" through a pipe once its socket listens. If no worker has ever
served and one exits with a start-up error (Redis down, port taken: it printed one line),
the supervisor stops the others and exits 1 instead of retrying forever.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, NoReturn

from relaygate.config import Settings
from relaygate.serving import STOP_SIGNALS, Fatal, describe_start_error, run, serve_app

log = logging.getLogger("relaygate")

EXIT_CANNOT_START = 3  # a worker's Fatal: it printed why; restarting at once would not help
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0


def _child(settings: Settings, ready_fd: int | None = None) -> NoReturn:
    """A forked worker's whole life; never returns into the supervisor's code."""

    async def serving() -> None:
        if ready_fd is not None:
            os.write(ready_fd, f"{os.getpid()}\n".encode())
            os.close(ready_fd)

    try:
        run(serve_app(settings, serving))
        os._exit(0)
    except Fatal as exc:
        print(f"relaygate: {exc}", file=sys.stderr)
        os._exit(EXIT_CANNOT_START)
    except BaseException:
        log.exception("worker process crashed")
        os._exit(1)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    if settings.workers <= 1:
        run(serve_app(settings))
        return
    run(preflight(settings))
    own_dir = None
    if not settings.metrics_dir:  # the processes share their metrics here (relaygate.metrics)
        own_dir = tempfile.mkdtemp(prefix="relaygate-metrics-")
        settings = settings.replace(metrics_dir=own_dir)
    try:
        status = Supervisor(settings).run()
    finally:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
    sys.exit(status)


async def preflight(settings: Settings) -> None:
    """Redis and PostgreSQL answer, checked once before forking: N workers failing alike
    would print the same line N times."""
    from relaygate.app import check_eviction_policy, redis_client
    from relaygate.store.db import create_pool

    redis = redis_client(settings)
    try:
        await redis.ping()
        await check_eviction_policy(redis, settings.allow_unsafe_redis_eviction)
        pool = await create_pool(settings.database_url, max_size=1)
        await pool.close()
    except Exception as exc:
        raise Fatal(describe_start_error(exc, settings)) from None
    finally:
        await redis.aclose()


@dataclass
class Supervisor:
    """Forks ``settings.workers`` relay processes and keeps that many alive until stopped."""

    settings: Settings
    slots: dict[int, int] = field(default_factory=dict)  # pid -> slot (slot 0 may flush)
    served: set[int] = field(default_factory=set)  # pids that reported serving
    ever_served: bool = False
    stopping: bool = False
    backoff: float = BACKOFF_FIRST

    def run(self) -> int:
        self.ready_r, self.ready_w = os.pipe()
        os.set_blocking(self.ready_r, False)
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # until each side has its handler
        for slot in range(self.settings.workers):
            self._fork(slot)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        status = 0
        while self.slots:
            pid, code = os.wait()
            slot = self.slots.pop(pid, -1)
            if slot < 0:  # not one of ours
                continue
            exit_code = os.waitstatus_to_exitcode(code)
            self._read_ready()
            had_served = pid in self.served
            self.served.discard(pid)
            if self.stopping:
                status = status or (1 if exit_code else 0)
                continue
            if exit_code == EXIT_CANNOT_START and not self.ever_served:
                self._stop(signal.SIGTERM, None)  # it printed why, in one line
                status = 1
                continue
            log.warning(
                "worker process %d exited (%s); starting a replacement", pid, _describe(exit_code)
            )
            self.backoff = BACKOFF_FIRST if had_served else min(self.backoff * 2, BACKOFF_MAX)
            if not had_served:
                self._sleep(self.backoff)
            if not self.stopping:
                self._fork(slot)
        return status

    def _fork(self, slot: int) -> None:
        settings = self.settings.replace(with_worker=self.settings.with_worker and slot == 0)
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        pid = os.fork()
        if pid == 0:
            os.close(self.ready_r)
            _child(settings, self.ready_w)
        self.slots[pid] = slot
        if self.stopping:  # a stop arrived while forking: pass it on
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    def _read_ready(self) -> None:
        """Note which workers said they serve (non-blocking: the pipe may be empty)."""
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(self.ready_r, 4096):
                for line in chunk.split():
                    self.served.add(int(line))
                    self.ever_served = True

    def _sleep(self, seconds: float) -> None:
        """Sleep, but wake within a fraction of a second of a stop signal."""
        end = time.monotonic() + seconds
        while not self.stopping and (left := end - time.monotonic()) > 0:
            time.sleep(min(left, 0.2))

    def _stop(self, signum: int, _frame: Any) -> None:
        self.stopping = True
        for child in list(self.slots):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)


def _describe(exit_code: int) -> str:
    if exit_code < 0:
        return f"killed by {signal.Signals(-exit_code).name}"
    return f"status {exit_code}"
