"""Fast tests for relaygate.dev.services: URL/port helpers, binary discovery, probing.

None of these start a server: the start path is exercised by hand / by `make dev` (it needs
initdb, a free port and seconds of time). The "reuse" tests talk to the machine's own Redis and
PostgreSQL when they answer on the default ports, and are skipped otherwise; the start
functions are patched to fail so a fresh machine can never get servers started by a unit test.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import socket
import stat
import subprocess
import threading
from collections.abc import Iterator

import pytest

from relaygate.dev import services
from relaygate.dev.services import apt, common, pgcluster, urls
from relaygate.dev.services import postgres as dpg
from relaygate.dev.services import redis as dredis
from relaygate.dev.services.common import DevStackError, Probe, ProbeResult
from relaygate.store import bootstrap

pytestmark = pytest.mark.unit

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/relaygate"


# --------------------------------------------------------------------------- helpers


def _exe(path: pathlib.Path, body: str = "exit 0") -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def _fake_pg_bindir(bindir: pathlib.Path, version: str) -> pathlib.Path:
    _exe(bindir / "pg_ctl", f'echo "pg_ctl (PostgreSQL) {version}"')
    _exe(bindir / "initdb")
    _exe(bindir / "postgres")
    return bindir


@contextlib.contextmanager
def _listener(reply: bytes) -> Iterator[int]:
    """A TCP server on 127.0.0.1 that answers every connection with ``reply`` and closes."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.recv(1024)
                conn.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(srv.getsockname()[1])
    finally:
        stop.set()
        thread.join(timeout=2)
        srv.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _no_start(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a unit test tried to start or install a server")

    for module in (dredis, dpg):
        monkeypatch.setattr(module, "INSTALL_SETTLE_TIMEOUT", 0.0)
    monkeypatch.setattr(dredis, "_start_redis", boom)
    monkeypatch.setattr(dpg, "_start_postgres", boom)
    monkeypatch.setattr(apt, "install", boom)
    for name in ("initdb", "pg_ctl_start"):
        monkeypatch.setattr(pgcluster, name, boom)


# --------------------------------------------------------------------------- URLs


def test_parse_redis_url_defaults_and_credentials() -> None:
    ep = urls.parse_redis_url("redis://127.0.0.1")
    assert (ep.host, ep.port, ep.username, ep.password, ep.database) == (
        "127.0.0.1",
        6379,
        None,
        None,
        "0",
    )
    ep = urls.parse_redis_url("redis://alice:p%40ss@localhost:7000/3")
    assert (ep.host, ep.port, ep.username, ep.password, ep.database) == (
        "localhost",
        7000,
        "alice",
        "p@ss",
        "3",
    )
    assert urls.parse_redis_url("redis://:secret@h/1").password == "secret"


def test_parse_postgres_url_follows_libpq_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGUSER", "envuser")
    ep = urls.parse_postgres_url("postgresql://127.0.0.1")
    assert (ep.host, ep.port, ep.username, ep.database) == ("127.0.0.1", 5432, "envuser", "envuser")
    ep = urls.parse_postgres_url("postgres://bob:pw@db.example:6543/my%20db?sslmode=disable")
    assert (ep.host, ep.port, ep.username, ep.password, ep.database) == (
        "db.example",
        6543,
        "bob",
        "pw",
        "my db",
    )
    assert urls.parse_postgres_url("postgresql:///x").host == "127.0.0.1"
    # The store layer's create-if-missing names the same database as the starter probes.
    for url in ("postgresql://127.0.0.1", "postgres://bob:pw@db.example:6543/my%20db"):
        assert bootstrap.database_name(url) == urls.parse_postgres_url(url).database


def test_bad_port_is_one_line_error() -> None:
    with pytest.raises(DevStackError, match="invalid port"):
        urls.parse_redis_url("redis://127.0.0.1:notaport/0")


@pytest.mark.parametrize(
    ("url", "port", "expected"),
    [
        ("redis://127.0.0.1:6379/0", 16379, "redis://127.0.0.1:16379/0"),
        ("redis://127.0.0.1/0", 7001, "redis://127.0.0.1:7001/0"),
        ("redis://:pw@localhost:6379/2", 5, "redis://:pw@localhost:5/2"),
        (
            "postgresql://u:p%3Aw@127.0.0.1:5432/db?sslmode=disable",
            15432,
            "postgresql://u:p%3Aw@127.0.0.1:15432/db?sslmode=disable",
        ),
        ("postgresql://[::1]:5432/db", 6000, "postgresql://[::1]:6000/db"),
        ("postgresql:///db", 6000, "postgresql://127.0.0.1:6000/db"),
    ],
)
def test_with_port_keeps_everything_else(url: str, port: int, expected: str) -> None:
    assert urls.with_port(url, port) == expected


def test_redact_hides_password() -> None:
    assert urls.redact("redis://u:secret@h:1/0") == "redis://u:***@h:1/0"
    assert urls.redact("redis://h:1/0") == "redis://h:1/0"


# --------------------------------------------------------------------------- hosts and ports


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("10.1.2.3", False),
        ("no-such-host.invalid", False),
    ],
)
def test_is_local_host(host: str, local: bool) -> None:
    assert urls.is_local_host(host) is local


def test_bind_address() -> None:
    assert urls.bind_address("localhost") == "127.0.0.1"
    assert urls.bind_address("[::1]") == "::1"
    assert urls.bind_address("127.0.0.5") == "127.0.0.5"


def test_choose_port_prefers_free_ports_in_order() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = int(taken.getsockname()[1])
        free = _free_port()
        assert not urls.port_is_free("127.0.0.1", busy)
        assert urls.port_is_free("127.0.0.1", free)
        assert urls.choose_port("127.0.0.1", [busy, None, free]) == free
        other = urls.choose_port("127.0.0.1", [busy, None, 0])
        assert other not in (busy, 0)
        assert urls.port_is_free("127.0.0.1", other)


# --------------------------------------------------------------------------- binaries


def test_find_binary_uses_path_then_extra_dirs(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    on_path = tmp_path / "bin"
    extra = tmp_path / "extra"
    _exe(on_path / "redis-server")
    _exe(extra / "runuser")
    (extra / "not-exec").write_text("x")
    monkeypatch.setenv("PATH", str(on_path))
    assert apt.find_binary("redis-server") == on_path / "redis-server"
    assert apt.find_binary("runuser") is None
    assert apt.find_binary("runuser", [extra]) == extra / "runuser"
    assert apt.find_binary("not-exec", [extra]) is None


def test_find_pg_tools_takes_highest_debian_version(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "usr-lib-postgresql"
    _fake_pg_bindir(root / "9.6" / "bin", "9.6.24")
    _fake_pg_bindir(root / "13" / "bin", "13.14")
    _fake_pg_bindir(root / "15" / "bin", "15.6")
    _exe(root / "17" / "bin" / "psql")  # client-only install: not a server bin dir
    monkeypatch.setattr(pgcluster, "PG_LIB_ROOT", root)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))

    tools = pgcluster.find_pg_tools()
    assert tools is not None
    assert (tools.version, tools.bindir) == ("15", root / "15" / "bin")
    assert tools.initdb == root / "15" / "bin" / "initdb"
    older = pgcluster.find_pg_tools("13")
    assert older is not None and older.bindir == root / "13" / "bin"
    ancient = pgcluster.find_pg_tools("9.6")
    assert ancient is not None and ancient.version == "9.6"
    assert pgcluster.find_pg_tools("16") is None


def test_find_pg_tools_prefers_path_and_resolves_symlinks(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _fake_pg_bindir(tmp_path / "opt" / "pg16" / "bin", "16.2")
    link_dir = tmp_path / "local-bin"
    link_dir.mkdir()
    (link_dir / "pg_ctl").symlink_to(real / "pg_ctl")  # only pg_ctl is linked, like Docker
    root = tmp_path / "usr-lib-postgresql"
    _fake_pg_bindir(root / "17" / "bin", "17.0")
    monkeypatch.setattr(pgcluster, "PG_LIB_ROOT", root)
    monkeypatch.setenv("PATH", str(link_dir))

    tools = pgcluster.find_pg_tools()
    assert tools is not None and (tools.version, tools.bindir) == ("16", real)
    newer = pgcluster.find_pg_tools("17")
    assert newer is not None and newer.bindir == root / "17" / "bin"


def test_find_pg_tools_none_when_missing(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgcluster, "PG_LIB_ROOT", tmp_path / "nothing")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert pgcluster.find_pg_tools() is None


def test_install_commands() -> None:
    root = apt.install_commands(["redis-server"], euid=0, sudo="/usr/bin/sudo")
    assert root == [
        ["env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "update"],
        [
            "env",
            "DEBIAN_FRONTEND=noninteractive",
            "apt-get",
            "install",
            "-y",
            "--no-install-recommends",
            "redis-server",
        ],
    ]
    user = apt.install_commands(["postgresql"], euid=1000, sudo="/usr/bin/sudo")
    assert user is not None and all(cmd[0] == "/usr/bin/sudo" for cmd in user)
    assert user[1][-1] == "postgresql"
    assert apt.install_commands(["postgresql"], euid=1000, sudo=None) is None


def test_install_without_rights_fails_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setattr(
        shutil, "which", lambda name: None if name == "sudo" else f"/usr/bin/{name}"
    )
    with pytest.raises(DevStackError) as info:
        apt.install("redis", ["redis-server"], "do it yourself", lambda s: None)
    assert "\n" not in str(info.value)
    assert "not root and no sudo" in str(info.value)


def test_as_pg_user_only_wraps_for_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert pgcluster.as_pg_user(["initdb", "-D", "x"]) == ["initdb", "-D", "x"]
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(
        apt, "find_binary", lambda name, extra=(): pathlib.Path(f"/usr/sbin/{name}")
    )
    assert pgcluster.as_pg_user(["initdb"]) == [
        "/usr/sbin/runuser",
        "-u",
        "postgres",
        "--",
        "initdb",
    ]


# --------------------------------------------------------------------------- probing


def test_probe_absent_port() -> None:
    port = _free_port()
    assert dredis.probe_redis("127.0.0.1", port).state is Probe.ABSENT
    assert dpg.probe_postgres(f"postgresql://postgres@127.0.0.1:{port}/x").state is (Probe.ABSENT)


def test_probe_foreign_listener() -> None:
    with _listener(b"HTTP/1.0 400 Bad Request\r\n\r\n") as port:
        res = dredis.probe_redis("127.0.0.1", port, timeout=1)
        assert res == ProbeResult(Probe.FOREIGN, "not a Redis server")
        res = dpg.probe_postgres(f"postgresql://postgres@127.0.0.1:{port}/x", timeout=1)
        assert res == ProbeResult(Probe.FOREIGN, "not a PostgreSQL server")


@pytest.mark.parametrize(
    ("reply", "state"),
    [
        (b"+PONG\r\n", Probe.USABLE),
        (b"-LOADING Redis is loading the dataset in memory\r\n", Probe.BUSY),
        (b"-NOAUTH Authentication required.\r\n", Probe.FOREIGN),
    ],
)
def test_probe_redis_reply_classification(reply: bytes, state: Probe) -> None:
    with _listener(reply) as port:
        assert dredis.probe_redis("127.0.0.1", port, timeout=1).state is state


def test_wait_usable_retries_only_given_states() -> None:
    seq = iter([Probe.ABSENT, Probe.BUSY, Probe.USABLE])
    res = common.wait_usable(lambda: ProbeResult(next(seq)), 5, (Probe.BUSY, Probe.ABSENT))
    assert res.state is Probe.USABLE
    # The default (initial probe) does not wait for a server that is not there at all.
    res = common.wait_usable(lambda: ProbeResult(Probe.ABSENT), 5)
    assert res.state is Probe.ABSENT


# --------------------------------------------------------------------------- ensure_* (no start)


@pytest.mark.parametrize("kind", ["redis", "postgres"])
def test_ensure_reuses_running_server(
    kind: str, tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The machine's own server answers: it is reused as is, nothing is created."""
    if kind == "redis":
        usable = dredis.probe_redis("127.0.0.1", 6379).state is Probe.USABLE
        url, ensure, port, folder = LOCAL_REDIS, dredis.ensure_redis, 6379, "redis"
    else:
        usable = dpg.probe_postgres(LOCAL_PG).state is Probe.USABLE
        url, ensure, port, folder = LOCAL_PG, dpg.ensure_postgres, 5432, "pg"
    if not usable:
        pytest.skip(f"no {kind} usable on 127.0.0.1:{port}")
    _no_start(monkeypatch)
    lines: list[str] = []
    assert ensure(url, tmp_path, lines.append) == url
    assert lines == [f"{kind}: reusing 127.0.0.1:{port}"]
    assert not (tmp_path / folder).exists()


def test_ensure_redis_refuses_remote_host(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_start(monkeypatch)
    with pytest.raises(DevStackError, match="not a local address"):
        dredis.ensure_redis("redis://no-such-host.invalid:6379/0", tmp_path, lambda s: None)


def test_ensure_postgres_refuses_remote_host(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_start(monkeypatch)
    with pytest.raises(DevStackError, match="not a local address"):
        dpg.ensure_postgres(
            "postgresql://postgres@no-such-host.invalid:5432/x", tmp_path, lambda s: None
        )


def test_ensure_redis_unix_socket_missing(tmp_path: pathlib.Path) -> None:
    with pytest.raises(DevStackError, match="unix socket"):
        dredis.ensure_redis(f"unix://{tmp_path}/nope.sock", tmp_path, lambda s: None)


# --------------------------------------------------------------------------- stop


def test_stop_local_services_on_empty_dir_is_noop(tmp_path: pathlib.Path) -> None:
    data_dir = tmp_path / ".relaygate"
    services.stop_local_services(data_dir)
    assert not data_dir.exists()


def test_stop_never_signals_unrelated_pid(tmp_path: pathlib.Path) -> None:
    """A stale pid file (reboot, container restart) may name an unrelated process now."""
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        rdir = tmp_path / "redis"
        rdir.mkdir()
        (rdir / "redis.pid").write_text(f"{sleeper.pid}\n")
        pg = tmp_path / "pg"
        pg.mkdir()
        (pg / "PG_VERSION").write_text("15\n")
        (pg / "postmaster.pid").write_text(f"{sleeper.pid}\n{pg}\n0\n15432\n")
        services.stop_local_services(tmp_path)
        assert sleeper.poll() is None
        assert not (rdir / "redis.pid").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_pid_running_checks_the_process_name() -> None:
    me = os.getpid()
    assert common.pid_running(me, "python") or common.pid_running(me, "pytest")
    assert not common.pid_running(me, "redis-server")
    assert not common.pid_running(0, "redis-server")


def test_ensure_redis_installs_missing_binary(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No redis-server anywhere: apt-get is attempted once, then a clear error (not a crash)."""
    _no_start(monkeypatch)
    calls: list[list[str]] = []
    monkeypatch.setattr(apt, "find_binary", lambda name, extra=(): None)
    monkeypatch.setattr(apt, "install", lambda what, pkgs, hint, log: calls.append(pkgs))
    url = f"redis://127.0.0.1:{_free_port()}/0"
    with pytest.raises(DevStackError, match="still not found after installing"):
        dredis.ensure_redis(url, tmp_path, lambda s: None)
    assert calls == [["redis-server"]]


def test_ensure_postgres_installs_missing_binaries_once(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _no_start(monkeypatch)
    calls: list[list[str]] = []
    monkeypatch.setattr(pgcluster, "find_pg_tools", lambda version=None: None)
    monkeypatch.setattr(apt, "install", lambda what, pkgs, hint, log: calls.append(pkgs))
    monkeypatch.setattr(pgcluster, "ensure_pg_system_user", lambda log: None)
    monkeypatch.setattr(
        pgcluster, "prepare_layout", lambda data_dir, log: pgcluster.PgLayout(data_dir)
    )
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/x"
    with pytest.raises(DevStackError, match="not found even after installing"):
        dpg.ensure_postgres(url, tmp_path, lambda s: None)
    assert calls == [["postgresql"]]
