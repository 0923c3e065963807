"""The console in a real browser: one relay (with its flusher) and one mock upstream as real
processes, and one headless Chromium session, all shared by the module (starting Chromium
is the slow part). Pages are checked for console errors and, with axe-core (vendored from
npm, injected into the page), for serious accessibility violations.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
from redis.asyncio import Redis

from relaygate.accounts import Accounts
from relaygate.admin import ROLE_ROOT, Admin
from relaygate.config import Settings
from relaygate.dev.services.browser import find_browser
from relaygate.keys import KeyScheme
from relaygate.ledger import Scripts
from relaygate.store.db import create_pool
from tests.conftest import REDIS_URL, TABLES, free_port
from tests.e2e.procs import Stack

from .driver import Console

PASSWORD = "console-pass-1"


@dataclass
class Site:
    url: str
    user_id: int
    username: str
    password: str
    access: str
    mock_url: str
    open_url: str  # a second relay on the same stores, with self-registration enabled


@pytest.fixture(scope="module")
async def site(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Site]:
    prefix = f"rgt{secrets.token_hex(4)}"
    conn = await asyncpg.connect(database_url)
    await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    await conn.close()
    settings = Settings(
        database_url=database_url,
        redis_url=REDIS_URL,
        key_prefix=prefix,
        shards=2,
        port=free_port(),
        log_level="warning",
        allow_loopback_upstreams=True,
    )
    stack = Stack(settings, tmp_path_factory.mktemp("console"))
    pool = await create_pool(database_url, max_size=2)
    redis = Redis.from_url(REDIS_URL)
    try:
        mock = await stack.mock(free_port())
        accounts = Accounts(pool, redis, Scripts.load(), KeyScheme(prefix, settings.shards))
        admin = Admin(pool, accounts, allow_loopback_upstreams=True)
        user_id, access = await admin.create_user("root", ROLE_ROOT, 10**10, password=PASSWORD)
        await admin.create_channel("mock", mock.url, "upstream-secret", "gpt-4o-mini,gpt-4o")
        relay = await stack.relay(free_port(), with_worker=True)
        open_relay = await stack.relay(free_port(), RELAYGATE_REGISTER_ENABLED="true")
        # "localhost", not 127.0.0.1: cookies ignore the port, so a session signed in there
        # would replace the main site's session cookie; another host name has its own jar.
        open_url = open_relay.url.replace("127.0.0.1", "localhost")
        yield Site(relay.url, user_id, "root", PASSWORD, access, mock.url, open_url)
    finally:
        stack.close()
        await pool.close()
        keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        for i in range(0, len(keys), 500):
            await redis.delete(*keys[i : i + 500])
        await redis.aclose()


@pytest.fixture(scope="module")
def console(site: Site) -> Iterator[Console]:
    found = find_browser()
    if found is None:
        pytest.skip(os.environ.get("RELAYGATE_TEST_NO_BROWSER", "chromium/chromedriver not found"))
    browser = Console(site.url, *found)
    try:
        yield browser
    finally:
        browser.quit()


@pytest.fixture
def shots() -> Path | None:
    """``make screenshots`` sets RELAYGATE_SCREENSHOTS to the folder to write them to."""
    folder = os.environ.get("RELAYGATE_SCREENSHOTS")
    if not folder:
        return None
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    return path
