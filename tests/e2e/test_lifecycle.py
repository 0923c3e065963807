"""Process lifecycle: ``serve --workers 2`` replaces a worker that died while the other keeps
serving; ``/readyz`` is 503 while Redis is unreachable and while draining, when ``/healthz``
stays 200 (liveness only)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from relaygate.config import Settings

from ..conftest import free_port
from ..integration.privredis import PrivateRedis
from .books import assert_books_balance, seed, wait_drained
from .load import drive
from .procs import Proc, Stack

pytestmark = pytest.mark.e2e

WAIT = 60.0  # a bound on waiting for the processes, never an assertion about speed


def children_of(pid: int) -> set[int]:
    """Live child processes of ``pid``, from /proc (field 4 of stat is the parent)."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry))
    return found


async def until(check: Callable[[], Awaitable[bool]], what: str, proc: Proc) -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"never {what}: {proc.log.read_text()[-3000:]}")


async def get(url: str) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.json()


async def test_killed_worker_is_replaced_while_the_other_serves(env, stack):
    mock = await stack.mock(free_port())
    seeded = await seed(env, mock.url)
    stack.worker("w")
    relay = await stack.relay(free_port(), RELAYGATE_WORKERS="2")
    assert relay.popen is not None
    supervisor = relay.popen.pid

    async def two_workers() -> bool:
        return len(children_of(supervisor)) == 2

    await until(two_workers, "two worker processes", relay)
    before = children_of(supervisor)
    victim = min(before)
    os.kill(victim, signal.SIGKILL)

    async def victim_gone() -> bool:  # its listening socket closes as it exits
        return victim not in children_of(supervisor)

    await until(victim_gone, "the killed worker gone", relay)
    # The survivor serves everything while the victim is being replaced.
    during = await drive(lambda: relay.url, seeded.keys, 150, 8)
    assert during.ok == 150, during

    async def replaced() -> bool:
        now = children_of(supervisor)
        return len(now) == 2 and victim not in now

    await until(replaced, "a replacement worker", relay)
    replacement = (children_of(supervisor) - before).pop()
    assert "starting a replacement" in relay.log.read_text()
    # Both serve again (SO_REUSEPORT spreads new connections over both), and the books of
    # every answered request balance.
    after = await drive(lambda: relay.url, seeded.keys, 150, 8)
    assert after.ok == 150, after
    assert replacement in children_of(supervisor)
    await wait_drained(env)
    await assert_books_balance(env, seeded, during.ok_rids + after.ok_rids)


async def test_readyz_follows_redis_and_healthz_does_not(settings: Settings, tmp_path: Path):
    private = PrivateRedis()
    private.start()
    stack = Stack(settings.replace(redis_url=private.url), tmp_path)
    try:
        relay = await stack.relay(free_port())
        assert (await get(f"{relay.url}/readyz"))[0] == 200
        private.stop()

        async def unready() -> bool:
            return (await get(f"{relay.url}/readyz"))[0] == 503

        await until(unready, "503 from /readyz with Redis down", relay)
        status, body = await get(f"{relay.url}/readyz")
        assert status == 503 and body["checks"]["redis"].startswith("error")
        assert (await get(f"{relay.url}/healthz"))[0] == 200  # alive: no restart wanted
        private.start()

        async def ready() -> bool:
            return (await get(f"{relay.url}/readyz"))[0] == 200

        await until(ready, "200 from /readyz once Redis is back", relay)
    finally:
        stack.close()
        private.close()


async def test_readyz_is_503_while_draining(env, stack):
    relay = await stack.relay(free_port(), RELAYGATE_DRAIN_DELAY="300")
    assert relay.popen is not None
    status, body = await get(f"{relay.url}/readyz")
    assert status == 200 and body["checks"]["draining"] == "no"
    relay.popen.send_signal(signal.SIGTERM)

    async def draining() -> bool:
        return (await get(f"{relay.url}/readyz"))[0] == 503

    await until(draining, "503 from /readyz after SIGTERM", relay)
    status, body = await get(f"{relay.url}/readyz")
    assert body["checks"] == {**body["checks"], "draining": "yes", "redis": "ok"}
    assert (await get(f"{relay.url}/healthz"))[0] == 200  # still serving while not ready
    relay.popen.send_signal(signal.SIGTERM)  # a second signal ends the delay: drain and exit
    assert await asyncio.to_thread(relay.popen.wait, WAIT) == 0
