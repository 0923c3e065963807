"""``make clean``: a true fresh start, removing only what ``make dev`` created.

``make dev`` reuses a Redis or PostgreSQL that already runs on the machine. What it then
creates on them lives outside ``.relaygate/``, so deleting that folder is not enough: the
next ``make dev`` would find the old database, rotate root's access token and add a second
demo token. ``prepare_services`` therefore records in ``.relaygate/dev-state.json`` the
database URL, whether ``make dev`` created that database, and the Redis URL and key prefix
it seeded. ``clean`` reads that record and:

* drops the database only if ``make dev`` created it, and then deletes the Redis keys under
  its prefix (they are that database's ledger); a database that existed before is kept, with
  its keys, and a line says so;
* stops the project-local servers (``stop_local_services``); the caller then removes
  ``.relaygate/`` (their data) and the virtualenvs.

Nothing without a record is touched.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import asyncpg
import orjson
from redis.asyncio import Redis

from relaygate.dev.services.common import Log, run_async
from relaygate.store.bootstrap import connect_maintenance, database_name, quote_ident

STATE_FILE = "dev-state.json"


def data_dir() -> pathlib.Path:
    """Where ``make dev`` keeps its servers, credentials and this record."""
    return pathlib.Path(os.environ.get("RELAYGATE_DATA_DIR", ".relaygate")).resolve()


def state_path(data_dir: pathlib.Path) -> pathlib.Path:
    return data_dir / STATE_FILE


def record(
    data_dir: pathlib.Path, database_url: str, created: bool, redis_url: str, prefix: str
) -> None:
    """Note what ``make dev`` uses; "created" sticks once true (a later run finds it made)."""
    path = state_path(data_dir)
    previous: dict[str, Any] = orjson.loads(path.read_bytes()) if path.exists() else {}
    same_db = previous.get("database_url") == database_url
    state = {
        "database_url": database_url,
        "database_created": created or (same_db and bool(previous.get("database_created"))),
        "redis_url": redis_url,
        "key_prefix": prefix,
    }
    path.write_bytes(orjson.dumps(state, option=orjson.OPT_INDENT_2))
    path.chmod(0o600)  # the URLs may carry passwords


async def _drop_database(url: str) -> None:
    name = database_name(url)
    conn = await connect_maintenance(url)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
    finally:
        await conn.close()


async def _delete_keys(redis_url: str, prefix: str) -> int:
    redis = Redis.from_url(redis_url, socket_connect_timeout=5)
    try:
        deleted = 0
        batch: list[bytes] = []
        async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(await redis.delete(*batch))
                batch = []
        if batch:
            deleted += int(await redis.delete(*batch))
        return deleted
    finally:
        await redis.aclose()


def clean(data_dir: pathlib.Path, log: Log = print) -> None:
    """Drop what the record says ``make dev`` created; keep (and say so) the rest."""
    path = state_path(data_dir)
    if not path.exists():
        log("clean: no record of a make dev database; nothing dropped")
        return
    state = orjson.loads(path.read_bytes())
    url, name = state["database_url"], database_name(state["database_url"])
    prefix = state["key_prefix"]
    if not state.get("database_created"):
        log(
            f"clean: kept database {name} and its Redis keys {prefix}:* "
            "(they existed before make dev)"
        )
        return
    try:
        run_async(_drop_database(url))
        log(f"clean: dropped database {name} (created by make dev)")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        log(f"clean: could not drop database {name}: {exc}")
    try:
        deleted = run_async(_delete_keys(state["redis_url"], prefix))
        log(f"clean: deleted {deleted} Redis keys {prefix}:*")
    except Exception as exc:
        log(f"clean: could not delete Redis keys {prefix}:*: {exc}")


def main() -> None:
    from relaygate.dev.services import stop_local_services

    folder = data_dir()
    clean(folder)
    stop_local_services(folder)


if __name__ == "__main__":
    main()
