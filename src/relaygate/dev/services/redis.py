"""Reuse a running Redis, or start a project-local ``redis-server`` daemon."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

from relaygate.dev.services import apt
from relaygate.dev.services.common import (
    INSTALL_SETTLE_TIMEOUT,
    PROBE_TIMEOUT,
    START_TIMEOUT,
    STARTING,
    STOP_TIMEOUT,
    DevStackError,
    Log,
    Probe,
    ProbeResult,
    connect,
    last_line,
    locked,
    pid_running,
    read_int,
    run_command,
    show,
    tail,
    wait_pid_gone,
    wait_usable,
)
from relaygate.dev.services.urls import (
    Endpoint,
    bind_address,
    choose_port,
    is_local_host,
    parse_redis_url,
    redact,
    with_port,
)


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
    conn = connect(host, port, timeout)
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


_REDIS_HINT = "point RELAYGATE_REDIS_URL at a running Redis"


def redis_dir(data_dir: pathlib.Path) -> pathlib.Path:
    return data_dir / "redis"


def _own_redis_pid(rdir: pathlib.Path) -> int | None:
    pid = read_int(rdir / "redis.pid")
    return pid if pid is not None and pid_running(pid, "redis-server") else None


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
    rdir = redis_dir(data_dir)

    def probe_at(port: int) -> ProbeResult:
        return probe_redis(ep.host, port, ep.username, ep.password)

    with locked(data_dir, "redis"):
        res = wait_usable(lambda: probe_at(ep.port), START_TIMEOUT)
        own_pid = _own_redis_pid(rdir)
        own_port = read_int(rdir / "port")
        if res.state is Probe.USABLE:
            mine = own_pid is not None and own_port == ep.port
            where = f"own server in {show(rdir)} on " if mine else ""
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
                own = wait_usable(lambda: probe_at(own_port), START_TIMEOUT)
                if own.state is Probe.USABLE:
                    log(f"redis: reusing own server in {show(rdir)} on {ep.host}:{own_port}")
                    return with_port(url, own_port)
            raise DevStackError(
                f"redis: own server (pid {own_pid}) in {show(rdir)} runs but is not usable "
                f"for {redact(url)}; stop it with `relaygate dev --stop` and retry"
            )
        if res.state is Probe.FOREIGN:
            log(f"redis: {ep.hostport} is taken ({res.detail}); using another port")

        binary = apt.find_binary("redis-server", [pathlib.Path("/usr/sbin")])
        if binary is None:
            apt.install("redis", ["redis-server"], _REDIS_HINT, log)
            # The package may have started its own service on the URL's port: fine, reuse it.
            res = wait_usable(lambda: probe_at(ep.port), INSTALL_SETTLE_TIMEOUT, STARTING)
            if res.state is Probe.USABLE:
                log(f"redis: reusing {ep.hostport} (started by the package)")
                return url
            binary = apt.find_binary("redis-server", [pathlib.Path("/usr/sbin")])
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
    bind = bind_address(ep.host)
    # Never share the URL's port with something that answered there (it may listen on
    # another address of the same name, e.g. ::1 for "localhost").
    port = choose_port(bind, [ep.port if res.state is Probe.ABSENT else None, last_port])
    rdir.mkdir(parents=True, exist_ok=True)
    logfile = rdir / "redis.log"
    cmd: list[str | os.PathLike[str]] = [
        binary,
        "--port",
        str(port),
        "--bind",
        bind,
        "--dir",
        rdir.resolve(),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--maxmemory-policy",
        "noeviction",
        "--daemonize",
        "yes",
        "--pidfile",
        (rdir / "redis.pid").resolve(),
        "--logfile",
        logfile.resolve(),
    ]
    if ep.password is not None:
        if ep.username and ep.username != "default":
            cmd += ["--user", ep.username, "on", f">{ep.password}", "~*", "&*", "+@all"]
        else:
            cmd += ["--requirepass", ep.password]
    code, out = run_command(cmd, cwd=str(rdir))
    if code != 0:
        detail = last_line(out) if out.strip() else tail(logfile)
        raise DevStackError(f"redis: redis-server failed to start on port {port}: {detail}")
    (rdir / "port").write_text(f"{port}\n")
    res = wait_usable(
        lambda: probe_redis(ep.host, port, ep.username, ep.password), START_TIMEOUT, STARTING
    )
    if res.state is not Probe.USABLE:
        raise DevStackError(
            f"redis: started redis-server on port {port} but it does not answer "
            f"({res.detail or res.state.value}); see {show(logfile)}: {tail(logfile)}"
        )
    log(f"redis: started own server in {show(rdir)} on {ep.host}:{port}")
    return url if port == ep.port else with_port(url, port)


def stop_redis(rdir: pathlib.Path) -> None:
    pid = _own_redis_pid(rdir)
    if pid is not None:
        # SIGTERM = orderly shutdown: the append-only file is flushed before exit.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        if not wait_pid_gone(pid, "redis-server", STOP_TIMEOUT):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            wait_pid_gone(pid, "redis-server", 5.0)
    with contextlib.suppress(FileNotFoundError):
        (rdir / "redis.pid").unlink()
