"""Shared fixtures.

- Unit tests (tests/unit) use fakeredis with Lua and no services.
- Integration and e2e tests use the real Redis and PostgreSQL (``make test`` makes sure they
  run; see tests/services.py). Each test session creates its own database
  (``relaygate_test_<hex>``), dropped at the end; each test gets its own Redis key prefix and
  a truncated database, so tests never see each other's data, nor anyone else's.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from redis.asyncio import Redis

from relaygate.accounts import Accounts
from relaygate.admin import ROLE_ROOT, Admin
from relaygate.app import init_app
from relaygate.config import Settings, from_env
from relaygate.dev.mock import MockConfig, build_app
from relaygate.keys import KeyScheme
from relaygate.ledger import Scripts
from relaygate.store.db import create_pool, migrate
from tests.prodserver import CancellingServer, ProductionServer

REDIS_URL = os.environ.get("RELAYGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("RELAYGATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TABLES = "logs, tokens, users, channels, options"
UPSTREAM_CLIENT = from_env(
    {k: v for k, v in os.environ.items() if k == "RELAYGATE_UPSTREAM_CLIENT"}
).upstream_client


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    for item in items:
        path = str(item.fspath)
        for kind in ("unit", "integration", "e2e", "browser"):
            if f"{os.sep}tests{os.sep}{kind}{os.sep}" in path:
                item.add_marker(getattr(pytest.mark, kind))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_db(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    name = f"relaygate_test_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(PG_URL)
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = _with_db(PG_URL, name)
    conn = await asyncpg.connect(url)
    await migrate(conn)
    await conn.close()
    try:
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def settings(database_url: str) -> AsyncIterator[Settings]:
    """Fresh key space and empty tables for every test."""
    prefix = f"rgt{secrets.token_hex(4)}"
    conn = await asyncpg.connect(database_url)
    await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    await conn.close()
    s = Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        key_prefix=prefix,
        shards=4,
        port=free_port(),
        log_level="warning",
        flush_block_ms=50,
        flush_linger_ms=50,
        flush_claim_idle_ms=1000,
        # The mock upstreams listen on 127.0.0.1 (relaygate.upstreams refuses it by default).
        allow_loopback_upstreams=True,
        # `RELAYGATE_UPSTREAM_CLIENT=fast make test` runs the whole suite on the fast client
        # (e2e processes inherit the variable).
        upstream_client=UPSTREAM_CLIENT,
    )
    yield s
    redis = Redis.from_url(REDIS_URL)
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    for i in range(0, len(keys), 500):
        await redis.delete(*keys[i : i + 500])
    await redis.aclose()


@dataclass
class Env:
    """Handles a test needs: the admin service, raw Redis/PG, the key scheme."""

    settings: Settings
    pool: asyncpg.Pool
    redis: Redis
    keys: KeyScheme
    accounts: Accounts
    admin: Admin

    async def root_user(self, quota: int = 10**12) -> tuple[int, str]:
        return await self.admin.create_user("root", ROLE_ROOT, quota)


@pytest.fixture
async def env(settings: Settings) -> AsyncIterator[Env]:
    pool = await create_pool(settings.database_url, max_size=5)
    redis = Redis.from_url(settings.redis_url)
    keys = KeyScheme(settings.key_prefix, settings.shards)
    accounts = Accounts(pool, redis, Scripts.load(), keys)
    admin = Admin(pool, accounts, allow_loopback_upstreams=settings.allow_loopback_upstreams)
    yield Env(settings, pool, redis, keys, accounts, admin)
    await pool.close()
    await redis.aclose()


@pytest.fixture
async def mock_upstream() -> AsyncIterator[str]:
    """An in-process OpenAI-compatible upstream; yields its base URL."""
    server = TestServer(build_app(MockConfig()), host="127.0.0.1")
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def relay(settings: Settings) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    """The full app (relay + management API) in-process, on a real socket."""
    app = init_app(settings)
    client = TestClient(ProductionServer(app, host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


@pytest.fixture(params=["production", "handler_cancellation"])
async def relay_both(
    settings: Settings, request: pytest.FixtureRequest
) -> AsyncIterator[TestClient]:  # type: ignore[type-arg]
    """The relay under both aiohttp modes: production's (a hang-up is seen at the next
    write) and handler cancellation (a hang-up cancels the handler)."""
    server_type = ProductionServer if request.param == "production" else CancellingServer
    client = TestClient(server_type(init_app(settings), host="127.0.0.1"))
    await client.start_server()
    yield client
    await client.close()


@pytest.fixture(scope="session")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A certificate and key for 127.0.0.1 (local TLS servers in the upstream tests)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
