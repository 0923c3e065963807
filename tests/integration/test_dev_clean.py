"""``make clean`` is a true fresh start: it drops the database and the Redis keys that
``make dev`` created on servers it reused, and keeps (saying so) a database that existed
before. Run against the real servers with a database and key prefix of this test's own."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import asyncpg
import pytest
from redis import Redis

from relaygate.config import Settings
from relaygate.dev import mode
from relaygate.dev.clean import clean

from ..conftest import PG_URL, REDIS_URL, _with_db

pytestmark = pytest.mark.integration


def _exists(name: str) -> bool:
    async def check() -> bool:
        conn = await asyncpg.connect(PG_URL)
        try:
            return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
        finally:
            await conn.close()

    return asyncio.run(check())


def _sql(statement: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def _keys(prefix: str) -> list[bytes]:
    redis = Redis.from_url(REDIS_URL)
    try:
        return list(redis.scan_iter(match=f"{prefix}:*", count=1000))
    finally:
        redis.close()


def _dev_setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> tuple[Settings, list[str]]:
    """What ``make dev --no-serve`` does, with this test's data dir, database and prefix."""
    monkeypatch.setenv("RELAYGATE_DATA_DIR", str(tmp_path))
    settings = Settings(
        database_url=_with_db(PG_URL, name),
        redis_url=REDIS_URL,
        key_prefix=f"rgclean{secrets.token_hex(3)}",
        shards=2,
        allow_loopback_upstreams=True,
    )
    said: list[str] = []
    settings = mode.prepare_services(settings, said.append)
    asyncio.run(mode.seed(settings, 3001))
    return settings, said


def test_clean_drops_what_dev_created(tmp_path, monkeypatch):
    name = f"relaygate_clean_{secrets.token_hex(4)}"
    try:
        settings, _ = _dev_setup(tmp_path, monkeypatch, name)
        # A second make dev finds the database: it still counts as made by make dev.
        mode.prepare_services(settings, lambda _: None)
        assert _exists(name) and _keys(settings.key_prefix)
        said: list[str] = []
        clean(tmp_path, said.append)
        assert not _exists(name)
        assert _keys(settings.key_prefix) == []
        assert any("dropped database" in line for line in said), said
    finally:
        _sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_clean_keeps_a_database_that_existed(tmp_path, monkeypatch):
    name = f"relaygate_clean_{secrets.token_hex(4)}"
    _sql(f'CREATE DATABASE "{name}"')
    settings = None
    try:
        settings, _ = _dev_setup(tmp_path, monkeypatch, name)
        said: list[str] = []
        clean(tmp_path, said.append)
        assert _exists(name) and _keys(settings.key_prefix)
        assert any("kept database" in line for line in said), said
    finally:
        _sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if settings is not None:
            keys = _keys(settings.key_prefix)
            if keys:
                redis = Redis.from_url(REDIS_URL)
                redis.delete(*keys)
                redis.close()


def test_clean_without_a_record_touches_nothing(tmp_path):
    said: list[str] = []
    clean(tmp_path, said.append)
    assert said == ["clean: no record of a make dev database; nothing dropped"]
