"""A reload that read PostgreSQL earlier must never land after one that read it later:
an invalidation's reload racing the periodic one would otherwise put stale prices (or
channels) back until the next refresh, and bill every request meanwhile at the old price."""

from __future__ import annotations

import asyncio
from typing import Any

from relaygate.catalog import Catalog
from relaygate.pricing import PriceBook


class _SlowFirstPool:
    """The first fetch reads the old options and is slow to come back; later ones read the
    new options at once (what a write between the two reads does)."""

    def __init__(self, old: list[dict[str, str]], new: list[dict[str, str]]) -> None:
        self.answers = [old, new, new]
        self.delays = [0.2, 0.0, 0.0]
        self.started = asyncio.Event()

    def acquire(self) -> Any:
        pool = self

        class _Conn:
            async def __aenter__(self) -> Any:
                return self

            async def __aexit__(self, *exc: Any) -> None:
                return None

            async def fetch(self, query: str) -> list[dict[str, str]]:
                rows, delay = pool.answers.pop(0), pool.delays.pop(0)
                pool.started.set()
                await asyncio.sleep(delay)
                return rows

        return _Conn()


async def test_a_stale_price_reload_cannot_overwrite_a_newer_one() -> None:
    old = [{"key": "ModelRatio", "value": '{"m": 1}'}]
    new = [{"key": "ModelRatio", "value": '{"m": 7}'}]
    pool = _SlowFirstPool(old, new)
    catalog = Catalog(pool)  # type: ignore[arg-type]
    periodic = asyncio.ensure_future(catalog.reload_prices())  # reads the old options
    await pool.started.wait()
    await catalog.reload_prices()  # the invalidation's reload, after the write
    await periodic
    rates = catalog.prices.rates("m", "default")
    want = PriceBook.from_options({"ModelRatio": '{"m": 7}'}).rates("m", "default")
    assert rates is not None and want is not None
    assert rates.charge(1000, 0) == want.charge(1000, 0), "the stale reload landed last"
