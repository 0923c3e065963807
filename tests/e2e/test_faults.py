"""Money is exact through crashes: SIGKILL of a flusher, SIGKILL of a relay, PostgreSQL down."""

from __future__ import annotations

import asyncio

from ..conftest import free_port
from .books import assert_books_balance, seed, wait_drained
from .load import drive
from .procs import TcpProxy


async def _drive_with_events(stack, url, keys, total, concurrency, events):
    """Run load; at each (count, action) in ``events`` call action once ``count`` are done."""
    progress = {"n": 0}

    def note(n: int) -> None:
        progress["n"] = n

    task = asyncio.create_task(drive(lambda: url(), keys, total, concurrency, on_progress=note))
    for count, action in events:
        while progress["n"] < count and not task.done():
            await asyncio.sleep(0.01)
        await action()
    return await task


async def test_flusher_sigkill_loses_and_duplicates_nothing(env, stack):
    mock = await stack.mock(free_port())
    seeded = await seed(env, mock.url)
    relay = await stack.relay(free_port())
    workers = [stack.worker("a")]

    async def swap() -> None:
        workers[-1].kill()
        workers.append(stack.worker(f"w{len(workers)}"))

    result = await _drive_with_events(
        stack, lambda: relay.url, seeded.keys, 1200, 32, [(300, swap), (700, swap)]
    )
    assert result.ok == 1200, result
    await wait_drained(env)
    await assert_books_balance(env, seeded, result.ok_rids)


async def test_relay_sigkill_mid_run(env, stack):
    mock = await stack.mock(free_port())
    seeded = await seed(env, mock.url)
    stack.worker("w")
    concurrency = 24
    first = await stack.relay(free_port())
    current = {"url": first.url}

    async def crash() -> None:
        first.kill()

    r1 = await _drive_with_events(
        stack, lambda: current["url"], seeded.keys, 600, concurrency, [(300, crash)]
    )
    second = await stack.relay(free_port())
    current["url"] = second.url
    r2 = await drive(lambda: current["url"], seeded.keys, 600, concurrency)
    assert r1.ok >= 290 and r2.ok == 600
    # Reservations of requests the dead relay never settled are refunded by the reaper.
    await wait_drained(env, timeout=90)
    await assert_books_balance(env, seeded, r1.ok_rids + r2.ok_rids, max_unacknowledged=concurrency)


async def test_postgres_outage_relay_serves_and_backlog_lands(env, stack):
    proxy = TcpProxy("127.0.0.1", int(env.settings.database_url.split(":")[-1].split("/")[0]))
    port = await proxy.start()
    db_name = env.settings.database_url.rsplit("/", 1)[1]
    via_proxy = f"postgresql://postgres@127.0.0.1:{port}/{db_name}"
    mock = await stack.mock(free_port())
    seeded = await seed(env, mock.url)
    relay = await stack.relay(free_port(), RELAYGATE_DATABASE_URL=via_proxy)
    stack.worker("w", RELAYGATE_DATABASE_URL=via_proxy)
    warm = await drive(lambda: relay.url, seeded.keys, len(seeded.keys) * 2, 4)
    assert warm.ok == len(seeded.keys) * 2
    await wait_drained(env)

    await proxy.cut()
    during = await drive(lambda: relay.url, seeded.keys, 300, 16)
    assert during.ok == 300, during
    backlog = sum([await env.redis.xlen(s) for s in env.keys.streams()])
    assert backlog == 300  # waiting in Redis, nothing lost
    await proxy.start(port)
    await wait_drained(env, timeout=60)
    await assert_books_balance(env, seeded, warm.ok_rids + during.ok_rids)
    await proxy.cut()
