"""``relaygate migrate``: create the database when missing, then apply migrations."""

from __future__ import annotations

import argparse
import logging

import asyncpg
import orjson

from relaygate.config import Settings
from relaygate.serving import Fatal, describe_start_error, run
from relaygate.store.bootstrap import BootstrapError, database_name, ensure_database
from relaygate.store.db import migrate

log = logging.getLogger("relaygate")


async def _migrate(settings: Settings) -> list[str]:
    try:
        conn = await asyncpg.connect(settings.database_url, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        # The server is there but the database is not: create it, as a first deploy expects.
        try:
            created = await ensure_database(settings.database_url)
        except BootstrapError as exc:
            raise Fatal(str(exc)) from None
        verb = "created" if created else "found"
        log.info("postgres: %s database %s", verb, database_name(settings.database_url))
        conn = await asyncpg.connect(settings.database_url, timeout=10)
    except Exception as exc:
        raise Fatal(describe_start_error(exc, settings)) from None
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    applied = run(_migrate(settings))
    print(orjson.dumps({"applied": applied}).decode())
