"""Soak: minutes of mixed load while relays and flushers are SIGKILLed and restarted at
random; at the end every successful request has exactly one log row and the books balance.
Run with ``make soak`` (not part of ``make test``)."""

from __future__ import annotations

import asyncio
import os
import random

import pytest

from tests.conftest import free_port
from tests.e2e.books import assert_books_balance, seed, wait_drained
from tests.e2e.load import drive

pytestmark = pytest.mark.soak

ROUNDS = int(os.environ.get("SOAK_ROUNDS", "12"))
PER_ROUND = int(os.environ.get("SOAK_REQUESTS", "800"))
CONCURRENCY = 32


async def test_chaos_kills_keep_the_books_exact(env, stack):
    rng = random.Random(int(os.environ.get("SOAK_SEED", "7")))
    mock = await stack.mock(free_port())
    seeded = await seed(env, mock.url, tokens=8)
    relays = [await stack.relay(free_port()), await stack.relay(free_port())]
    flushers = [stack.worker("f0"), stack.worker("f1")]
    ok_rids: list[str] = []
    killed_relays = 0
    for round_no in range(ROUNDS):
        live = [r for r in relays if r.popen and r.popen.poll() is None]

        def pick(live=live) -> str:
            return rng.choice(live).url

        load = asyncio.create_task(drive(pick, seeded.keys, PER_ROUND, CONCURRENCY))
        await asyncio.sleep(rng.uniform(0.2, 1.0))
        victim = rng.choice(["relay", "flusher", "none"])
        if victim == "relay":
            i = rng.randrange(len(relays))
            relays[i].kill()
            killed_relays += 1
        elif victim == "flusher":
            i = rng.randrange(len(flushers))
            flushers[i].kill()
            flushers[i] = stack.worker(f"f{round_no}-{i}")
        result = await load
        ok_rids += result.ok_rids
        if victim == "relay":
            relays[i] = await stack.relay(free_port())
    await wait_drained(env, timeout=120)
    await assert_books_balance(env, seeded, ok_rids, max_unacknowledged=CONCURRENCY * killed_relays)
