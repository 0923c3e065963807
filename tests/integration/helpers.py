"""Helpers shared by integration tests (not fixtures)."""

from __future__ import annotations

import asyncio
import io
import wave
from typing import Any

from relaygate.appkeys import RUNTIME
from relaygate.flusher import Flusher
from relaygate.ledger import Scripts

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def refresh(client: Any) -> None:
    """Make the in-process relay pick up channels/prices written after it started."""
    rt = client.app[RUNTIME]
    await rt.catalog.reload_channels()
    await rt.catalog.reload_prices()


async def hook_world(env: Any, client: Any, upstream: str) -> tuple[int, Any]:
    """A root user, a channel on the mock serving gpt-4o-mini plus its hook models (m-slow,
    m-drop: see relaygate.dev.mock), priced; and one token with 10**7 quota."""
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", upstream, "k", "gpt-4o-mini,m-slow,m-drop")
    await env.admin.set_option("ModelRatio", '{"m-slow": 1, "m-drop": 1}')
    await refresh(client)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**7)
    return uid, tok


def wav(seconds: float, rate: int = 8000) -> bytes:
    """A silent mono 16-bit WAV file of ``seconds``."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\0\0" * int(rate * seconds))
    return out.getvalue()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def flush_all(env: Any, rounds: int = 50) -> int:
    """Run flusher rounds until the streams are empty; returns rows written."""
    flusher = Flusher(env.settings, env.pool, env.redis, Scripts.load())
    await flusher.setup()
    for _ in range(rounds):
        handled = await flusher.round()
        if handled == 0 and await pending_events(env) == 0:
            break
    return flusher.flushed


async def pending_events(env: Any) -> int:
    total = 0
    for stream in env.keys.streams():
        total += await env.redis.xlen(stream)
    return total


async def ledger(env: Any, user_id: int, token_id: int) -> tuple[int, int]:
    limit, used = await env.redis.hmget(env.keys.token(user_id, token_id), "limit", "used")
    return int(limit or 0), int(used or 0)


async def pg_token(env: Any, token_id: int) -> tuple[int, int]:
    async with env.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT quota_limit, used_quota FROM tokens WHERE id = $1", token_id
        )
    return int(row["quota_limit"]), int(row["used_quota"])


async def gather_limited(coros: list[Any], limit: int = 300) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Any) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))
