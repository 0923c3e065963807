"""The Redis wire outside the hot loop: where to connect (read from the URL by redis-py
itself), how an error reply maps to redis-py's exceptions, and how a command is packed.
Used by ``relaygate.redispipe`` and by config validation."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import hiredis
from redis import exceptions as rexc
from redis.asyncio import Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.connection import parse_url
from redis.exceptions import ConnectionError, DataError, RedisError

_pack_command = hiredis.pack_command


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where and how to connect; parsed once so reconnects are cheap."""

    host: str = "127.0.0.1"
    port: int = 6379
    path: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None
    # Built by redis-py from the URL's ``ssl_*`` arguments, so both clients verify alike.
    tls: ssl.SSLContext | None = None

    @property
    def where(self) -> str:
        """For error messages: never carries the credentials."""
        return self.path or f"{self.host}:{self.port}"


def parse_redis_url(url: str) -> RedisTarget:
    """Read a Redis URL exactly as the relay's pooled redis-py client will.

    The pool (``BlockingConnectionPool.from_url``) and this connection must never disagree on
    a URL: one that passes config has to work at start. So redis-py parses it
    (``redis://``, ``rediss://`` with its ``ssl_*`` query arguments, ``unix://``) and builds
    the connection object it would use: a query argument redis-py does not know fails here,
    as it would at the pool's first connect, and TLS gets the very ``SSLContext`` redis-py
    would build. Raises ValueError for a URL either client would refuse.
    """
    kwargs: dict[str, Any] = dict(parse_url(url))
    cls = kwargs.pop("connection_class", Connection)
    try:
        conn = cls(**kwargs)
    except TypeError as exc:  # an unknown query argument
        raise ValueError(f"redis URL has an unsupported argument: {exc}") from None
    except RedisError as exc:  # e.g. an invalid ssl_cert_reqs
        raise ValueError(f"redis URL: {exc}") from None
    context = None
    if isinstance(conn, SSLConnection):
        try:
            context = conn.ssl_context.get()
        except (OSError, ValueError) as exc:  # unreadable CA, cert or key file
            raise ValueError(f"redis TLS settings: {exc}") from None
    common: dict[str, Any] = {
        "db": int(conn.db),
        "username": conn.username,
        "password": conn.password,
    }
    if isinstance(conn, UnixDomainSocketConnection):
        if not conn.path:
            raise ValueError("unix redis URL needs a socket path")
        return RedisTarget(path=conn.path, **common)
    return RedisTarget(host=conn.host, port=int(conn.port), tls=context, **common)


# Error replies as redis-py's own parser maps them (its ``BaseParser.EXCEPTION_CLASSES``, a
# private table): callers catch NoScriptError, ReadOnlyError, ... whichever client replied.
# The cluster redirections (MOVED, ASK, ...) stay ResponseError, as in the redis-py releases
# that map them only in their cluster client: this connection does not follow them.
_ERROR_CLASSES: dict[str, type[RedisError]] = {
    "OOM": rexc.OutOfMemoryError,
    "WRONGPASS": rexc.AuthenticationError,
    "EXECABORT": rexc.ExecAbortError,
    "LOADING": rexc.BusyLoadingError,
    "NOSCRIPT": rexc.NoScriptError,
    "READONLY": rexc.ReadOnlyError,
    "NOAUTH": rexc.AuthenticationError,
    "NOPERM": rexc.NoPermissionError,
}
_ERR_MESSAGES: dict[str, type[RedisError]] = {
    # getattr: newer redis-py releases have a subclass of ConnectionError for it.
    "max number of clients reached": getattr(rexc, "MaxClientsReachedError", ConnectionError),
    "invalid password": rexc.AuthenticationError,
    "wrong number of arguments for 'auth' command": rexc.AuthenticationWrongNumberOfArgsError,
    "wrong number of arguments for 'AUTH' command": rexc.AuthenticationWrongNumberOfArgsError,
    # AUTH sent to a server without a password (Redis >= 6, then older ones).
    "AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?": rexc.AuthenticationError,
    "Client sent AUTH, but no password is set": rexc.AuthenticationError,
    "Error loading the extension. Please check the server logs.": rexc.ModuleError,
    "Error unloading module: no such module with that name": rexc.ModuleError,
    "Error unloading module: operation not possible.": rexc.ModuleError,
    "Error unloading module: the module exports one or more module-side data types, "
    "can't unload": rexc.ModuleError,
}


def reply_error(message: str) -> RedisError:
    """hiredis' ``replyError``: an error reply as the exception redis-py would raise, with the
    error code stripped from the message where redis-py strips it."""
    code, _, rest = message.partition(" ")
    if code == "ERR":
        return _ERR_MESSAGES.get(rest, rexc.ResponseError)(rest)
    cls = _ERROR_CLASSES.get(code)
    return rexc.ResponseError(message) if cls is None else cls(rest)


def pack(*args: Any) -> list[bytes]:
    """Encode one command, as redis-py's packer does for ``execute_command``: a first argument
    with spaces ("SCRIPT LOAD") is split into words, bytearray/memoryview are sent as bytes,
    and an argument Redis cannot take (None, bool, a dict, ...) raises DataError before
    anything is queued. The hot path calls hiredis directly and comes here only when that
    refuses or for a multi-word command."""
    cmd = args[0]
    head: tuple[Any, ...]
    if isinstance(cmd, str):
        head = tuple(cmd.split())
    elif isinstance(cmd, (bytes, bytearray, memoryview)):
        head = tuple(bytes(cmd).split())
    else:
        head = (cmd,)
    rest = tuple(bytes(a) if isinstance(a, (bytearray, memoryview)) else a for a in args[1:])
    try:
        return [_pack_command(head + rest)]
    except TypeError as exc:
        raise DataError(f"invalid redis command argument: {exc}") from None
