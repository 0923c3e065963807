"""Issue 14, Done when: ``relaygate top`` shows, within 2 s, the spend of a token under locust
load, tested under tmux; ``--once --json`` is checked against Redis.

Real processes: the mock upstream, ``relaygate serve --with-worker``, locust headless
(tests/e2e/locustfile_top.py, a few users for ~10 s) and ``relaygate top`` in a detached tmux
session. While the load runs, the spend Redis holds at some instant must be on the screen
within 2 s of it (a polling deadline on a condition, as the Done-when states it — not a
speed measurement); afterwards ``top --once --json`` must agree with the Redis counters read
directly and with locust's own request count.
"""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from relaygate.keys import day_and_month

from ..conftest import free_port
from ..integration.test_top import row_of, run_once, tmux_top
from .books import seed, wait_drained

TMUX = shutil.which("tmux")
LOCUST = shutil.which("locust") or str(Path(sys.executable).parent / "locust")
LOCUSTFILE = Path(__file__).with_name("locustfile_top.py")
SHOWN_WITHIN = 2.0  # seconds: the Done-when's figure
USED, REQS = 6, 4  # columns of the token table (ID USER NAME Q/MIN REQ/S LIMIT USED ...)

pytestmark = [
    pytest.mark.skipif(TMUX is None, reason="tmux is not installed"),
    pytest.mark.skipif(not Path(LOCUST).exists(), reason="locust is not installed"),
]


async def screen_row(tmux: Any, token_id: int) -> tuple[str, list[str] | None]:
    screen = str(await asyncio.to_thread(tmux, "capture-pane", "-p", "-t", "top"))
    return screen, row_of(screen, token_id)


async def shown_within(tmux: Any, token_id: int, used: int, seconds: float) -> list[str]:
    """The token's row once its USED cell reaches ``used``; fails after ``seconds``."""
    deadline = time.monotonic() + seconds
    screen, cells = "", None
    while time.monotonic() < deadline:
        screen, cells = await screen_row(tmux, token_id)
        if cells and int(cells[USED]) >= used:
            return cells
        await asyncio.sleep(0.05)
    pytest.fail(f"token {token_id}: spend {used} not shown within {seconds} s:\n{screen}")


async def wait_spend(env: Any, key: str, above: int) -> int:
    """The token's ``used`` in Redis once it exceeds ``above`` (a deadline, not a timing)."""
    for _ in range(300):
        used = int(await env.redis.hget(key, "used") or 0)
        if used > above:
            return used
        await asyncio.sleep(0.1)
    pytest.fail(f"the locust load spent nothing beyond {above}")


def locust_requests(prefix: Path) -> tuple[int, int]:
    """(requests, failures) of locust's "Aggregated" row."""
    with prefix.with_name(prefix.name + "_stats.csv").open() as fh:
        for row in csv.DictReader(fh):
            if row["Name"] == "Aggregated":
                return int(row["Request Count"]), int(row["Failure Count"])
    raise AssertionError("no Aggregated row in locust's stats")


async def test_top_shows_spend_under_locust_load(env: Any, stack: Any, tmp_path: Path) -> None:
    mock = await stack.mock(free_port())
    seeded = await seed(env, mock.url, tokens=1)
    uid, tid = seeded.user_id, seeded.token_ids[0]
    relay = await stack.relay(free_port(), with_worker=True)
    tok_key = env.keys.token(uid, tid)

    async with tmux_top(env.settings) as tmux:
        for _ in range(200):
            screen, cells = await screen_row(tmux, tid)
            if "tokens by used" in screen:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail(f"top never drew its header:\n{screen}")
        assert cells is None  # no traffic yet: no ledger hash, no row

        csv_prefix = tmp_path / "locust"
        log = (tmp_path / "locust.log").open("wb")
        load = await asyncio.create_subprocess_exec(
            *[
                LOCUST,
                "-f",
                str(LOCUSTFILE),
                "--headless",
                "--users",
                "4",
                "--spawn-rate",
                "4",
                "--run-time",
                "10s",
                "--stop-timeout",  # at the end users finish their request: all are counted
                "5",
                "--host",
                relay.url,
                "--csv",
                str(csv_prefix),
                "--only-summary",
                "--loglevel",
                "WARNING",
            ],
            env={**os.environ, "RG_LOCUST_KEY": seeded.keys[0]},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            # the first spend Redis records, then one mid-run: each on screen within 2 s
            first = await wait_spend(env, tok_key, above=0)
            cells = await shown_within(tmux, tid, first, SHOWN_WITHIN)
            assert cells[2] == "t0" and int(cells[1]) == uid
            await asyncio.sleep(3)
            mid = await wait_spend(env, tok_key, above=first)
            cells = await shown_within(tmux, tid, mid, SHOWN_WITHIN)
            assert float(cells[REQS]) > 0  # requests/s while the load runs
            code = await asyncio.wait_for(load.wait(), 60)
            assert code == 0, (tmp_path / "locust.log").read_text()[-3000:]
        finally:
            if load.returncode is None:  # only the process this test started
                load.kill()
                await load.wait()

        requests, failures = locust_requests(csv_prefix)
        assert requests > 0 and failures == 0
        await wait_drained(env)
        final = int(await env.redis.hget(tok_key, "used") or 0)
        cells = await shown_within(tmux, tid, final, SHOWN_WITHIN)
        assert int(cells[USED]) == final
        tmux("send-keys", "-t", "top", "q")

    out = await run_once(env.settings)
    row = next(t for t in out["tokens"] if t["id"] == tid)
    limit, used, n = await env.redis.hmget(tok_key, "limit", "used", "n")
    day, month = day_and_month()
    assert (row["limit"], row["used"], row["admitted"]) == (int(limit), int(used), int(n))
    assert row["remaining"] == int(limit) - int(used)
    assert row["today"] == int(await env.redis.get(env.keys.token_day(uid, tid, day)) or 0)
    assert row["month"] == int(await env.redis.get(env.keys.token_month(uid, tid, month)) or 0)
    assert row["inflight"] == 0 and row["used"] == final > 0
    # locust's stats file can miss the last fraction of a second; the relay's books cannot
    assert 0 < requests <= row["admitted"]
    user = next(u for u in out["users"] if u["id"] == uid)
    assert user["used"] == int(await env.redis.hget(env.keys.user(uid), "used"))
    async with env.pool.acquire() as conn:
        assert await conn.fetchval("SELECT COUNT(*) FROM logs") == row["admitted"]
        assert await conn.fetchval("SELECT COALESCE(SUM(quota), 0) FROM logs") == row["used"]
