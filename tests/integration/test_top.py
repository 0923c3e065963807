"""Issue 14 item 1: ``relaygate top`` against the real Redis (and PostgreSQL for names).

``--once --json`` is compared with the ledger read straight from Redis; the live view runs
under tmux (its own socket) while traffic flows, and a token's spend must show up in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from relaygate.keys import day_and_month

from .helpers import CHAT, bearer, refresh

TMUX = shutil.which("tmux")


def top_argv(settings: Any, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "relaygate.cli",
        "top",
        "--redis-url",
        settings.redis_url,
        "--database-url",
        settings.database_url,
        "--key-prefix",
        settings.key_prefix,
        "--shards",
        str(settings.shards),
        *extra,
    ]


async def run_once(settings: Any, *extra: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        *top_argv(settings, "--once", "--json", "--interval", "0.2", *extra),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    parsed: dict[str, Any] = orjson.loads(out)
    return parsed


async def world(env: Any, relay: TestClient, upstream: str) -> tuple[int, Any, Any]:
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", upstream, "k", "gpt-4o-mini")
    await refresh(relay)
    rich = await env.admin.create_token(uid, "rich-token", remain_quota=10**8)
    poor = await env.admin.create_token(uid, "poor-token", remain_quota=1)
    return uid, rich, poor


async def test_once_json_matches_redis(env: Any, relay: TestClient, mock_upstream: str) -> None:
    uid, rich, poor = await world(env, relay, mock_upstream)
    for _ in range(3):
        resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(rich.key))
        assert resp.status == 200, await resp.text()
    resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(poor.key))
    assert resp.status == 429

    out = await run_once(env.settings)
    tokens = {t["id"]: t for t in out["tokens"]}
    day, month = day_and_month()
    k = env.keys
    for tok in (rich, poor):
        limit, used, n = await env.redis.hmget(k.token(uid, tok.id), "limit", "used", "n")
        row = tokens[tok.id]
        assert row["user"] == uid
        assert row["limit"] == int(limit) and row["used"] == int(used)
        assert row["remaining"] == int(limit) - int(used)
        assert row["admitted"] == int(n or 0)
        assert row["today"] == int(await env.redis.get(k.token_day(uid, tok.id, day)) or 0)
        assert row["month"] == int(await env.redis.get(k.token_month(uid, tok.id, month)) or 0)
        assert row["inflight"] == 0
    assert tokens[rich.id]["admitted"] == 3 and tokens[rich.id]["used"] > 0
    assert tokens[rich.id]["name"] == "rich-token"
    user = next(u for u in out["users"] if u["id"] == uid)
    ulimit, uused = await env.redis.hmget(k.user(uid), "limit", "used")
    assert (user["limit"], user["used"]) == (int(ulimit), int(uused))
    assert user["admitted"] == 3
    assert out["summary"]["refusals"]["token_quota"]["total"] == int(
        await env.redis.hget(k.refusals(uid), "30")
    )
    assert out["summary"]["refusals"]["token_quota"]["total"] == 1
    # sort keys and the filter
    assert [t["id"] for t in out["tokens"]] == [rich.id, poor.id]  # by rate, then by id
    only = await run_once(env.settings, "--filter", "poor", "--sort", "remaining")
    assert [t["id"] for t in only["tokens"]] == [poor.id]
    by_user = await run_once(env.settings, "--filter", f"user:{uid}", "--no-names")
    assert {t["id"] for t in by_user["tokens"]} == {rich.id, poor.id}


async def test_once_rejects_a_bad_sort_key(env: Any) -> None:
    proc = await asyncio.create_subprocess_exec(
        *top_argv(env.settings, "--once", "--sort", "bogus"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = await proc.communicate()
    assert proc.returncode == 1
    assert err.decode().strip().startswith("relaygate: --sort must be one of")
    assert "Traceback" not in err.decode()


@contextlib.asynccontextmanager
async def tmux_top(settings: Any) -> AsyncIterator[Any]:
    """``relaygate top`` in a detached tmux session on a socket of its own."""
    assert TMUX is not None
    sock = f"rgtop-{secrets.token_hex(4)}"
    # COLUMNS/LINES from the test runner's environment would override the pane's size
    cmd = "env -u COLUMNS -u LINES " + " ".join(
        top_argv(settings, "--interval", "0.5", "--sort", "used")
    )

    def tmux(*args: str) -> str:
        done = subprocess.run([TMUX, "-L", sock, *args], capture_output=True, check=True)
        return done.stdout.decode(errors="replace")

    tmux("new-session", "-d", "-s", "top", "-x", "220", "-y", "40", cmd)
    try:
        yield tmux
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            tmux("kill-server")


def row_of(screen: str, token_id: int) -> list[str] | None:
    for line in screen.splitlines():
        cells = line.split()
        if cells and cells[0] == str(token_id):
            return cells
    return None


@pytest.mark.skipif(TMUX is None, reason="tmux is not installed")
async def test_live_view_under_tmux_shows_spend_while_traffic_runs(
    env: Any, relay: TestClient, mock_upstream: str
) -> None:
    uid, rich, _ = await world(env, relay, mock_upstream)
    stop = asyncio.Event()

    async def load() -> None:
        while not stop.is_set():
            resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(rich.key))
            assert resp.status == 200
            await resp.read()

    async with tmux_top(env.settings) as tmux:
        # the view is up before any traffic, and the token (unused: no ledger hash yet) absent
        for _ in range(200):
            screen = tmux("capture-pane", "-p", "-t", "top")
            if "tokens by used" in screen:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"top never drew its header:\n{screen}")
        assert row_of(screen, rich.id) is None
        workers = [asyncio.create_task(load()) for _ in range(4)]
        try:
            cells = None
            for _ in range(300):  # a polling deadline, not a timing assertion
                screen = tmux("capture-pane", "-p", "-t", "top")
                cells = row_of(screen, rich.id)
                if cells and float(cells[3]) > 0 and int(cells[6]) > 0:
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"no spend shown for token {rich.id}:\n{screen}")
            assert cells[2] == "rich-token"
            assert int(cells[1]) == uid
            # keys: 'u' switches to users, the user row shows the same spend
            tmux("send-keys", "-t", "top", "u")
            for _ in range(100):
                screen = tmux("capture-pane", "-p", "-t", "top")
                if "users by used" in screen and row_of(screen, uid):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail(f"'u' did not switch to users:\n{screen}")
            tmux("send-keys", "-t", "top", "q")
        finally:
            stop.set()
            await asyncio.gather(*workers)


async def test_top_on_an_unreachable_redis_is_one_line(env: Any) -> None:
    from ..conftest import free_port

    dead = f"127.0.0.1:{free_port()}"
    argv = top_argv(env.settings, "--once", "--json", "--no-names")
    argv[argv.index("--redis-url") + 1] = f"redis://{dead}/0"
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 1 and out == b""
    assert len(lines) == 1 and lines[0].startswith(f"relaygate: cannot read Redis at {dead}")
