"""Our own PostgreSQL cluster: binaries, where PGDATA lives, initdb, pg_ctl start and stop.

PostgreSQL refuses to run as root, so as root every command runs as the ``postgres`` system
user, created when missing.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pathlib
import pwd
import re
import shlex
import shutil
import signal
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass

from relaygate.dev.services import apt
from relaygate.dev.services.common import (
    START_TIMEOUT,
    STOP_TIMEOUT,
    DevStackError,
    Log,
    last_line,
    pid_running,
    run_command,
    show,
    tail,
    wait_pid_gone,
)

#: Where Debian/Ubuntu install versioned PostgreSQL binaries (not on PATH there).
PG_LIB_ROOT = pathlib.Path("/usr/lib/postgresql")
#: PostgreSQL refuses to run as root; as root we run initdb/pg_ctl as this system user.
PG_SYSTEM_USER = "postgres"
#: Fallback home for the PostgreSQL data when ``data_dir`` is not reachable by that user.
PG_FALLBACK_ROOT = pathlib.Path("/var/lib/relaygate")
# sun_path is 108 bytes including the NUL; PostgreSQL also needs ".s.PGSQL.NNNNN.lock".
_SOCKET_PATH_MAX = 107

PG_HINT = "point RELAYGATE_DATABASE_URL at a running PostgreSQL"


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
    code, out = run_command([bindir / "pg_ctl", "--version"], timeout=10)
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


@dataclass(frozen=True, slots=True)
class PgLayout:
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


def _fallback_layout(data_dir: pathlib.Path) -> PgLayout:
    digest = hashlib.sha256(os.fsencode(data_dir.resolve())).hexdigest()[:12]
    return PgLayout(PG_FALLBACK_ROOT / digest)


def candidate_layouts(data_dir: pathlib.Path) -> list[PgLayout]:
    return [PgLayout(data_dir), _fallback_layout(data_dir)]


def running_as_root() -> bool:
    return os.geteuid() == 0


def as_pg_user(cmd: Sequence[str | os.PathLike[str]]) -> list[str]:
    """``cmd`` as the postgres system user when we are root (PostgreSQL refuses root)."""
    args = [os.fspath(c) for c in cmd]
    if not running_as_root():
        return args
    sbin = [pathlib.Path("/usr/sbin"), pathlib.Path("/sbin")]
    runuser = apt.find_binary("runuser", sbin)
    if runuser is not None:
        return [str(runuser), "-u", PG_SYSTEM_USER, "--", *args]
    su = apt.find_binary("su", [pathlib.Path("/bin"), pathlib.Path("/usr/bin")])
    if su is not None:
        return [str(su), "-s", "/bin/sh", PG_SYSTEM_USER, "-c", shlex.join(args)]
    raise DevStackError("postgres: running as root but neither runuser nor su is available")


def ensure_pg_system_user(log: Log) -> None:
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
        return
    except KeyError:
        pass
    useradd = apt.find_binary("useradd", [pathlib.Path("/usr/sbin"), pathlib.Path("/sbin")])
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
        str(useradd),
        "--system",
        *group,
        "--no-create-home",
        "--home-dir",
        "/var/lib/postgresql",
        "--shell",
        "/bin/sh",
        PG_SYSTEM_USER,
    ]
    code, out = run_command(cmd, timeout=30)
    if code != 0:
        raise DevStackError(f"postgres: could not create user {PG_SYSTEM_USER}: {last_line(out)}")
    log(f"postgres: created system user {PG_SYSTEM_USER} (PostgreSQL refuses to run as root)")


def _pg_user_can_write(directory: pathlib.Path) -> bool:
    code, _ = run_command(as_pg_user(["test", "-w", str(directory.resolve())]), timeout=10)
    return code == 0


def _chown_tree(path: pathlib.Path, uid: int, gid: int) -> None:
    if path.stat().st_uid == uid:
        return
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def prepare_layout(data_dir: pathlib.Path, log: Log) -> PgLayout:
    """Pick where PGDATA lives and make it ours (or the postgres user's when we are root).

    ``<data_dir>/pg`` normally. As root, a project under e.g. ``/root`` (mode 700) is not
    reachable by the postgres user, so then a per-project directory under /var/lib/relaygate is
    used instead (derived from the resolved data_dir, so every run finds the same one).
    """
    primary, fallback = candidate_layouts(data_dir)
    chosen = primary
    if fallback.initialised() and not primary.initialised():
        chosen = fallback
    for directory in (chosen.data, chosen.run):
        directory.mkdir(parents=True, exist_ok=True)
    if running_as_root():
        entry = pwd.getpwnam(PG_SYSTEM_USER)
        for directory in (chosen.data, chosen.run):
            _chown_tree(directory, entry.pw_uid, entry.pw_gid)
        if chosen is primary and not _pg_user_can_write(primary.data):
            log(
                f"postgres: {show(data_dir)} is not reachable by user {PG_SYSTEM_USER}; "
                f"keeping the data in {fallback.base}"
            )
            chosen = fallback
            for directory in (chosen.data, chosen.run):
                directory.mkdir(parents=True, exist_ok=True)
                _chown_tree(directory, entry.pw_uid, entry.pw_gid)
    os.chmod(chosen.data, 0o700)
    return chosen


def pg_running(layout: PgLayout) -> tuple[int, int] | None:
    """(pid, port) of the postmaster running on this data dir, from ``postmaster.pid``."""
    try:
        lines = (layout.data / "postmaster.pid").read_text().splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    return (pid, port) if pid_running(pid, "postgres") else None


def pg_tools_for(layout: PgLayout, log: Log, may_install: bool) -> PgTools:
    """Binaries able to run this cluster: the same major version that initialised it."""
    version = layout.version()
    tools = find_pg_tools(version)
    if tools is not None:
        return tools
    if may_install and find_pg_tools() is None:
        apt.install("postgres", ["postgresql"], PG_HINT, log)
        tools = find_pg_tools(version)
        if tools is not None:
            return tools
    if version is None:
        raise DevStackError("postgres: initdb/pg_ctl not found even after installing postgresql")
    raise DevStackError(
        f"postgres: {show(layout.data)} was created by PostgreSQL {version} but those "
        f"binaries are not installed; install postgresql-{version} or delete the directory"
    )


def initdb(layout: PgLayout, tools: PgTools, log: Log) -> None:
    if any(layout.data.iterdir()):
        raise DevStackError(
            f"postgres: {show(layout.data)} is not empty but holds no cluster "
            "(interrupted initdb?); delete it and retry"
        )
    cmd = as_pg_user(
        [
            tools.initdb,
            "-D",
            layout.data.resolve(),
            "--auth=trust",
            "-U",
            PG_SYSTEM_USER,
            "--encoding=UTF8",
            "--locale=C",
        ]
    )
    code, out = run_command(cmd, cwd="/", timeout=300)
    if code != 0:
        raise DevStackError(f"postgres: initdb failed: {last_line(out)}")
    log(f"postgres: initialised cluster in {show(layout.data)} (PostgreSQL {tools.version})")


def pg_ctl_start(layout: PgLayout, tools: PgTools, bind: str, port: int) -> None:
    pidfile = layout.data / "postmaster.pid"
    if pidfile.exists() and pg_running(layout) is None:
        # Left behind by a crash or reboot; its pid may now belong to another process,
        # which would make the postmaster refuse to start.
        pidfile.unlink()
    opts = shlex.join(
        [
            "-p",
            str(port),
            "-k",
            str(layout.socket_dir()),
            "-c",
            f"listen_addresses={bind}",
        ]
    )
    cmd = as_pg_user(
        [
            tools.pg_ctl,
            "-D",
            layout.data.resolve(),
            "-l",
            layout.logfile.resolve(),
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "-o",
            opts,
            "start",
        ]
    )
    code, out = run_command(cmd, cwd="/", timeout=START_TIMEOUT + 10)
    if code != 0:
        raise DevStackError(
            f"postgres: pg_ctl start failed on port {port}: {last_line(out)}; "
            f"see {show(layout.logfile)}: {tail(layout.logfile)}"
        )


def stop_postgres(layout: PgLayout) -> None:
    running = pg_running(layout)
    if running is None:
        return
    pid = running[0]
    tools = find_pg_tools(layout.version())
    if tools is not None:
        cmd = as_pg_user(
            [
                tools.pg_ctl,
                "-D",
                layout.data.resolve(),
                "-m",
                "fast",
                "-w",
                "-t",
                str(int(STOP_TIMEOUT)),
                "stop",
            ]
        )
        run_command(cmd, cwd="/", timeout=STOP_TIMEOUT + 10)
    if pid_running(pid, "postgres"):
        # No pg_ctl (or it failed): SIGINT is PostgreSQL's "fast shutdown".
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        if not wait_pid_gone(pid, "postgres", STOP_TIMEOUT):
            raise DevStackError(f"postgres: server pid {pid} did not stop")
