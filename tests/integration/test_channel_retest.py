"""RELAYGATE_CHANNEL_RETEST_SECONDS (issue 15): auto-disabled channels are tested in the
background and the ones that pass are enabled again; one that still fails stays disabled,
and a channel an administrator disabled is never touched."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from relaygate.app import init_app


@pytest.fixture
async def retesting_relay(settings) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    client = TestClient(TestServer(init_app(settings.replace(channel_retest_seconds=0.05))))
    await client.start_server()
    yield client
    await client.close()


async def _status(env, channel_id: int) -> int:
    async with env.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT status FROM channels WHERE id = $1", channel_id))


async def test_passing_auto_disabled_channels_are_enabled_again(
    env, mock_upstream, retesting_relay
):
    healthy = await env.admin.create_channel("ok", mock_upstream, "k", "gpt-4o-mini", status=3)
    failing = await env.admin.create_channel("bad", mock_upstream, "k", "m-fail-500", status=3)
    manual = await env.admin.create_channel("off", mock_upstream, "k", "gpt-4o-mini", status=2)
    for _ in range(500):
        if await _status(env, healthy) == 1:
            break
        await asyncio.sleep(0.02)
    assert await _status(env, healthy) == 1
    # A few rounds later the failing one (tested after the healthy one, in id order) is
    # still auto-disabled.
    for _ in range(3):
        await asyncio.sleep(0.06)
    assert await _status(env, failing) == 3
    assert await _status(env, manual) == 2
