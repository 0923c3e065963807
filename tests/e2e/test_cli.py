"""The command line as an operator meets it: clear one-line start errors, multi-process
serving, and a SIGTERM that drains and settles in-flight requests."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import aiohttp

from ..conftest import free_port
from .books import seed, wait_drained
from .procs import BIN, env_for


def _run(settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], env=env_for(settings, **env), capture_output=True, text=True, timeout=30
    )


async def test_bad_configuration_fails_with_one_line(settings):
    cases = [
        ({"RELAYGATE_PORT": "abc"}, "RELAYGATE_PORT"),
        ({"RELAYGATE_REDIS_URL": "redis://127.0.0.1:1/0"}, "cannot use Redis"),
        (
            {"RELAYGATE_DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"},
            "cannot use PostgreSQL",
        ),
        ({"RELAYGATE_SHARDS": "0"}, "RELAYGATE_SHARDS"),
    ]
    for env, expected in cases:
        done = await asyncio.to_thread(_run, settings, "serve", **env)
        assert done.returncode == 1
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], done.stderr
        assert "Traceback" not in done.stderr


async def test_admin_commands_print_json(settings, env):
    made = await asyncio.to_thread(
        _run, settings, "admin", "create-user", "--username", "cli", "--role", "admin"
    )
    assert made.returncode == 0, made.stderr
    import json

    user = json.loads(made.stdout)
    assert set(user) == {"id", "username", "role", "access_token"} and user["role"] == 10
    tok = json.loads(
        (
            await asyncio.to_thread(
                _run,
                settings,
                "admin",
                "create-token",
                "--user-id",
                str(user["id"]),
                "--name",
                "t",
                "--remain-quota",
                "5",
            )
        ).stdout
    )
    assert tok["key"].startswith("sk-") and len(tok["key"]) == 51
    shown = json.loads(
        (
            await asyncio.to_thread(_run, settings, "admin", "show-token", "--id", str(tok["id"]))
        ).stdout
    )
    assert (shown["limit"], shown["used"], shown["remain"]) == (5, 0, 5)
    assert tok["key"][3:] not in json.dumps(shown)
    bad = await asyncio.to_thread(
        _run, settings, "admin", "create-token", "--user-id", "9999", "--name", "t"
    )
    assert bad.returncode == 1 and "not found" in bad.stderr and "Traceback" not in bad.stderr


async def test_two_workers_share_a_port_and_sigterm_drains(env, stack):
    mock = await stack.mock(free_port())
    seeded = await seed(env, mock.url, tokens=2)
    await env.admin.create_channel("slow", mock.url, "k", "m-slow")
    await env.admin.set_option("ModelRatio", '{"m-slow": 1}')
    relay = await stack.relay(free_port(), with_worker=True, RELAYGATE_WORKERS="2")
    body = {"model": "m-slow", "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as s:

        async def one(i: int) -> int:
            async with s.post(
                f"{relay.url}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {seeded.keys[i % 2]}"},
            ) as r:
                await r.read()
                return r.status

        tasks = [asyncio.create_task(one(i)) for i in range(20)]
        # all 20 in flight (each holds its reservation) before SIGTERM; not a fixed sleep
        shards = [env.keys.reservations_of_shard(i) for i in range(env.keys.shards)]
        for _ in range(500):
            held = sum([await env.redis.zcard(k) for k in shards])
            if held == 20:
                break
            await asyncio.sleep(0.02)
        assert held == 20, f"only {held} requests reached the upstream"
        assert relay.popen is not None
        relay.popen.send_signal(signal.SIGTERM)
        statuses = await asyncio.gather(*tasks)
    assert statuses == [200] * 20
    assert await asyncio.to_thread(relay.popen.wait, 30) == 0
    stack.worker("w")
    await wait_drained(env)
    async with env.pool.acquire() as conn:
        assert await conn.fetchval("SELECT COUNT(*) FROM logs") == 20


async def test_sigterm_while_a_worker_is_still_starting_exits_cleanly(env, stack):
    """A SIGTERM that reaches a forked worker before it installed its handler used to kill
    it outright (exit status -15, no cleanup): the signals are blocked until then."""
    for _ in range(3):
        relay = await stack.relay(free_port(), with_worker=True, RELAYGATE_WORKERS="2")
        assert relay.popen is not None
        relay.popen.send_signal(signal.SIGTERM)  # one worker answered /healthz; maybe not both
        assert await asyncio.to_thread(relay.popen.wait, 30) == 0


async def test_migrate_creates_a_missing_database_and_applies_once(settings):
    import json

    import asyncpg

    name = f"relaygate_mig_{free_port()}"
    url = settings.database_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        first = await asyncio.to_thread(_run, settings, "migrate", RELAYGATE_DATABASE_URL=url)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["applied"][0].startswith("0001_")
        again = await asyncio.to_thread(_run, settings, "migrate", RELAYGATE_DATABASE_URL=url)
        assert json.loads(again.stdout) == {"applied": []}
    finally:
        admin = await asyncpg.connect(settings.database_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
