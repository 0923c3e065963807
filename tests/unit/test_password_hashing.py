"""scrypt runs off the event loop, so the relay keeps serving while a password is hashed
(item 10)."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from typing import Any

import pytest

from relaygate import admin


@pytest.mark.parametrize("which", ["hash", "verify"])
async def test_scrypt_runs_in_a_worker_thread_and_the_loop_keeps_running(
    monkeypatch: pytest.MonkeyPatch, which: str
) -> None:
    """Deterministic, no clock: scrypt waits until a task on the event loop has run. Inline
    on the loop it could never see that task run (it would wait out its 10 s and record a
    miss); in a worker thread the loop runs the task at once."""
    stored = await admin.hash_password("correct horse")
    threads: list[int] = []
    loop_ran = threading.Event()
    missed: list[bool] = []
    real = hashlib.scrypt

    def recording_scrypt(*args: Any, **kwargs: Any) -> bytes:
        threads.append(threading.get_ident())
        missed.append(not loop_ran.wait(10))
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", recording_scrypt)

    async def mark_loop_ran() -> None:
        while not threads:  # set only once scrypt has started
            await asyncio.sleep(0.001)
        loop_ran.set()

    async def call() -> None:
        if which == "hash":
            await admin.hash_password("correct horse")
        else:
            assert await admin.verify_password("correct horse", stored)

    marker = asyncio.create_task(mark_loop_ran())
    try:
        await call()
    finally:
        loop_ran.set()
        await marker
    assert threads and threading.get_ident() not in threads
    assert missed == [False], "the event loop did not run while scrypt was hashing"


async def test_verify_password_accepts_the_right_one_only() -> None:
    stored = await admin.hash_password("s3cret-pass")
    assert stored.startswith("scrypt$")
    assert await admin.verify_password("s3cret-pass", stored)
    assert not await admin.verify_password("other-pass", stored)
    assert not await admin.verify_password("s3cret-pass", "scrypt$zz$zz")
    assert not await admin.verify_password("s3cret-pass", "")
