"""The hot path's budget: one reserve EVALSHA before the upstream call (or, called early,
on its way before it: relay.early), one settle EVALSHA after it, and no PostgreSQL round
trip, on a warm request (counted with MONITOR)."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from relaygate.appkeys import RUNTIME
from relaygate.dev.mock import MockConfig, build_app
from tests.prodserver import ProductionServer

from .helpers import CHAT, bearer, refresh


async def _timed_upstream() -> tuple[TestServer, list[float]]:
    seen: list[float] = []

    @web.middleware
    async def stamp(request: web.Request, handler):  # type: ignore[no-untyped-def]
        seen.append(time.time())
        return await handler(request)

    app = build_app(MockConfig())
    app.middlewares.append(stamp)
    server = ProductionServer(app, host="127.0.0.1")
    await server.start_server()
    return server, seen


@pytest.mark.parametrize("early", [False, True], ids=["reserve-then-upstream", "early"])
async def test_warm_request_costs_two_evalsha_and_no_postgres(env, relay, monkeypatch, early):
    relay.app[RUNTIME].early.enabled = early
    upstream, upstream_times = await _timed_upstream()
    try:
        uid, _ = await env.root_user()
        await env.admin.create_channel(
            "mock", str(upstream.make_url("")).rstrip("/"), "k", "gpt-4o-mini"
        )
        await refresh(relay)
        tok = await env.admin.create_token(uid, "t", remain_quota=10**6)
        for _ in range(2):  # warm: metadata cached, ledger hashes built, scripts loaded
            assert (
                await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
            ).status == 200

        rt = relay.app[RUNTIME]
        counting = CountingPool(rt.pool)
        monkeypatch.setattr(rt, "pool", counting)
        monkeypatch.setattr(rt.accounts, "pool", counting)
        prefix = env.settings.key_prefix
        monitor_conn = Redis.from_url(env.settings.redis_url)
        lines: list[tuple[float, str]] = []
        async with monitor_conn.monitor() as m:
            upstream_times.clear()
            listener = asyncio.create_task(_collect(m, prefix, lines))
            await asyncio.sleep(0.05)
            resp = await relay.post(
                "/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}")
            )
            assert resp.status == 200
            # MONITOR reports the settle after the answer: wait for it (a deadline, not a
            # fixed sleep, so a loaded machine cannot hide it), then a moment for any extra
            # command the request might still send, which must not be there.
            deadline = time.monotonic() + 15
            while len(lines) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)
            listener.cancel()
        await monitor_conn.aclose()

        commands = [c for _, c in lines]
        assert len(commands) == 2, commands
        assert all(c.upper().startswith("EVALSHA") for c in commands), commands
        assert len(upstream_times) == 1
        reserve_t, settle_t = lines[0][0], lines[1][0]
        assert " 6 " in lines[0][1] and " 8 " in lines[1][1], "reserve (6 keys), then settle (8)"
        if not early:
            assert reserve_t <= upstream_times[0]
        assert upstream_times[0] <= settle_t
        assert counting.calls == 0
    finally:
        await upstream.close()


class CountingPool:
    """Stands in for the asyncpg pool and counts every use."""

    def __init__(self, pool):  # type: ignore[no-untyped-def]
        self._pool = pool
        self.calls = 0

    def __getattr__(self, name):  # type: ignore[no-untyped-def]
        self.calls += 1
        return getattr(self._pool, name)


async def _collect(m, prefix: str, out: list[tuple[float, str]]) -> None:  # type: ignore[no-untyped-def]
    while True:
        info = await m.next_command()
        if prefix in info["command"] and info.get("client_type") != "lua":  # not script-internal
            out.append((float(info["time"]), info["command"]))
