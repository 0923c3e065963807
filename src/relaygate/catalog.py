"""The tables every request reads and PostgreSQL owns: enabled channels and prices.

Each table is replaced whole, never mutated, so a request that already holds one keeps a
consistent view. They are reloaded on invalidation (``chan:``/``opt:`` messages) and every
``REFRESH_SECONDS`` in case a message was missed.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from relaygate.background import Background
from relaygate.channels import ChannelTable, channel_from_row
from relaygate.pricing import PriceBook
from relaygate.store import queries

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30.0


class Catalog:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        self.channels = ChannelTable(())
        self.prices = PriceBook()
        # One read-and-replace of a table at a time: reloads then land in the order they
        # read PostgreSQL, so a slow periodic reload cannot put back what an invalidation's
        # reload (which read after the write) already replaced.
        self._channels_lock = asyncio.Lock()
        self._prices_lock = asyncio.Lock()

    async def reload_channels(self) -> None:
        async with self._channels_lock:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(queries.CHANNELS_ENABLED)
            self.channels = ChannelTable(channel_from_row(r) for r in rows)

    async def reload_prices(self) -> None:
        async with self._prices_lock:
            async with self.pool.acquire() as conn:
                rows = await conn.fetch(queries.OPTIONS_ALL)
            try:
                self.prices = PriceBook.from_options({r["key"]: r["value"] for r in rows})
            except ValueError as exc:
                log.error("price options rejected, keeping the previous table: %s", exc)

    async def reload(self) -> None:
        await self.reload_channels()
        await self.reload_prices()

    async def refresh_periodically(self, background: Background) -> None:
        """Bound staleness if an invalidation was missed; survive PostgreSQL outages."""
        while not background.closing.is_set():
            await background.pause(REFRESH_SECONDS)
            try:
                await self.reload()
            except Exception as exc:
                log.warning("periodic channel/price refresh failed: %s", exc)
