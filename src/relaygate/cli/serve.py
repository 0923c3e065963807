"""``relaygate serve``: one process, or a fork supervisor over ``--workers`` processes that
share the port (SO_REUSEPORT) and receive its stop signals."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import shutil
import signal
import sys
import tempfile
from typing import Any, NoReturn

from relaygate.config import Settings
from relaygate.serving import STOP_SIGNALS, Fatal, run, serve_app

log = logging.getLogger("relaygate")


def _child(settings: Settings) -> NoReturn:
    """A forked worker's whole life; never returns into the supervisor's code."""
    try:
        run(serve_app(settings))
        os._exit(0)
    except Fatal as exc:
        print(f"relaygate: {exc}", file=sys.stderr)
        os._exit(1)
    except BaseException:
        log.exception("worker process crashed")
        os._exit(1)


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    if settings.workers <= 1:
        run(serve_app(settings))
        return
    own_dir = None
    if not settings.metrics_dir:  # the processes share their metrics here (relaygate.metrics)
        own_dir = tempfile.mkdtemp(prefix="relaygate-metrics-")
        settings = settings.replace(metrics_dir=own_dir)
    children: list[int] = []
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # until each side has its handler
    for _ in range(settings.workers):
        pid = os.fork()
        if pid == 0:
            _child(settings.replace(with_worker=settings.with_worker and not children))
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    if own_dir is not None:
        shutil.rmtree(own_dir, ignore_errors=True)
    sys.exit(status)
