"""Single flight: concurrent callers asking for the same key share one run of the work.

Why a helper and not a shared future per call site: the work must not belong to any one
caller. It runs in its own task (``ensure_future``) and every caller, the first included,
awaits it through ``asyncio.shield``. So a caller that is cancelled (a client hung up, a
timeout) stops waiting without cancelling the work or the other callers, an exception
reaches every caller, and the entry is dropped when the work ends, so the next call after
a failure starts afresh.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self) -> None:
        self._running: dict[K, asyncio.Future[V]] = {}

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, key: object) -> bool:
        return key in self._running

    async def run(self, key: K, start: Callable[[], Awaitable[V]]) -> V:
        """The result of ``start()``, run once for all concurrent callers of ``key``."""
        running = self._running.get(key)
        if running is None:
            running = asyncio.ensure_future(start())
            self._running[key] = running
            running.add_done_callback(lambda done: self._finished(key, done))
        return await asyncio.shield(running)

    def _finished(self, key: K, done: asyncio.Future[V]) -> None:
        if self._running.get(key) is done:
            del self._running[key]
        if not done.cancelled():
            done.exception()  # retrieved: if every caller gave up, asyncio must not warn
