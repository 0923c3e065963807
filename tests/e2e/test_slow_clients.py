"""Issue 10 item 5 (red-team #15): slowloris. A real ``relaygate serve``; bounded numbers of
slow connections; generous bounds (3x the timeout), never tight timings."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from relaygate.dev.mock.common import SLOW_SECONDS

from ..conftest import free_port
from .books import seed
from .procs import Stack

HEAD = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True if the server closes the connection (EOF or reset) within ``seconds``."""
    try:
        while True:
            data = await asyncio.wait_for(reader.read(4096), seconds)
            if not data:
                return True
    except TimeoutError:  # before OSError: TimeoutError is one
        return False
    except (ConnectionError, OSError):
        return True


async def _trickle(port: int, stop: asyncio.Event) -> bool:
    """A slowloris connection: a head one byte every 0.2 s, until the server closes it
    (True) or the test gives up (False)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD)
    closed = False
    try:
        while not stop.is_set():
            writer.write(b"X")
            await writer.drain()
            if await _closed_within(reader, 0.2):
                closed = True
                break
    except (ConnectionError, OSError):
        closed = True
    writer.close()
    return closed


async def test_slowloris_connections_are_closed_and_others_are_served(
    env: Any, stack: Stack
) -> None:
    port = free_port()
    # keep-alive far longer than the header timeout: the header timeout must do the cutting
    await stack.relay(port, RELAYGATE_HEADER_TIMEOUT="1", RELAYGATE_KEEPALIVE_TIMEOUT="10")
    stop = asyncio.Event()
    slow = [asyncio.create_task(_trickle(port, stop)) for _ in range(50)]
    async with aiohttp.ClientSession() as session:
        for _ in range(5):  # served meanwhile
            async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                assert resp.status == 200
            await asyncio.sleep(0.2)
    # header timeout 1 s: every trickle is cut well within 15 s; without it they are held
    # until the test gives up, so ``closed`` would be False
    give_up = asyncio.get_running_loop().call_later(15, stop.set)
    try:
        closed = await asyncio.gather(*slow)
    finally:
        give_up.cancel()
        stop.set()
    assert all(closed), f"{closed.count(False)} of {len(closed)} slowloris connections held"


async def test_idle_keep_alive_connection_is_closed(env: Any, stack: Stack) -> None:
    port = free_port()
    await stack.relay(port, RELAYGATE_HEADER_TIMEOUT="60", RELAYGATE_KEEPALIVE_TIMEOUT="1")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    assert b"200" in await asyncio.wait_for(reader.readuntil(b"\r\n"), 5)
    # then a next head trickled in: cut by the keep-alive deadline, not kept forever
    writer.write(b"GET /healthz HTTP/1.1\r\n")
    # keep-alive deadline 1 s, not the 60 s header one
    assert await _closed_within(reader, 20)
    writer.close()


async def test_connections_past_the_per_ip_cap_are_closed(env: Any, stack: Stack) -> None:
    port = free_port()
    await stack.relay(port, RELAYGATE_HEADER_TIMEOUT="30", RELAYGATE_MAX_CONNECTIONS_PER_IP="5")
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(5)]
    await asyncio.sleep(0.3)
    extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", port)
    assert await _closed_within(extra_reader, 3), "the 6th connection was kept"
    extra_writer.close()
    for reader, _ in conns[:2]:
        assert not await _closed_within(reader, 0.1), "a connection within the cap was closed"
    for _, writer in conns[:2]:
        writer.close()
    await asyncio.sleep(0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    await writer.drain()
    assert b"200" in await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    for _, w in conns[2:]:
        w.close()


async def test_a_long_stream_is_not_cut_by_the_timeouts(env: Any, stack: Stack) -> None:
    mock = await stack.mock(free_port())
    seeded = await seed(env, mock.url, tokens=1)
    await env.admin.create_channel("slow", mock.url, "k", "m-slow")
    await env.admin.set_option("ModelRatio", '{"m-slow": 1}')
    port = free_port()
    await stack.relay(port, RELAYGATE_HEADER_TIMEOUT="1", RELAYGATE_KEEPALIVE_TIMEOUT="1")
    body = {"model": "m-slow", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {seeded.keys[0]}"},
        ) as resp:
            assert resp.status == 200
            text = (await resp.read()).decode()
    assert text.rstrip().endswith("data: [DONE]"), text[-200:]
    # outlived both 1 s timeouts by construction: m-slow waits SLOW_SECONDS before each event
    events = text.count("data: ")
    assert events * SLOW_SECONDS > 2.0, events
