"""Integration tests for relaygate.redispipe.PipelinedRedis against a real Redis.

Uses db 15 on 127.0.0.1:6379 and a random key prefix; only our own keys are
deleted afterwards.  Fixtures live here on purpose (conftest is owned elsewhere).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    ConnectionError,
    NoScriptError,
    ResponseError,
)

from relaygate.redispipe import PipelinedRedis

pytestmark = pytest.mark.integration

URL = "redis://127.0.0.1:6379/15"
CALL_TIMEOUT = 10.0


@pytest.fixture
def prefix() -> str:
    return f"test:redispipe:{uuid.uuid4().hex}:"


@pytest.fixture
async def admin(prefix: str) -> AsyncIterator[aioredis.Redis]:
    """A plain redis-py client on db 15 for out-of-band checks, kills and cleanup."""
    client = aioredis.Redis.from_url(URL)
    try:
        await client.ping()
    except Exception as exc:  # pragma: no cover - environment guard
        await client.aclose()
        pytest.skip(f"real Redis not available: {exc}")
    yield client
    keys = [k async for k in client.scan_iter(match=f"{prefix}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def pipe(admin: aioredis.Redis) -> AsyncIterator[PipelinedRedis]:
    client = await PipelinedRedis.connect(URL)
    yield client
    await client.aclose()


async def _kill(admin: aioredis.Redis, client_id: int) -> None:
    killed = await admin.client_kill_filter(_id=str(client_id))
    assert killed == 1


async def test_selects_db(pipe: PipelinedRedis, admin: aioredis.Redis, prefix: str) -> None:
    assert await pipe.execute_command("SET", f"{prefix}db", "v") == b"OK"
    assert await admin.get(f"{prefix}db") == b"v"  # admin is on db 15 too


async def test_concurrent_incr_exact_count(pipe: PipelinedRedis, prefix: str) -> None:
    key = f"{prefix}ctr"
    results = await asyncio.wait_for(
        asyncio.gather(*(pipe.execute_command("INCR", key) for _ in range(5000))),
        CALL_TIMEOUT,
    )
    assert sorted(results) == list(range(1, 5001))
    assert await pipe.execute_command("GET", key) == b"5000"


async def test_send_resolves_written_once_the_tick_is_flushed(
    pipe: PipelinedRedis, admin: aioredis.Redis, prefix: str
) -> None:
    """``written`` means "on the socket": a command sent by another client after it has
    resolved is executed after ours. Sends of one tick share one write."""
    key = f"{prefix}seq"
    replies = [pipe.send("RPUSH", key, f"ours-{i}") for i in range(3)]
    written = pipe.written()
    assert pipe.written() is written, "one tick, one write"
    await written
    await admin.rpush(key, "theirs")
    assert [await r for r in replies if r is not None] == [1, 2, 3]
    assert await admin.lrange(key, 0, -1) == [b"ours-0", b"ours-1", b"ours-2", b"theirs"]


async def test_written_on_a_quiet_connection_is_written_at_once(
    pipe: PipelinedRedis, admin: aioredis.Redis, prefix: str
) -> None:
    """No reply outstanding: ``written`` writes the buffer now and is already resolved, so
    the relay answers in the same loop pass as its settle. Still "on the socket" first."""
    key = f"{prefix}quiet"
    reply = pipe.send("RPUSH", key, "ours")
    written = pipe.written()
    assert written.done()
    await admin.rpush(key, "theirs")
    assert reply is not None and await reply == 1
    assert await admin.lrange(key, 0, -1) == [b"ours", b"theirs"]


async def test_written_is_shared_while_replies_are_outstanding(
    pipe: PipelinedRedis, prefix: str
) -> None:
    """A reply outstanding (a busy connection): the tick's one write is shared, not one write
    per caller."""
    first = pipe.send("ECHO", "first")
    await asyncio.sleep(
        0
    )  # the tick's flush writes it; its reply is read no earlier than next pass
    second = pipe.send("ECHO", "second")
    written = pipe.written()
    assert not written.done()
    assert pipe.written() is written
    await written
    assert first is not None and second is not None
    assert [await first, await second] == [b"first", b"second"]


async def test_concurrent_replies_in_order(pipe: PipelinedRedis) -> None:
    results = await asyncio.wait_for(
        asyncio.gather(*(pipe.execute_command("ECHO", str(i)) for i in range(5000))),
        CALL_TIMEOUT,
    )
    assert results == [str(i).encode() for i in range(5000)]


async def test_noscript_then_script_load(pipe: PipelinedRedis, prefix: str) -> None:
    # Unique body so the script is certainly not cached already.
    body = f"return {{KEYS[1], ARGV[1], '{uuid.uuid4().hex}'}}"
    sha = hashlib.sha1(body.encode()).hexdigest()
    with pytest.raises(NoScriptError):
        await pipe.execute_command("EVALSHA", sha, 1, f"{prefix}k", "a")
    loaded = await pipe.execute_command("SCRIPT LOAD", body)  # redis-py's split form
    assert loaded.decode() == sha
    reply = await pipe.execute_command("EVALSHA", sha, 1, f"{prefix}k", "a")
    assert reply[:2] == [f"{prefix}k".encode(), b"a"]


async def test_error_reply_does_not_break_pipeline(pipe: PipelinedRedis, prefix: str) -> None:
    key = f"{prefix}str"
    await pipe.execute_command("SET", key, "x")
    calls = [
        pipe.execute_command("ECHO", "before"),
        pipe.execute_command("LPUSH", key, "1"),  # WRONGTYPE
        pipe.execute_command("ECHO", "after"),
    ]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert results[0] == b"before"
    assert isinstance(results[1], ResponseError)
    assert not isinstance(results[1], NoScriptError)
    assert "WRONGTYPE" in str(results[1])
    assert results[2] == b"after"
    with pytest.raises(ResponseError):
        await pipe.execute_command("NOSUCHCOMMAND")
    assert await pipe.execute_command("PING") == b"PONG"


async def test_cancel_does_not_shift_replies(pipe: PipelinedRedis) -> None:
    tasks = [asyncio.ensure_future(pipe.execute_command("ECHO", str(i))) for i in range(3000)]
    await asyncio.sleep(0)  # let every task enqueue its command
    cancelled = set(range(0, 3000, 3))
    for i in cancelled:
        tasks[i].cancel()
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), CALL_TIMEOUT)
    for i, res in enumerate(results):
        if i in cancelled:
            assert isinstance(res, asyncio.CancelledError)
        else:
            assert res == str(i).encode()
    # Subsequent calls still line up with their own replies.
    after = await asyncio.gather(*(pipe.execute_command("ECHO", f"n{i}") for i in range(100)))
    assert after == [f"n{i}".encode() for i in range(100)]


async def test_blocked_call_fails_promptly_on_kill(
    pipe: PipelinedRedis, admin: aioredis.Redis, prefix: str
) -> None:
    cid = await pipe.execute_command("CLIENT", "ID")
    # BLPOP parks the connection server-side, so its reply is in flight for sure.
    blocked = asyncio.ensure_future(pipe.execute_command("BLPOP", f"{prefix}nolist", 30))
    behind = asyncio.ensure_future(pipe.execute_command("ECHO", "queued-behind"))
    await asyncio.sleep(0.1)
    await _kill(admin, cid)
    for fut in (blocked, behind):
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(fut, 2.0)
    # Later calls wait for the reconnect and succeed on a new connection.
    assert await asyncio.wait_for(pipe.execute_command("PING"), 5.0) == b"PONG"
    assert await pipe.execute_command("CLIENT", "ID") != cid
    assert await pipe.execute_command("SET", f"{prefix}after", 1) == b"OK"
    assert await admin.get(f"{prefix}after") == b"1"  # still on db 15 after reconnect


async def test_client_kill_mid_load_recovers(
    pipe: PipelinedRedis, admin: aioredis.Redis, prefix: str
) -> None:
    key = f"{prefix}load"
    stop = asyncio.Event()
    outcomes: dict[str, int] = {"ok": 0, "conn_err": 0}

    async def worker() -> None:
        while not stop.is_set():
            try:
                # No per-call wait_for: its extra task hops make it likely that the
                # kill lands between batches; the gather timeout below catches hangs.
                res = await pipe.execute_command("INCR", key)
            except ConnectionError:
                outcomes["conn_err"] += 1
            else:
                assert isinstance(res, int)
                outcomes["ok"] += 1

    cid = await pipe.execute_command("CLIENT", "ID")
    workers = [asyncio.ensure_future(worker()) for _ in range(200)]
    await asyncio.sleep(0.2)
    await _kill(admin, cid)
    await asyncio.sleep(0.3)
    stop.set()
    # asyncio.wait_for raising TimeoutError here would mean a hung call.
    await asyncio.wait_for(asyncio.gather(*workers), CALL_TIMEOUT)

    assert outcomes["ok"] > 0
    new_cid = await asyncio.wait_for(pipe.execute_command("CLIENT", "ID"), 5.0)
    assert new_cid != cid
    # Every successful INCR is reflected; failed ones may or may not have run.
    final = int(await pipe.execute_command("GET", key))
    assert outcomes["ok"] <= final <= outcomes["ok"] + outcomes["conn_err"]


async def test_saturation_fails_fast(admin: aioredis.Redis) -> None:
    client = await PipelinedRedis.connect(URL, max_pending=10)
    try:
        results: list[Any] = await asyncio.gather(
            *(client.execute_command("ECHO", str(i)) for i in range(50)), return_exceptions=True
        )
        ok = [r for r in results if isinstance(r, bytes)]
        errs = [r for r in results if isinstance(r, ConnectionError)]
        assert len(ok) == 10 and len(errs) == 40
        assert "saturated" in str(errs[0])
        assert await client.execute_command("PING") == b"PONG"  # drains back to normal
    finally:
        await client.aclose()


async def test_connect_errors() -> None:
    with pytest.raises(ConnectionError):
        await PipelinedRedis.connect("redis://127.0.0.1:1/0", connect_timeout=1.0)
    with pytest.raises(AuthenticationError):  # AUTH is sent; server has no password set
        await PipelinedRedis.connect("redis://:wrongpass@127.0.0.1:6379/15")
    with pytest.raises(ValueError):
        await PipelinedRedis.connect("http://127.0.0.1:6379/15")


async def test_closed_client_rejects_calls() -> None:
    client = await PipelinedRedis.connect(URL)
    pending = asyncio.ensure_future(client.execute_command("BLPOP", "nokey:redispipe", 5))
    await asyncio.sleep(0.05)
    await client.aclose()
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(pending, 2.0)
    with pytest.raises(ConnectionError):
        await client.execute_command("PING")


async def _uvloop_scenario(prefix: str) -> None:
    pipe = await PipelinedRedis.connect(URL)
    admin = await PipelinedRedis.connect(URL)
    try:
        echoed = await asyncio.gather(*(pipe.execute_command("ECHO", str(i)) for i in range(2000)))
        assert echoed == [str(i).encode() for i in range(2000)]
        with pytest.raises(NoScriptError):
            await pipe.execute_command("EVALSHA", "0" * 40, 0)
        cid = await pipe.execute_command("CLIENT", "ID")
        blocked = asyncio.ensure_future(pipe.execute_command("BLPOP", f"{prefix}uv", 30))
        await asyncio.sleep(0.1)
        assert await admin.execute_command("CLIENT", "KILL", "ID", cid) == 1
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(blocked, 2.0)
        assert await asyncio.wait_for(pipe.execute_command("PING"), 5.0) == b"PONG"
        assert await pipe.execute_command("CLIENT", "ID") != cid
    finally:
        await pipe.aclose()
        await admin.aclose()


async def test_under_uvloop(prefix: str) -> None:
    """The relay runs on uvloop, whose transports differ from asyncio's: run there too."""
    uvloop = pytest.importorskip("uvloop")
    await asyncio.to_thread(uvloop.run, _uvloop_scenario(prefix))
