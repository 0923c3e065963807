"""The background work one process owns: tasks it spawned and replies nobody awaits.

Shutdown (``drain``) waits for both, bounded, so a settle handed off by a finished handler
is not lost when the process stops; ``closing`` is what every background loop watches.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

log = logging.getLogger(__name__)


class Background:
    def __init__(self) -> None:
        self.closing = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watched: set[asyncio.Future[Any]] = set()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` in the background, held until done; ``drain`` waits for it."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._forget_task)

    def _forget_task(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed: %s", task.exception())

    def watch(self, reply: asyncio.Future[Any], on_failure: Callable[[], None]) -> None:
        """Keep an eye on a reply nobody awaits: if it fails, call ``on_failure``.
        ``drain`` waits for watched replies too."""
        self._watched.add(reply)
        reply.add_done_callback(lambda fut: self._reply_done(fut, on_failure))

    def _reply_done(self, reply: asyncio.Future[Any], on_failure: Callable[[], None]) -> None:
        self._watched.discard(reply)
        if reply.cancelled() or reply.exception() is not None:
            on_failure()

    async def drain(self, within: float) -> None:
        """Wait (bounded) for background work: watched replies, then the retries and
        settles they and cancellations left running."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        if self._watched:
            await asyncio.wait(list(self._watched), timeout=within)
        left = max(0.0, deadline - loop.time())
        if self._tasks:
            _, stuck = await asyncio.wait(list(self._tasks), timeout=left)
            for task in stuck:
                task.cancel()

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake at once when closing. Background loops check ``closing`` rather
        than rely on cancellation alone: redis-py can swallow a CancelledError that lands
        mid-command, which would leave a cancelled loop running forever."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closing.wait(), seconds)
