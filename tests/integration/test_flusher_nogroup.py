"""Item 13 of issue 9: after Redis lost everything (restart without persistence) the streams
and their consumer group are gone; the flusher re-creates the groups and goes on instead of
failing every round on NOGROUP."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from relaygate import events
from relaygate.flusher import Flusher
from relaygate.ledger import Scripts
from tests.conftest import free_port


async def _logged(env: Any) -> int:
    async with env.pool.acquire() as conn:
        return int(await conn.fetchval("SELECT COUNT(*) FROM logs"))


async def _add(env: Any, uid: int, tok: int, rid: str) -> None:
    ev = {"rid": rid, "ts": int(time.time()), "user": uid, "token": tok}
    await env.redis.xadd(env.keys.stream_of_user(uid), {"quota": 1, "event": events.encode(ev)})


async def _until(cond: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cond():
            return True
        await asyncio.sleep(0.05)
    return False


async def test_flusher_recreates_consumer_groups_after_nogroup(env: Any) -> None:
    uid, _ = await env.root_user()
    tok = int((await env.admin.create_token(uid, "t", remain_quota=10**6)).id)
    f = Flusher(env.settings, env.pool, env.redis, Scripts.load())
    stop = asyncio.Event()
    task = asyncio.create_task(f.run(stop))
    try:
        await _add(env, uid, tok, "before")
        assert await _until(lambda: _is(env, 1))
        # Redis "restarts empty": only this test's own keys (its prefix) are deleted.
        await env.redis.delete(*env.keys.streams())
        await asyncio.sleep(0.2)  # the flusher meets NOGROUP (block is 50 ms)
        await _add(env, uid, tok, "after")  # a relay appends again: stream without group
        assert await _until(lambda: _is(env, 2)), "flusher stuck on NOGROUP"
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(task, 5)


async def _is(env: Any, n: int) -> bool:
    return await _logged(env) == n


async def _start_redis(port: int, workdir: str) -> asyncio.subprocess.Process:
    """A private, persistence-less redis-server on a free loopback port (never the shared
    one: this test kills it)."""
    proc = await asyncio.create_subprocess_exec(
        "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    probe = Redis(port=port)
    try:
        for _ in range(100):
            with contextlib.suppress(RedisError, OSError):
                if await probe.ping():
                    return proc
            await asyncio.sleep(0.05)
    finally:
        await probe.aclose()
    proc.kill()
    await proc.wait()
    raise RuntimeError("private redis-server did not start")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
async def test_flusher_recovers_after_private_redis_restarts_empty(env: Any, tmp_path: Any) -> None:
    uid, _ = await env.root_user()
    tok = int((await env.admin.create_token(uid, "t", remain_quota=10**6)).id)
    port = free_port()
    proc = await _start_redis(port, str(tmp_path))
    redis = Redis(port=port)
    private = type(env)(**{**env.__dict__, "redis": redis})
    f = Flusher(env.settings, env.pool, redis, Scripts.load())
    stop = asyncio.Event()
    task = asyncio.create_task(f.run(stop))
    try:
        await _add(private, uid, tok, "before")
        assert await _until(lambda: _is(env, 1))
        proc.kill()  # Redis dies and comes back empty
        await proc.wait()
        proc = await _start_redis(port, str(tmp_path))
        await asyncio.sleep(0.3)  # the flusher reconnects and meets NOGROUP
        await _add(private, uid, tok, "after")
        assert await _until(lambda: _is(env, 2), timeout=15), "flusher stuck on NOGROUP"
    finally:
        stop.set()
        with contextlib.suppress(asyncio.TimeoutError, RedisError, OSError):
            await asyncio.wait_for(task, 5)
        await redis.aclose()
        proc.kill()
        await proc.wait()
