"""Reuse a running PostgreSQL, or start our own cluster (pgcluster) and give it the URL's role."""

from __future__ import annotations

import pathlib
import struct

from relaygate.dev.services import apt, pgcluster
from relaygate.dev.services.common import (
    INSTALL_SETTLE_TIMEOUT,
    PROBE_TIMEOUT,
    START_TIMEOUT,
    STARTING,
    DevStackError,
    Log,
    Probe,
    ProbeResult,
    connect,
    locked,
    read_int,
    run_async,
    show,
    tail,
    wait_usable,
)
from relaygate.dev.services.pgcluster import PG_HINT, PG_SYSTEM_USER, PgLayout, PgTools
from relaygate.dev.services.urls import (
    Endpoint,
    bind_address,
    choose_port,
    is_local_host,
    parse_postgres_url,
    with_port,
)
from relaygate.store.bootstrap import connect_maintenance, quote_ident

_PG_SSL_REQUEST = struct.pack("!ii", 8, 80877103)


async def _pg_probe_login(url: str, connect_timeout: float) -> ProbeResult:
    """Log in to the server's maintenance db, not the URL's: the URL's database may not
    exist yet (``ensure_database`` creates it)."""
    import asyncpg

    try:
        conn = await connect_maintenance(url, connect_timeout)
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
    conn = connect(ep.host, ep.port, timeout)
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
    return run_async(_pg_probe_login(url, timeout))


def _superuser_url(bind: str, port: int) -> str:
    host = f"[{bind}]" if ":" in bind else bind
    return f"postgresql://{PG_SYSTEM_USER}@{host}:{port}/postgres"


def _quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


async def _ensure_role(admin_url: str, user: str, password: str | None) -> bool:
    """Create the URL's login role on our own server (initdb only made ``postgres``)."""
    import asyncpg

    conn = await asyncpg.connect(admin_url, timeout=PROBE_TIMEOUT * 5)
    try:
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", user):
            return False
        sql = f"CREATE ROLE {quote_ident(user)} LOGIN SUPERUSER"
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
    with locked(data_dir, "postgres"):
        res = wait_usable(lambda: probe_postgres(url), START_TIMEOUT)
        if res.state is Probe.USABLE:
            mine = next(
                (
                    lay
                    for lay in pgcluster.candidate_layouts(data_dir)
                    if (run := pgcluster.pg_running(lay)) is not None and run[1] == ep.port
                ),
                None,
            )
            where = f"own server in {show(mine.data)} on " if mine else ""
            log(f"postgres: reusing {where}{ep.hostport}")
            return url
        if not is_local_host(ep.host):
            raise DevStackError(
                f"postgres: {ep.hostport} is not usable ({res.detail}) and is not a local "
                f"address, so no server can be started for it; start it or {PG_HINT}"
            )
        may_install = True
        if not any(lay.initialised() for lay in pgcluster.candidate_layouts(data_dir)) and (
            pgcluster.find_pg_tools() is None
        ):
            apt.install("postgres", ["postgresql"], PG_HINT, log)
            may_install = False
            # The package may have started its own cluster: reuse it if it lets us in (a
            # stock Debian cluster wants a password over TCP, so usually it will not).
            res = wait_usable(lambda: probe_postgres(url), INSTALL_SETTLE_TIMEOUT, STARTING)
            if res.state is Probe.USABLE:
                log(f"postgres: reusing {ep.hostport} (started by the package)")
                return url
        if pgcluster.running_as_root():
            pgcluster.ensure_pg_system_user(log)
        layout = pgcluster.prepare_layout(data_dir, log)
        tools = pgcluster.pg_tools_for(layout, log, may_install)
        return _start_postgres(url, ep, res, layout, tools, log)


def _start_postgres(
    url: str, ep: Endpoint, res: ProbeResult, layout: PgLayout, tools: PgTools, log: Log
) -> str:
    bind = bind_address(ep.host)
    running = pgcluster.pg_running(layout)
    if running is not None:
        port = running[1]
        log(f"postgres: reusing own server in {show(layout.data)} on {ep.host}:{port}")
    else:
        if res.state is Probe.FOREIGN:
            log(f"postgres: {ep.hostport} is taken ({res.detail}); using another port")
        if not layout.initialised():
            pgcluster.initdb(layout, tools, log)
        wanted = ep.port if res.state is Probe.ABSENT else None
        port = choose_port(bind, [wanted, read_int(layout.portfile)])
        pgcluster.pg_ctl_start(layout, tools, bind, port)
        layout.portfile.write_text(f"{port}\n")
    admin = _superuser_url(bind, port)
    ready = wait_usable(lambda: probe_postgres(admin), START_TIMEOUT, STARTING)
    if ready.state is not Probe.USABLE:
        raise DevStackError(
            f"postgres: own server on port {port} does not answer ({ready.detail or 'timeout'});"
            f" see {show(layout.logfile)}: {tail(layout.logfile)}"
        )
    if (
        ep.username
        and ep.username != PG_SYSTEM_USER
        and run_async(_ensure_role(admin, ep.username, ep.password))
    ):
        log(f"postgres: created superuser role {ep.username}")
    final = url if port == ep.port else with_port(url, port)
    check = probe_postgres(final)
    if check.state is not Probe.USABLE:
        raise DevStackError(f"postgres: own server on port {port} rejects the URL: {check.detail}")
    if running is None:
        log(f"postgres: started own server in {show(layout.data)} on {ep.host}:{port}")
    return final
