"""``relaygate admin create-channel`` applies the upstream address policy (issue 10 item 8):
loopback only with RELAYGATE_ALLOW_LOOPBACK_UPSTREAMS, metadata never, /v1 dropped; and a bad
upstream CA file stops ``serve`` with one line."""

from __future__ import annotations

import asyncio
import json
import subprocess

from .procs import BIN, env_for


def _run(settings, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN), *args], env=env_for(settings, **env), capture_output=True, text=True, timeout=30
    )


def _create(settings, base_url: str, allow: str) -> subprocess.CompletedProcess[str]:
    return _run(
        settings,
        "admin",
        "create-channel",
        "--name",
        "c",
        "--base-url",
        base_url,
        "--key",
        "k" * 20,
        "--models",
        "gpt-4o-mini",
        RELAYGATE_ALLOW_LOOPBACK_UPSTREAMS=allow,
    )


async def test_create_channel_refuses_loopback_by_default_and_metadata_always(settings, env):
    done = await asyncio.to_thread(_create, settings, "http://127.0.0.1:3201", "false")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "RELAYGATE_ALLOW_LOOPBACK_UPSTREAMS" in lines[0], done.stderr
    for url in ("http://169.254.169.254", "http://metadata.google.internal"):
        done = await asyncio.to_thread(_create, settings, url, "true")
        assert done.returncode == 1 and "base_url" in done.stderr, done.stderr
        assert "Traceback" not in done.stderr
    async with env.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM channels") == 0

    done = await asyncio.to_thread(_create, settings, "http://127.0.0.1:3201/v1", "true")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["base_url"] == "http://127.0.0.1:3201"
    async with env.pool.acquire() as conn:
        assert await conn.fetchval("SELECT base_url FROM channels") == "http://127.0.0.1:3201"


async def test_missing_upstream_ca_file_is_one_line(settings, tmp_path):
    missing = str(tmp_path / "nope.pem")
    done = await asyncio.to_thread(_run, settings, "serve", RELAYGATE_UPSTREAM_CA_FILE=missing)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "RELAYGATE_UPSTREAM_CA_FILE" in lines[0], done.stderr
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    done = await asyncio.to_thread(_run, settings, "serve", RELAYGATE_UPSTREAM_CA_FILE=str(bad))
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "RELAYGATE_UPSTREAM_CA_FILE" in lines[0], done.stderr
