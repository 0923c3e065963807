"""Issue 14 item 3: /metrics of ``serve --workers 2 --with-worker`` counts every process's
traffic whichever process answers the scrape; the flusher and reaper figures after a known
flush and a known reap."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from relaygate.keys import day_and_month

from ..conftest import free_port
from ..integration.test_ops_metrics import total, value
from .books import seed

N = 12


async def scrape_until(session: aiohttp.ClientSession, url: str, ok: Any, rounds: int = 200) -> str:
    """Scrape until ``ok(text)`` (a polling deadline: snapshots are shared every second)."""
    text = ""
    for _ in range(rounds):
        async with session.get(f"{url}/metrics") as r:
            text = await r.text()
        if ok(text):
            return text
        await asyncio.sleep(0.1)
    return text


async def test_two_workers_metrics_are_summed(env: Any, stack: Any) -> None:
    mock = await stack.mock(free_port())
    seeded = await seed(env, mock.url, tokens=2)
    share = stack.tmp / "metrics"
    share.mkdir()
    relay = await stack.relay(
        free_port(), with_worker=True, RELAYGATE_WORKERS="2", RELAYGATE_METRICS_DIR=str(share)
    )
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    # a reservation left by a relay that never beats: the reaper refunds it
    uid, tid = seeded.user_id, seeded.token_ids[0]
    day, month = day_and_month()
    member = f"rid-dead|{tid}|{uid}|{day}|{month}|dead-instance|0"
    await env.redis.zadd(env.keys.reservations(uid), {member: 1})
    async with aiohttp.ClientSession() as s:
        for i in range(N):
            # a fresh connection each time, so that both processes get requests
            async with s.post(
                f"{relay.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {seeded.keys[i % 2]}", "Connection": "close"},
            ) as r:
                assert r.status == 200
                await r.read()

        def settled(text: str) -> bool:
            return (
                value(text, "relaygate_ledger_settles_total") == N
                and value(text, "relaygate_flusher_events_total") == N
                and value(text, "relaygate_ledger_reaped_total") == 1
                and total(text, "relaygate_flusher_stream_length") == 0
            )

        texts = []
        for _ in range(6):  # several scrapes: whichever process answers, the sums are whole
            texts.append(await scrape_until(s, relay.url, settled))
    # one snapshot per process, and their reserves add up to the whole
    snapshots = [orjson.loads(p.read_bytes()) for p in sorted(share.glob("*.json"))]
    assert len(snapshots) == 2
    assert sum(v for snap in snapshots for _, v in snap["c"].get("reserves", [])) == N
    for text in texts:
        assert value(text, "relaygate_ledger_reserves_total") == N
        assert value(text, "relaygate_ledger_settles_total") == N
        assert value(text, "relaygate_upstream_seconds_count", channel="1") == N
        assert value(text, "relaygate_relay_overhead_seconds_count") == N
        assert (
            value(
                text,
                "relaygate_http_requests_total",
                route="/v1/chat/completions",
                status="200",
            )
            == N
        )
        assert value(text, "relaygate_flusher_events_total") == N
        assert value(text, "relaygate_flusher_batches_total") >= 1
        assert value(text, "relaygate_flusher_failures_total") == 0
        assert value(text, "relaygate_ledger_reaped_total") == 1
        assert total(text, "relaygate_flusher_stream_length") == 0
        assert total(text, "relaygate_flusher_pending") == 0
        assert total(text, "relaygate_flusher_lag_seconds") == 0
        hits = value(text, "relaygate_token_cache_hits_total")
        loads = value(text, "relaygate_token_cache_loads_total")
        assert hits + loads == N  # one authentication per request, over both processes
    async with env.pool.acquire() as conn:
        assert await conn.fetchval("SELECT COUNT(*) FROM logs") == N
