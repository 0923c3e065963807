"""Create the configured database when the server has it not yet.

A first deploy (``relaygate migrate``) and the dev stack both meet a PostgreSQL server that
runs but lacks the URL's database; the target database cannot be connected to before it
exists, so this goes through the server's maintenance database with the URL's credentials.
"""

from __future__ import annotations

import getpass
import os
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import asyncpg

CONNECT_TIMEOUT = 10.0


class BootstrapError(RuntimeError):
    """The database could not be checked or created; the message is one line."""


def database_name(url: str) -> str:
    """The URL's database with libpq's defaults: ``PGUSER`` or the OS user when absent."""
    parts = urlsplit(url)
    user = unquote(parts.username) if parts.username else None
    user = user or os.environ.get("PGUSER") or getpass.getuser()
    return unquote(parts.path.lstrip("/")) or user


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def connect_maintenance(url: str, connect_timeout: float = CONNECT_TIMEOUT) -> Any:
    """Connect to the ``postgres`` maintenance db (``template1`` if that was dropped)."""
    try:
        return await asyncpg.connect(with_database(url, "postgres"), timeout=connect_timeout)
    except asyncpg.InvalidCatalogNameError:
        return await asyncpg.connect(with_database(url, "template1"), timeout=connect_timeout)


async def ensure_database(url: str, connect_timeout: float = CONNECT_TIMEOUT) -> bool:
    """``CREATE DATABASE`` the URL's database unless it exists; True when this call made it.

    Idempotent and race-safe: a concurrent creator's duplicate error counts as "exists".
    """
    name = database_name(url)
    try:
        conn = await connect_maintenance(url, connect_timeout)
        try:
            if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                return False
            try:
                await conn.execute(f"CREATE DATABASE {quote_ident(name)}")
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                return False  # created concurrently by another process
            return True
        finally:
            await conn.close()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise BootstrapError(
            f"postgres: cannot ensure database {name} on {_hostport(url)}: {exc}"
        ) from None


def _hostport(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    host = f"[{host}]" if ":" in host else host
    try:
        port = parts.port or 5432
    except ValueError:
        return host
    return f"{host}:{port}"
