"""A standalone ``relaygate worker`` serves its own /metrics (RELAYGATE_WORKER_METRICS_PORT):
after known events — N answered requests, one poison event, one reservation of a dead relay
— its flusher and reaper counters and the per-shard stream figures have exactly the expected
values; the relay (no ``--with-worker``) does not count them. Without the setting the worker
opens no port, and a port it cannot bind stops it with one line."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
from redis.exceptions import ResponseError

from relaygate.keys import day_and_month

from ..conftest import free_port
from ..integration.test_ops_metrics import total, value
from .books import seed
from .procs import BIN, env_for, wait_http
from .test_metrics_workers import scrape_until

N = 6
WORKER_FAMILIES = (
    "relaygate_flusher_events_total",
    "relaygate_flusher_batches_total",
    "relaygate_flusher_failures_total",
    "relaygate_flusher_dead_lettered_total",
    "relaygate_ledger_reaped_total",
    "relaygate_flusher_stream_length",
    "relaygate_flusher_pending",
    "relaygate_flusher_lag_seconds",
    "relaygate_usage_backlog",
)


async def test_worker_metrics_after_known_events(env: Any, stack: Any) -> None:
    mock = await stack.mock(free_port())
    seeded = await seed(env, mock.url, tokens=2)
    relay = await stack.relay(free_port())
    port = free_port()
    worker = stack.worker("metrics", RELAYGATE_WORKER_METRICS_PORT=str(port))
    url = f"http://127.0.0.1:{port}"
    await wait_http(f"{url}/healthz", worker)

    uid, tid = seeded.user_id, seeded.token_ids[0]
    day, month = day_and_month()
    # a reservation held by a relay instance that never beats: the worker's reaper refunds it
    member = f"rid-dead|{tid}|{uid}|{day}|{month}|dead-instance|0"
    await env.redis.zadd(env.keys.reservations(uid), {member: 1})
    # an event the flusher cannot record: dead-lettered, once
    await env.redis.xadd(env.keys.stream_of_user(uid), {"quota": 1, "event": b"[1, 2]"})
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as s:
        for i in range(N):
            async with s.post(
                f"{relay.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {seeded.keys[i % 2]}"},
            ) as r:
                assert r.status == 200
                await r.read()

        def done(text: str) -> bool:
            return (
                value(text, "relaygate_flusher_events_total") == N
                and value(text, "relaygate_flusher_dead_lettered_total") == 1
                and value(text, "relaygate_ledger_reaped_total") == 1
                and total(text, "relaygate_flusher_stream_length") == 0
            )

        text = await scrape_until(s, url, done)
        async with s.get(f"{relay.url}/metrics") as r:
            relay_text = await r.text()
    assert done(text), text
    assert value(text, "relaygate_flusher_batches_total") >= 1
    assert value(text, "relaygate_flusher_failures_total") == 0
    assert value(text, "relaygate_usage_backlog") == 0
    assert total(text, "relaygate_flusher_pending") == 0
    assert total(text, "relaygate_flusher_lag_seconds") == 0
    shards = {line.split('"')[1] for line in text.splitlines() if "stream_length{" in line}
    assert shards == {str(s) for s in range(env.settings.shards)}
    exposed = {line.split("{")[0].split()[0] for line in text.splitlines() if line[:1] != "#"}
    assert set(WORKER_FAMILIES) <= exposed
    # the worker exposes its own families only; the relay has no flusher in it
    assert "relaygate_http_requests_total" not in text
    assert value(relay_text, "relaygate_flusher_events_total") == 0
    assert value(relay_text, "relaygate_ledger_reserves_total") == N
    async with env.pool.acquire() as conn:
        assert await conn.fetchval("SELECT COUNT(*) FROM logs") == N
    assert await env.redis.xlen(f"{env.keys.stream_of_user(uid)}:dead") == 1


def listening_sockets(pid: int) -> set[str]:
    """Inodes of the TCP sockets ``pid`` holds in LISTEN state (from /proc)."""
    held = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                held.add(target[8:-1])
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A":  # TCP_LISTEN
                    listening.add(cols[9])
    return held & listening


async def test_worker_without_the_setting_opens_no_port(env: Any, stack: Any) -> None:
    quiet = stack.worker("quiet")
    loud = stack.worker("loud", RELAYGATE_WORKER_METRICS_PORT=str(free_port()))

    async def consumers() -> int:
        try:
            return len(await env.redis.xinfo_consumers(env.keys.stream(0), "flushers"))
        except ResponseError:  # no stream / group yet
            return 0

    for _ in range(300):  # until both flushers read their streams (a start-up deadline)
        if await consumers() == 2 and listening_sockets(loud.popen.pid):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(quiet.log.read_text() + loud.log.read_text())
    assert len(listening_sockets(loud.popen.pid)) == 1
    assert quiet.popen.poll() is None, quiet.log.read_text()
    assert listening_sockets(quiet.popen.pid) == set()


async def test_worker_metrics_port_taken_is_one_line(settings: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = await asyncio.to_thread(
            subprocess.run,
            [str(BIN), "worker", "--worker-metrics-port", str(port)],
            env=env_for(settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1, done.stderr
    assert len(lines) == 1 and lines[0].startswith("relaygate: cannot listen on "), done.stderr
    assert "RELAYGATE_WORKER_METRICS_PORT" in lines[0]
