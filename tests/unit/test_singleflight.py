"""Single flight under cancellation: one waiter giving up must not fail the others (item 9)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relaygate.cache import TokenCache, TokenMeta, meta_from_row
from relaygate.keys import KeyScheme
from relaygate.singleflight import SingleFlight


def _meta() -> TokenMeta:
    row = {
        "id": 7,
        "user_id": 3,
        "name": "t",
        "username": "u",
        "role": 1,
        "status": 1,
        "user_status": 1,
        "expired_time": -1,
        "unlimited_quota": False,
        "model_limits_enabled": False,
        "model_limits": "",
        "allow_ips": "",
        "group": "",
        "user_group": "default",
        "ver": 1,
    }
    return meta_from_row(row, KeyScheme("rg", 4), 0.0)


async def test_cancelling_the_first_lookup_does_not_fail_the_others() -> None:
    meta = _meta()
    loads = 0

    async def loader(_h: bytes) -> TokenMeta | None:
        nonlocal loads
        loads += 1
        await asyncio.sleep(0.05)
        return meta

    cache = TokenCache(loader, ttl=60, negative_ttl=5)
    first = asyncio.create_task(cache.get(b"k"))
    await asyncio.sleep(0.01)
    others = [asyncio.create_task(cache.get(b"k")) for _ in range(5)]
    await asyncio.sleep(0.01)
    first.cancel()
    results = await asyncio.gather(*others, return_exceptions=True)
    assert results == [meta] * 5
    assert first.cancelled()
    assert loads == 1
    assert await cache.get(b"k") is meta  # stored, though its starter was cancelled


async def test_a_load_whose_every_waiter_gave_up_still_completes_and_is_stored() -> None:
    meta = _meta()

    async def loader(_h: bytes) -> TokenMeta | None:
        await asyncio.sleep(0.02)
        return meta

    cache = TokenCache(loader, ttl=60, negative_ttl=5)
    waiter = asyncio.create_task(cache.get(b"k"))
    await asyncio.sleep(0.005)
    waiter.cancel()
    await asyncio.sleep(0.04)
    assert len(cache) == 1 and cache.misses == 1


async def test_a_load_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    calls = 0

    async def loader(_h: bytes) -> TokenMeta | None:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.02)
        if calls == 1:
            raise OSError("postgres down")
        return None

    cache = TokenCache(loader, ttl=60, negative_ttl=5)
    results = await asyncio.gather(*(cache.get(b"k") for _ in range(4)), return_exceptions=True)
    assert all(isinstance(r, OSError) for r in results)
    assert await cache.get(b"k") is None  # the entry was removed: a new load ran
    assert calls == 2


async def test_single_flight_helper_shares_cancels_nobody_and_cleans_up() -> None:
    flight: SingleFlight[str, int] = SingleFlight()
    runs = 0
    gate = asyncio.Event()

    async def work() -> int:
        nonlocal runs
        runs += 1
        await gate.wait()
        return 42

    callers = [asyncio.create_task(flight.run("a", work)) for _ in range(4)]
    await asyncio.sleep(0)
    assert "a" in flight
    callers[0].cancel()
    callers[2].cancel()
    gate.set()
    results = await asyncio.gather(*callers, return_exceptions=True)
    assert [type(r).__name__ for r in results] == ["CancelledError", "int", "CancelledError", "int"]
    assert results[1] == results[3] == 42
    assert runs == 1 and len(flight) == 0

    async def boom() -> int:
        raise ValueError("x")

    with pytest.raises(ValueError):
        await flight.run("a", boom)
    assert len(flight) == 0


async def test_accounts_rebuild_single_flight_survives_a_cancelled_caller() -> None:
    from relaygate.accounts import Accounts

    none: Any = None
    accounts = Accounts(none, none, none, KeyScheme("rg", 4))
    runs = 0

    async def rebuild() -> None:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.03)

    first = asyncio.create_task(accounts._single_flight(("t", 1), rebuild))
    await asyncio.sleep(0.005)
    rest: list[Any] = [
        asyncio.create_task(accounts._single_flight(("t", 1), rebuild)) for _ in range(3)
    ]
    await asyncio.sleep(0.005)
    first.cancel()
    assert await asyncio.gather(*rest, return_exceptions=True) == [None] * 3
    assert runs == 1
