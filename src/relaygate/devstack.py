"""Local development services: reuse a running Redis / PostgreSQL, or start project-local ones.

Why this exists: ``make dev`` and ``make test`` must work on a fresh machine that may have no
Redis or PostgreSQL installed or running, without asking the developer to set anything up and
without touching services the machine already has. The rules, in order:

1. If the URL's server answers *and* accepts the URL's credentials, reuse it unchanged.
2. Otherwise start our own server under the project-local data directory (``.relaygate/``) on
   the URL's port, or on a free port when that one is taken by something we cannot use (another
   program, a server that rejects the credentials); the adjusted URL is returned.
3. Missing binaries are installed with ``apt-get`` (``sudo`` when not root); if that is not
   possible the error is one line saying what to do.

Servers started here are daemons that outlive the calling process, so the next run finds and
reuses them (or restarts them on the same data); :func:`stop_local_services` stops them and
touches nothing else: it only signals processes recorded in pid files inside ``data_dir``.

Errors are raised as :class:`DevStackError` whose message is one human-readable line.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import fcntl
import getpass
import grp
import hashlib
import ipaddress
import os
import pathlib
import pwd
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "DevStackError",
    "Endpoint",
    "PgTools",
    "Probe",
    "ProbeResult",
    "choose_port",
    "ensure_database",
    "ensure_postgres",
    "ensure_redis",
    "find_binary",
    "find_pg_tools",
    "install_commands",
    "is_local_host",
    "parse_postgres_url",
    "parse_redis_url",
    "port_is_free",
    "probe_postgres",
    "probe_redis",
    "stop_local_services",
    "with_port",
]

Log = Callable[[str], None]
T = TypeVar("T")

#: Where Debian/Ubuntu install versioned PostgreSQL binaries (not on PATH there).
PG_LIB_ROOT = pathlib.Path("/usr/lib/postgresql")
#: PostgreSQL refuses to run as root; as root we run initdb/pg_ctl as this system user.
PG_SYSTEM_USER = "postgres"
#: Fallback home for the PostgreSQL data when ``data_dir`` is not reachable by that user.
PG_FALLBACK_ROOT = pathlib.Path("/var/lib/relaygate")

DEFAULT_REDIS_PORT = 6379
DEFAULT_PG_PORT = 5432
PROBE_TIMEOUT = 2.0
START_TIMEOUT = 60.0
STOP_TIMEOUT = 60.0
# After apt-get install: how long the package's own service may take to answer.
INSTALL_SETTLE_TIMEOUT = 5.0
# sun_path is 108 bytes including the NUL; PostgreSQL also needs ".s.PGSQL.NNNNN.lock".
_SOCKET_PATH_MAX = 107
_PG_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


class DevStackError(RuntimeError):
    """A dev service could not be reused or started; the message is one actionable line."""


# --------------------------------------------------------------------------- URLs


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
        raise DevStackError(f"invalid port in URL {_redact(url)}") from None
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


def _with_path(url: str, path: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=path))


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{hostport}"))


# --------------------------------------------------------------------------- hosts and ports


def _strip_brackets(host: str) -> str:
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def is_local_host(host: str) -> bool:
    """True when ``host`` names this machine's loopback, i.e. a server we could start."""
    host = _strip_brackets(host)
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


def _bind_address(host: str) -> str:
    """The loopback IP our server listens on for a URL host that :func:`is_local_host` accepted."""
    host = _strip_brackets(host)
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


# --------------------------------------------------------------------------- probing


class Probe(enum.Enum):
    """What answers on a service address."""

    USABLE = "usable"  # the right kind of server, and it accepts our credentials
    BUSY = "busy"  # the right kind of server, still loading/starting
    FOREIGN = "foreign"  # something answers that we cannot use
    ABSENT = "absent"  # nothing listens


@dataclass(frozen=True, slots=True)
class ProbeResult:
    state: Probe
    detail: str = ""


def _connect(host: str, port: int, timeout: float) -> socket.socket | ProbeResult:
    try:
        return socket.create_connection((_strip_brackets(host), port), timeout=timeout)
    except TimeoutError:
        return ProbeResult(Probe.FOREIGN, "connect timed out")
    except OSError as exc:
        return ProbeResult(Probe.ABSENT, exc.strerror or str(exc))


def _resp(args: Sequence[str]) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _redis_roundtrip(sock: socket.socket, args: Sequence[str]) -> bytes:
    """Send one command, return the first reply line (b"" if the peer closed or stalled)."""
    buf = b""
    try:
        sock.sendall(_resp(args))
        while b"\r\n" not in buf and len(buf) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            buf += chunk
    except OSError:
        return b""
    return buf.partition(b"\r\n")[0]


def probe_redis(
    host: str,
    port: int,
    username: str | None = None,
    password: str | None = None,
    timeout: float = PROBE_TIMEOUT,
) -> ProbeResult:
    """TCP connect + (AUTH) + PING: is there a Redis here that this URL can use?

    Speaks raw RESP over a blocking socket so that no event loop or client library is needed
    and a non-Redis listener is recognised quickly (it does not answer ``+PONG``).
    """
    conn = _connect(host, port, timeout)
    if isinstance(conn, ProbeResult):
        return conn
    with conn:
        if password is not None:
            auth = ["AUTH", username, password] if username else ["AUTH", password]
            reply = _redis_roundtrip(conn, auth)
            if not reply.startswith(b"+OK"):
                if reply.startswith(b"-"):
                    msg = reply[1:].decode(errors="replace")
                    return ProbeResult(
                        Probe.FOREIGN, f"Redis rejected the URL's credentials: {msg}"
                    )
                return ProbeResult(Probe.FOREIGN, "not a Redis server")
        reply = _redis_roundtrip(conn, ["PING"])
    if reply.startswith(b"+PONG"):
        return ProbeResult(Probe.USABLE)
    if reply.startswith(b"-LOADING"):
        return ProbeResult(Probe.BUSY, "Redis is loading its dataset")
    if reply.startswith((b"-NOAUTH", b"-WRONGPASS")):
        return ProbeResult(Probe.FOREIGN, "Redis requires a password the URL does not give")
    if reply.startswith(b"-"):
        msg = reply[1:].decode(errors="replace")
        return ProbeResult(Probe.FOREIGN, f"Redis refused PING: {msg}")
    return ProbeResult(Probe.FOREIGN, "not a Redis server")


def _probe_redis_unix(path: str, timeout: float = PROBE_TIMEOUT) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            return _redis_roundtrip(sock, ["PING"]).startswith(b"+PONG")
    except OSError:
        return False


def _run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, even when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


async def _pg_connect_maintenance(url: str, connect_timeout: float) -> Any:
    """Connect to the ``postgres`` maintenance db (``template1`` if that was dropped).

    Probing the maintenance db, not the URL's, is deliberate: the target database may not
    exist yet, :func:`ensure_database` creates it.
    """
    import asyncpg

    try:
        return await asyncpg.connect(_with_path(url, "/postgres"), timeout=connect_timeout)
    except asyncpg.InvalidCatalogNameError:
        return await asyncpg.connect(_with_path(url, "/template1"), timeout=connect_timeout)


async def _pg_probe_login(url: str, connect_timeout: float) -> ProbeResult:
    import asyncpg

    try:
        conn = await _pg_connect_maintenance(url, connect_timeout)
    except asyncpg.CannotConnectNowError as exc:
        return ProbeResult(Probe.BUSY, str(exc))
    except asyncpg.PostgresError as exc:
        return ProbeResult(Probe.FOREIGN, f"PostgreSQL rejected the URL's login: {exc}")
    except (OSError, asyncpg.InterfaceError) as exc:
        return ProbeResult(Probe.FOREIGN, f"login failed: {exc or type(exc).__name__}")
    await conn.close()
    return ProbeResult(Probe.USABLE)


def probe_postgres(url: str, timeout: float = PROBE_TIMEOUT) -> ProbeResult:
    """Is there a PostgreSQL at the URL's address that accepts the URL's login?

    First a raw SSLRequest (any PostgreSQL answers one byte, ``S`` or ``N``, at once), which
    tells a foreign listener apart quickly; then a real asyncpg login.
    """
    ep = parse_postgres_url(url)
    conn = _connect(ep.host, ep.port, timeout)
    if isinstance(conn, ProbeResult):
        return conn
    with conn:
        try:
            conn.sendall(_PG_SSL_REQUEST)
            reply = conn.recv(1)
        except OSError:
            reply = b""
    if reply not in (b"S", b"N"):
        return ProbeResult(Probe.FOREIGN, "not a PostgreSQL server")
    return _run_async(_pg_probe_login(url, timeout))


def _wait_usable(
    probe: Callable[[], ProbeResult],
    timeout: float,
    retry: tuple[Probe, ...] = (Probe.BUSY,),
) -> ProbeResult:
    """Poll while the probe's state is in ``retry`` (a server still starting), at most
    ``timeout`` seconds; return the last result."""
    deadline = time.monotonic() + timeout
    while True:
        res = probe()
        if res.state not in retry or time.monotonic() >= deadline:
            return res
        time.sleep(0.2)


_STARTING = (Probe.BUSY, Probe.ABSENT)


# --------------------------------------------------------------------------- processes


def _pid_running(pid: int, name_hint: str) -> bool:
    """Whether ``pid`` is alive and (where /proc exists) is a ``name_hint`` process.

    The name check protects against pid reuse: after a reboot or in a container, the pid in an
    old pid file may belong to something unrelated that we must never signal. Zombies (empty
    cmdline) count as gone.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    proc = pathlib.Path(f"/proc/{pid}")
    if proc.is_dir():
        try:
            state = (proc / "stat").read_text().rpartition(")")[2].split()[0]
            cmdline = (proc / "cmdline").read_bytes()
            comm = (proc / "comm").read_text().strip()
        except (OSError, IndexError):
            return False
        if state in ("Z", "X"):
            return False
        return name_hint.encode() in cmdline or comm == name_hint[:15]
    return True


def _read_int(path: pathlib.Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _wait_pid_gone(pid: int, name_hint: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_running(pid, name_hint):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _run(
    cmd: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = START_TIMEOUT,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> tuple[int, str]:
    """Run a command, returning (exit code, combined output).

    Output goes to a temporary file rather than a pipe: daemons we start (redis-server,
    postgres via pg_ctl) could otherwise inherit the pipe and make us wait for them to exit.
    """
    with tempfile.TemporaryFile(mode="w+") as out:
        try:
            proc = subprocess.run(
                [os.fspath(c) for c in cmd],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env=env,
                cwd=cwd,
                check=False,
            )
        except FileNotFoundError as exc:
            return 127, str(exc)
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {timeout:.0f}s"
        out.seek(0)
        return proc.returncode, out.read()


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else "(no output)"


def _tail(path: pathlib.Path) -> str:
    try:
        return _last_line(path.read_text(errors="replace"))
    except OSError:
        return "(no log)"


def _show(path: pathlib.Path) -> str:
    """A path as the developer would type it: relative to the cwd when inside it."""
    try:
        return str(path.resolve().relative_to(pathlib.Path.cwd().resolve()))
    except ValueError:
        return str(path)


@contextlib.contextmanager
def _locked(data_dir: pathlib.Path, name: str) -> Iterator[None]:
    """Serialise ``ensure_*`` between processes (``make dev`` and ``make test`` at once)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with (data_dir / f".{name}.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --------------------------------------------------------------------------- binaries


def find_binary(name: str, extra_dirs: Iterable[pathlib.Path] = ()) -> pathlib.Path | None:
    """``name`` on PATH, else in one of ``extra_dirs`` (first hit wins)."""
    hit = shutil.which(name)
    if hit:
        return pathlib.Path(hit)
    for directory in extra_dirs:
        candidate = directory / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass(frozen=True, slots=True)
class PgTools:
    """One coherent PostgreSQL installation (initdb, pg_ctl and postgres from the same bin dir)."""

    bindir: pathlib.Path
    version: str  # major version as PG_VERSION spells it: "15", "9.6"

    @property
    def initdb(self) -> pathlib.Path:
        return self.bindir / "initdb"

    @property
    def pg_ctl(self) -> pathlib.Path:
        return self.bindir / "pg_ctl"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)) or (0,)


def _is_pg_bindir(path: pathlib.Path) -> bool:
    return all(os.access(path / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres"))


def _pg_major(bindir: pathlib.Path) -> str | None:
    code, out = _run([bindir / "pg_ctl", "--version"], timeout=10)
    match = re.search(r"(\d+)(?:\.(\d+))?", out) if code == 0 else None
    if not match:
        return None
    major = int(match.group(1))
    return str(major) if major >= 10 else f"{major}.{match.group(2) or 0}"


def find_pg_tools(version: str | None = None) -> PgTools | None:
    """A PostgreSQL bin dir: PATH first (resolving symlinks), then the highest
    ``/usr/lib/postgresql/*/bin`` (Debian keeps initdb/pg_ctl off PATH).

    With ``version`` only a matching major version qualifies, because an existing data
    directory can only be run by the major version that created it.
    """
    candidates: list[PgTools] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        bindir = pathlib.Path(on_path).resolve().parent
        if _is_pg_bindir(bindir):
            major = _pg_major(bindir)
            if major:
                candidates.append(PgTools(bindir, major))
    versioned = sorted(
        (d for d in PG_LIB_ROOT.glob("*") if _is_pg_bindir(d / "bin")),
        key=lambda d: _version_key(d.name),
        reverse=True,
    )
    candidates.extend(PgTools(d / "bin", d.name) for d in versioned)
    for tools in candidates:
        if version is None or tools.version == version:
            return tools
    return None


def install_commands(
    packages: Sequence[str], *, euid: int, sudo: str | None
) -> list[list[str]] | None:
    """The apt-get commands that install ``packages``, or None when we lack the rights.

    ``env DEBIAN_FRONTEND=...`` rather than an environment variable so it survives ``sudo``.
    """
    if euid == 0:
        prefix: list[str] = []
    elif sudo:
        prefix = [sudo]
    else:
        return None
    env = ["env", "DEBIAN_FRONTEND=noninteractive"]
    return [
        [*prefix, *env, "apt-get", "update"],
        [*prefix, *env, "apt-get", "install", "-y", "--no-install-recommends", *packages],
    ]


def _install(what: str, packages: Sequence[str], hint: str, log: Log) -> None:
    """Install Debian packages or fail with one line naming the manual alternative."""
    cmds = install_commands(packages, euid=os.geteuid(), sudo=shutil.which("sudo"))
    if shutil.which("apt-get") is None or cmds is None:
        why = "no apt-get" if shutil.which("apt-get") is None else "not root and no sudo"
        raise DevStackError(
            f"{what}: {', '.join(packages)} is not installed and cannot be installed "
            f"automatically ({why}); install it yourself or {hint}"
        )
    log(f"{what}: installing {' '.join(packages)} with apt-get (one-time)")
    for cmd in cmds:
        code, out = _run(cmd, timeout=1800)
        if code != 0:
            raise DevStackError(
                f"{what}: `{shlex.join(cmd)}` failed ({_last_line(out)}); "
                f"install {' '.join(packages)} yourself or {hint}"
            )


# --------------------------------------------------------------------------- Redis


_REDIS_HINT = "point RELAYGATE_REDIS_URL at a running Redis"


def _redis_dir(data_dir: pathlib.Path) -> pathlib.Path:
    return data_dir / "redis"


def _own_redis_pid(rdir: pathlib.Path) -> int | None:
    pid = _read_int(rdir / "redis.pid")
    return pid if pid is not None and _pid_running(pid, "redis-server") else None


def ensure_redis(url: str, data_dir: pathlib.Path, log: Log = print) -> str:
    """Return a Redis URL that works: ``url`` itself if its server answers, else our own.

    Our own server is a ``redis-server`` daemon with its data in ``<data_dir>/redis``,
    append-only with fsync every second and ``noeviction`` (the ledger counters must never be
    evicted). It listens on the URL's port, or on a free port (returned in the adjusted URL)
    when that port is taken by something that is not a usable Redis.
    """
    parts = urlsplit(url)
    if parts.scheme == "unix":
        if _probe_redis_unix(parts.path):
            log(f"redis: reusing {parts.path}")
            return url
        raise DevStackError(
            f"redis: nothing answers on unix socket {parts.path}; start it, or use a "
            "redis:// URL so a local server can be started"
        )
    ep = parse_redis_url(url)
    rdir = _redis_dir(data_dir)

    def probe_at(port: int) -> ProbeResult:
        return probe_redis(ep.host, port, ep.username, ep.password)

    with _locked(data_dir, "redis"):
        res = _wait_usable(lambda: probe_at(ep.port), START_TIMEOUT)
        own_pid = _own_redis_pid(rdir)
        own_port = _read_int(rdir / "port")
        if res.state is Probe.USABLE:
            mine = own_pid is not None and own_port == ep.port
            where = f"own server in {_show(rdir)} on " if mine else ""
            log(f"redis: reusing {where}{ep.hostport}")
            return url
        if parts.scheme != "redis":
            raise DevStackError(
                f"redis: {ep.hostport} is not usable ({res.detail}); only plain redis:// "
                f"servers can be started locally, so start it yourself or {_REDIS_HINT}"
            )
        if not is_local_host(ep.host):
            raise DevStackError(
                f"redis: {ep.hostport} is not usable ({res.detail}) and is not a local "
                f"address, so no server can be started for it; start it or {_REDIS_HINT}"
            )
        if own_pid is not None:
            # Our daemon runs (on a port adjusted in an earlier run): reuse it, never start a
            # second server on the same data directory.
            if own_port is not None and own_port != ep.port:
                own = _wait_usable(lambda: probe_at(own_port), START_TIMEOUT)
                if own.state is Probe.USABLE:
                    log(f"redis: reusing own server in {_show(rdir)} on {ep.host}:{own_port}")
                    return with_port(url, own_port)
            raise DevStackError(
                f"redis: own server (pid {own_pid}) in {_show(rdir)} runs but is not usable "
                f"for {_redact(url)}; stop it with `relaygate dev --stop` and retry"
            )
        if res.state is Probe.FOREIGN:
            log(f"redis: {ep.hostport} is taken ({res.detail}); using another port")

        binary = find_binary("redis-server", [pathlib.Path("/usr/sbin")])
        if binary is None:
            _install("redis", ["redis-server"], _REDIS_HINT, log)
            # The package may have started its own service on the URL's port: fine, reuse it.
            res = _wait_usable(lambda: probe_at(ep.port), INSTALL_SETTLE_TIMEOUT, _STARTING)
            if res.state is Probe.USABLE:
                log(f"redis: reusing {ep.hostport} (started by the package)")
                return url
            binary = find_binary("redis-server", [pathlib.Path("/usr/sbin")])
            if binary is None:
                raise DevStackError("redis: redis-server still not found after installing it")
        return _start_redis(binary, url, ep, res, rdir, own_port, log)


def _start_redis(
    binary: pathlib.Path,
    url: str,
    ep: Endpoint,
    res: ProbeResult,
    rdir: pathlib.Path,
    last_port: int | None,
    log: Log,
) -> str:
    bind = _bind_address(ep.host)
    # Never share the URL's port with something that answered there (it may listen on
    # another address of the same name, e.g. ::1 for "localhost").
    port = choose_port(bind, [ep.port if res.state is Probe.ABSENT else None, last_port])
    rdir.mkdir(parents=True, exist_ok=True)
    logfile = rdir / "redis.log"
    cmd: list[str | os.PathLike[str]] = [
        binary,
        "--port", str(port),
        "--bind", bind,
        "--dir", rdir.resolve(),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--maxmemory-policy", "noeviction",
        "--daemonize", "yes",
        "--pidfile", (rdir / "redis.pid").resolve(),
        "--logfile", logfile.resolve(),
    ]  # fmt: skip
    if ep.password is not None:
        if ep.username and ep.username != "default":
            cmd += ["--user", ep.username, "on", f">{ep.password}", "~*", "&*", "+@all"]
        else:
            cmd += ["--requirepass", ep.password]
    code, out = _run(cmd, cwd=str(rdir))
    if code != 0:
        detail = _last_line(out) if out.strip() else _tail(logfile)
        raise DevStackError(f"redis: redis-server failed to start on port {port}: {detail}")
    (rdir / "port").write_text(f"{port}\n")
    res = _wait_usable(
        lambda: probe_redis(ep.host, port, ep.username, ep.password), START_TIMEOUT, _STARTING
    )
    if res.state is not Probe.USABLE:
        raise DevStackError(
            f"redis: started redis-server on port {port} but it does not answer "
            f"({res.detail or res.state.value}); see {_show(logfile)}: {_tail(logfile)}"
        )
    log(f"redis: started own server in {_show(rdir)} on {ep.host}:{port}")
    return url if port == ep.port else with_port(url, port)


def _stop_redis(rdir: pathlib.Path) -> None:
    pid = _own_redis_pid(rdir)
    if pid is not None:
        # SIGTERM = orderly shutdown: the append-only file is flushed before exit.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not _wait_pid_gone(pid, "redis-server", STOP_TIMEOUT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_pid_gone(pid, "redis-server", 5.0)
    with contextlib.suppress(FileNotFoundError):
        (rdir / "redis.pid").unlink()


# --------------------------------------------------------------------------- PostgreSQL


_PG_HINT = "point RELAYGATE_DATABASE_URL at a running PostgreSQL"


@dataclass(frozen=True, slots=True)
class _PgLayout:
    base: pathlib.Path  # holds pg/ and pg-run/

    @property
    def data(self) -> pathlib.Path:  # PGDATA
        return self.base / "pg"

    @property
    def run(self) -> pathlib.Path:  # log, recorded port and (if short enough) the socket
        return self.base / "pg-run"

    @property
    def logfile(self) -> pathlib.Path:
        return self.run / "postgres.log"

    @property
    def portfile(self) -> pathlib.Path:
        return self.run / "port"

    def socket_dir(self) -> pathlib.Path:
        lock = self.run.resolve() / ".s.PGSQL.65535.lock"
        return self.run.resolve() if len(os.fsencode(lock)) < _SOCKET_PATH_MAX else _tmpdir()

    def initialised(self) -> bool:
        return (self.data / "PG_VERSION").is_file()

    def version(self) -> str | None:
        try:
            return (self.data / "PG_VERSION").read_text().strip()
        except OSError:
            return None


def _tmpdir() -> pathlib.Path:
    return pathlib.Path(tempfile.gettempdir())


def _fallback_layout(data_dir: pathlib.Path) -> _PgLayout:
    digest = hashlib.sha256(os.fsencode(data_dir.resolve())).hexdigest()[:12]
    return _PgLayout(PG_FALLBACK_ROOT / digest)


def _candidate_layouts(data_dir: pathlib.Path) -> list[_PgLayout]:
    return [_PgLayout(data_dir), _fallback_layout(data_dir)]


def _running_as_root() -> bool:
    return os.geteuid() == 0


def _as_pg_user(cmd: Sequence[str | os.PathLike[str]]) -> list[str]:
    """``cmd`` as the postgres system user when we are root (PostgreSQL refuses root)."""
    args = [os.fspath(c) for c in cmd]
    if not _running_as_root():
        return args
    sbin = [pathlib.Path("/usr/sbin"), pathlib.Path("/sbin")]
    runuser = find_binary("runuser", sbin)
    if runuser is not None:
        return [str(runuser), "-u", PG_SYSTEM_USER, "--", *args]
    su = find_binary("su", [pathlib.Path("/bin"), pathlib.Path("/usr/bin")])
    if su is not None:
        return [str(su), "-s", "/bin/sh", PG_SYSTEM_USER, "-c", shlex.join(args)]
    raise DevStackError("postgres: running as root but neither runuser nor su is available")


def _ensure_pg_system_user(log: Log) -> None:
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
        return
    except KeyError:
        pass
    useradd = find_binary("useradd", [pathlib.Path("/usr/sbin"), pathlib.Path("/sbin")])
    if useradd is None:
        raise DevStackError(
            f"postgres: running as root, no '{PG_SYSTEM_USER}' user and no useradd to create it"
        )
    try:
        grp.getgrnam(PG_SYSTEM_USER)
        group = ["-g", PG_SYSTEM_USER]
    except KeyError:
        group = ["--user-group"]
    cmd = [
        str(useradd), "--system", *group, "--no-create-home",
        "--home-dir", "/var/lib/postgresql", "--shell", "/bin/sh", PG_SYSTEM_USER,
    ]  # fmt: skip
    code, out = _run(cmd, timeout=30)
    if code != 0:
        raise DevStackError(f"postgres: could not create user {PG_SYSTEM_USER}: {_last_line(out)}")
    log(f"postgres: created system user {PG_SYSTEM_USER} (PostgreSQL refuses to run as root)")


def _pg_user_can_write(directory: pathlib.Path) -> bool:
    code, _ = _run(_as_pg_user(["test", "-w", str(directory.resolve())]), timeout=10)
    return code == 0


def _chown_tree(path: pathlib.Path, uid: int, gid: int) -> None:
    if path.stat().st_uid == uid:
        return
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def _prepare_layout(data_dir: pathlib.Path, log: Log) -> _PgLayout:
    """Pick where PGDATA lives and make it ours (or the postgres user's when we are root).

    ``<data_dir>/pg`` normally. As root, a project under e.g. ``/root`` (mode 700) is not
    reachable by the postgres user, so then a per-project directory under /var/lib/relaygate is
    used instead (derived from the resolved data_dir, so every run finds the same one).
    """
    primary, fallback = _candidate_layouts(data_dir)
    chosen = primary
    if fallback.initialised() and not primary.initialised():
        chosen = fallback
    for directory in (chosen.data, chosen.run):
        directory.mkdir(parents=True, exist_ok=True)
    if _running_as_root():
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        for directory in (chosen.data, chosen.run):
            _chown_tree(directory, entry.pw_uid, entry.pw_gid)
        if chosen is primary and not _pg_user_can_write(primary.data):
            log(
                f"postgres: {_show(data_dir)} is not reachable by user {PG_SYSTEM_USER}; "
                f"keeping the data in {fallback.base}"
            )
            chosen = fallback
            for directory in (chosen.data, chosen.run):
                directory.mkdir(parents=True, exist_ok=True)
                _chown_tree(directory, entry.pw_uid, entry.pw_gid)
    os.chmod(chosen.data, 0o700)
    return chosen


def _pg_running(layout: _PgLayout) -> tuple[int, int] | None:
    """(pid, port) of the postmaster running on this data dir, from ``postmaster.pid``."""
    try:
        lines = (layout.data / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    return (pid, port) if _pid_running(pid, "postgres") else None


def _pg_tools_for(layout: _PgLayout, log: Log, may_install: bool) -> PgTools:
    """Binaries able to run this cluster: the same major version that initialised it."""
    version = layout.version()
    tools = find_pg_tools(version)
    if tools is not None:
        return tools
    if may_install and find_pg_tools() is None:
        _install("postgres", ["postgresql"], _PG_HINT, log)
        tools = find_pg_tools(version)
        if tools is not None:
            return tools
    if version is None:
        raise DevStackError("postgres: initdb/pg_ctl not found even after installing postgresql")
    raise DevStackError(
        f"postgres: {_show(layout.data)} was created by PostgreSQL {version} but those "
        f"binaries are not installed; install postgresql-{version} or delete the directory"
    )


def _superuser_url(bind: str, port: int) -> str:
    host = f"[{bind}]" if ":" in bind else bind
    return f"postgresql://{PG_SYSTEM_USER}@{host}:{port}/postgres"


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _ensure_role(admin_url: str, user: str, password: str | None) -> bool:
    """Create the URL's login role on our own server (initdb only made ``postgres``)."""
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=PROBE_TIMEOUT * 5)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user):
            return False
        sql = f"CREATE ROLE {_quote_ident(user)} LOGIN SUPERUSER"
        if password is not None:
            sql += f" PASSWORD {_quote_literal(password)}"
        await conn.execute(sql)
        return True
    finally:
        await conn.close()


def ensure_postgres(url: str, data_dir: pathlib.Path, log: Log = print) -> str:
    """Return a PostgreSQL URL that works: ``url`` itself if its server lets us in, else our own.

    Our own server keeps its cluster in ``<data_dir>/pg`` (initdb ``--auth=trust -U postgres``,
    run once; later runs just start it again), listens on the URL's host and port (or a free
    port when that one is taken by something we cannot log in to), and has a superuser role
    for the URL's user. The database itself is created by :func:`ensure_database`.
    """
    ep = parse_postgres_url(url)
    with _locked(data_dir, "postgres"):
        res = _wait_usable(lambda: probe_postgres(url), START_TIMEOUT)
        if res.state is Probe.USABLE:
            mine = next(
                (
                    lay
                    for lay in _candidate_layouts(data_dir)
                    if (run := _pg_running(lay)) is not None and run[1] == ep.port
                ),
                None,
            )
            where = f"own server in {_show(mine.data)} on " if mine else ""
            log(f"postgres: reusing {where}{ep.hostport}")
            return url
        if not is_local_host(ep.host):
            raise DevStackError(
                f"postgres: {ep.hostport} is not usable ({res.detail}) and is not a local "
                f"address, so no server can be started for it; start it or {_PG_HINT}"
            )
        may_install = True
        if not any(lay.initialised() for lay in _candidate_layouts(data_dir)) and (
            find_pg_tools() is None
        ):
            _install("postgres", ["postgresql"], _PG_HINT, log)
            may_install = False
            # The package may have started its own cluster: reuse it if it lets us in (a
            # stock Debian cluster wants a password over TCP, so usually it will not).
            res = _wait_usable(lambda: probe_postgres(url), INSTALL_SETTLE_TIMEOUT, _STARTING)
            if res.state is Probe.USABLE:
                log(f"postgres: reusing {ep.hostport} (started by the package)")
                return url
        if _running_as_root():
            _ensure_pg_system_user(log)
        layout = _prepare_layout(data_dir, log)
        tools = _pg_tools_for(layout, log, may_install)
        return _start_postgres(url, ep, res, layout, tools, log)


def _start_postgres(
    url: str, ep: Endpoint, res: ProbeResult, layout: _PgLayout, tools: PgTools, log: Log
) -> str:
    bind = _bind_address(ep.host)
    running = _pg_running(layout)
    if running is not None:
        port = running[1]
        log(f"postgres: reusing own server in {_show(layout.data)} on {ep.host}:{port}")
    else:
        if res.state is Probe.FOREIGN:
            log(f"postgres: {ep.hostport} is taken ({res.detail}); using another port")
        if not layout.initialised():
            _initdb(layout, tools, log)
        wanted = ep.port if res.state is Probe.ABSENT else None
        port = choose_port(bind, [wanted, _read_int(layout.portfile)])
        _pg_ctl_start(layout, tools, bind, port)
        layout.portfile.write_text(f"{port}\n")
    admin = _superuser_url(bind, port)
    ready = _wait_usable(lambda: probe_postgres(admin), START_TIMEOUT, _STARTING)
    if ready.state is not Probe.USABLE:
        raise DevStackError(
            f"postgres: own server on port {port} does not answer ({ready.detail or 'timeout'});"
            f" see {_show(layout.logfile)}: {_tail(layout.logfile)}"
        )
    if (
        ep.username
        and ep.username != PG_SYSTEM_USER
        and _run_async(_ensure_role(admin, ep.username, ep.password))
    ):
        log(f"postgres: created superuser role {ep.username}")
    final = url if port == ep.port else with_port(url, port)
    check = probe_postgres(final)
    if check.state is not Probe.USABLE:
        raise DevStackError(f"postgres: own server on port {port} rejects the URL: {check.detail}")
    if running is None:
        log(f"postgres: started own server in {_show(layout.data)} on {ep.host}:{port}")
    return final


def _initdb(layout: _PgLayout, tools: PgTools, log: Log) -> None:
    if any(layout.data.iterdir()):
        raise DevStackError(
            f"postgres: {_show(layout.data)} is not empty but holds no cluster "
            "(interrupted initdb?); delete it and retry"
        )
    cmd = _as_pg_user([
        tools.initdb, "-D", layout.data.resolve(), "--auth=trust", "-U", PG_SYSTEM_USER,
        "--encoding=UTF8", "--locale=C",
    ])  # fmt: skip
    code, out = _run(cmd, cwd="/", timeout=300)
    if code != 0:
        raise DevStackError(f"postgres: initdb failed: {_last_line(out)}")
    log(f"postgres: initialised cluster in {_show(layout.data)} (PostgreSQL {tools.version})")


def _pg_ctl_start(layout: _PgLayout, tools: PgTools, bind: str, port: int) -> None:
    pidfile = layout.data / "postmaster.pid"
    if pidfile.exists() and _pg_running(layout) is None:
        # Left behind by a crash or reboot; its pid may now belong to another process,
        # which would make the postmaster refuse to start.
        pidfile.unlink()
    opts = shlex.join([
        "-p", str(port), "-k", str(layout.socket_dir()), "-c", f"listen_addresses={bind}",
    ])  # fmt: skip
    cmd = _as_pg_user([
        tools.pg_ctl, "-D", layout.data.resolve(), "-l", layout.logfile.resolve(),
        "-w", "-t", str(int(START_TIMEOUT)), "-o", opts, "start",
    ])  # fmt: skip
    code, out = _run(cmd, cwd="/", timeout=START_TIMEOUT + 10)
    if code != 0:
        raise DevStackError(
            f"postgres: pg_ctl start failed on port {port}: {_last_line(out)}; "
            f"see {_show(layout.logfile)}: {_tail(layout.logfile)}"
        )


def _stop_postgres(layout: _PgLayout) -> None:
    running = _pg_running(layout)
    if running is None:
        return
    pid = running[0]
    tools = find_pg_tools(layout.version())
    if tools is not None:
        cmd = _as_pg_user([
            tools.pg_ctl, "-D", layout.data.resolve(), "-m", "fast", "-w",
            "-t", str(int(STOP_TIMEOUT)), "stop",
        ])  # fmt: skip
        _run(cmd, cwd="/", timeout=STOP_TIMEOUT + 10)
    if _pid_running(pid, "postgres"):
        # No pg_ctl (or it failed): SIGINT is PostgreSQL's "fast shutdown".
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        if not _wait_pid_gone(pid, "postgres", STOP_TIMEOUT):
            raise DevStackError(f"postgres: server pid {pid} did not stop")


def ensure_database(url: str, log: Log = print) -> None:
    """``CREATE DATABASE`` the URL's database unless it exists (idempotent, race-safe).

    Connects to the ``postgres`` maintenance database of the same server with the URL's
    credentials, because the target database cannot be connected to before it exists.
    """
    import asyncpg

    ep = parse_postgres_url(url)

    async def create() -> bool:
        conn = await _pg_connect_maintenance(url, PROBE_TIMEOUT * 5)
        try:
            if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", ep.database):
                return False
            try:
                await conn.execute(f"CREATE DATABASE {_quote_ident(ep.database)}")
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                return False  # created concurrently by another process
            return True
        finally:
            await conn.close()

    try:
        created = _run_async(create())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise DevStackError(
            f"postgres: cannot ensure database {ep.database} on {ep.hostport}: {exc}"
        ) from None
    log(f"postgres: {'created' if created else 'found'} database {ep.database}")


# --------------------------------------------------------------------------- stop


def stop_local_services(data_dir: pathlib.Path) -> None:
    """Stop the Redis and PostgreSQL servers that ``ensure_*`` started for ``data_dir``.

    Only processes named in pid files inside our own directories are signalled (after checking
    that the pid still is redis-server/postgres), so services the machine runs itself, or that
    ``ensure_*`` merely reused, are never touched. Data is kept; deleting it is the caller's
    choice (``make clean``).
    """
    errors: list[str] = []
    try:
        _stop_redis(_redis_dir(data_dir))
    except (OSError, DevStackError) as exc:
        errors.append(str(exc))
    for layout in _candidate_layouts(data_dir):
        try:
            _stop_postgres(layout)
        except (OSError, DevStackError) as exc:
            errors.append(str(exc))
    if errors:
        raise DevStackError("; ".join(errors))
