"""scrypt runs off the event loop, so the relay keeps serving while a password is hashed
(item 10)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from typing import Any

import pytest

from relaygate import admin


async def _ticks_during(call: Any) -> tuple[int, float]:
    """(ticks, longest gap in s) of a 2 ms ticker while ``call`` is awaited."""
    ticks = 0
    gap = 0.0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks, gap
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.002)
            now = time.perf_counter()
            ticks, gap = ticks + 1, max(gap, now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    ticks, gap = 0, 0.0
    try:
        await call()
    finally:
        stop.set()
        await task
    return ticks, gap


@pytest.mark.parametrize("which", ["hash", "verify"])
async def test_scrypt_runs_in_a_worker_thread_and_the_loop_keeps_ticking(
    monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    stored = await admin.hash_password("correct horse")
    threads: list[int] = []
    real = hashlib.scrypt

    def recording_scrypt(*args: Any, **kwargs: Any) -> bytes:
        threads.append(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", recording_scrypt)

    async def call() -> None:
        if which == "hash":
            await admin.hash_password("correct horse")
        else:
            assert await admin.verify_password("correct horse", stored)

    ticks, gap = await _ticks_during(call)
    assert threads and threading.get_ident() not in threads  # the decisive check
    # ~60 ms of scrypt: inline it would allow zero ticks and one gap as long as the call.
    # The bounds are loose for a busy 2-core box.
    assert ticks >= 3, (ticks, gap)


async def test_verify_password_accepts_the_right_one_only() -> None:
    stored = await admin.hash_password("s3cret-pass")
    assert stored.startswith("scrypt$")
    assert await admin.verify_password("s3cret-pass", stored)
    assert not await admin.verify_password("other-pass", stored)
    assert not await admin.verify_password("s3cret-pass", "scrypt$zz$zz")
    assert not await admin.verify_password("s3cret-pass", "")
