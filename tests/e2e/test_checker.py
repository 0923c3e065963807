"""Issue 9's history checker on real processes: one fault cycle (~25 s) in ``make test``;
``make soak`` runs it for RELAYGATE_SOAK_SECONDS (600) with the 5 s stalls and a 60 s
Redis outage. The checker and the invariants it asserts are in checker.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .checker import run_checker, soak_seconds
from .procs import Stack


async def test_history_checker_books_balance_under_every_fault(
    env: Any, stack: Stack, tmp_path: Path
) -> None:
    await run_checker(env, stack, tmp_path, soak_seconds())
