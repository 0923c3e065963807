"""Service URLs as the starters need them: host, port, credentials; and local ports.

Kept free of the rest of the package so that every starter module can use it.
"""

from __future__ import annotations

import contextlib
import getpass
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from relaygate.dev.services.common import DevStackError, strip_brackets

DEFAULT_REDIS_PORT = 6379
DEFAULT_PG_PORT = 5432


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What we need from a service URL to probe it and, if needed, start a server for it."""

    host: str
    port: int
    username: str | None
    password: str | None
    database: str

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def _split_port(url: str, default: int) -> tuple[str, int]:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise DevStackError(f"invalid port in URL {redact(url)}") from None
    return parts.hostname or "127.0.0.1", port or default


def parse_redis_url(url: str) -> Endpoint:
    """Host, port, credentials and db index of a ``redis://`` / ``rediss://`` URL.

    A missing host means 127.0.0.1 and a missing port 6379, as redis-py assumes.
    """
    parts = urlsplit(url)
    host, port = _split_port(url, DEFAULT_REDIS_PORT)
    db = parts.path.lstrip("/") or "0"
    return Endpoint(
        host=host,
        port=port,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=db,
    )


def parse_postgres_url(url: str) -> Endpoint:
    """Host, port, user, password and database name of a ``postgresql://`` URL.

    Defaults follow libpq/asyncpg so that we probe what the application will connect to:
    user = ``PGUSER`` or the OS user, database = the user name. A host-less URL (which libpq
    would send to a Unix socket) is treated as 127.0.0.1 because our own server listens on TCP.
    """
    parts = urlsplit(url)
    host, port = _split_port(url, DEFAULT_PG_PORT)
    user = unquote(parts.username) if parts.username else None
    user = user or os.environ.get("PGUSER") or getpass.getuser()
    database = unquote(parts.path.lstrip("/")) or user
    return Endpoint(
        host=host,
        port=port,
        username=user,
        password=unquote(parts.password) if parts.password is not None else None,
        database=database,
    )


def with_port(url: str, port: int) -> str:
    """The URL with its port replaced (credentials, path and query kept verbatim).

    Used when the wanted port is taken and our own server had to go elsewhere.
    """
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if hostport.startswith("["):
        host = hostport[: hostport.index("]") + 1]
    else:
        host = hostport.partition(":")[0]
    netloc = f"{userinfo}{at}{host or '127.0.0.1'}:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


def with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


# --------------------------------------------------------------------------- hosts and ports


def is_local_host(host: str) -> bool:
    """True when ``host`` names this machine's loopback, i.e. a server we could start."""
    host = strip_brackets(host)
    if host in ("", "localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    addrs = {str(info[4][0]).partition("%")[0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(a).is_loopback for a in addrs)


def bind_address(host: str) -> str:
    """The loopback IP our server listens on for a URL host that :func:`is_local_host` accepted."""
    host = strip_brackets(host)
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if host not in ("", "localhost"):
        with contextlib.suppress(OSError):
            for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP):
                addr = str(info[4][0]).partition("%")[0]
                if ipaddress.ip_address(addr).version == 4:
                    return addr
    return "127.0.0.1"


def _family(addr: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def port_is_free(addr: str, port: int) -> bool:
    """Whether a server could listen on ``addr:port`` right now (bind test, no listen)."""
    with socket.socket(_family(addr), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((addr, port))
        except OSError:
            return False
    return True


def choose_port(addr: str, preferred: Iterable[int | None]) -> int:
    """The first free port of ``preferred`` (skipping None/0), else one the kernel picks.

    Preferring the URL's port keeps URLs unchanged; preferring the last port we used keeps an
    adjusted URL stable between runs.
    """
    for port in preferred:
        if port and port_is_free(addr, port):
            return port
    with socket.socket(_family(addr), socket.SOCK_STREAM) as sock:
        sock.bind((addr, 0))
        return int(sock.getsockname()[1])
