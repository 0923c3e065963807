"""Local development services: reuse a running Redis / PostgreSQL, or start project-local ones.

Why this exists: ``make dev`` and ``make test`` must work on a fresh machine that may have no
Redis or PostgreSQL installed or running, without asking the developer to set anything up and
without touching services the machine already has (docs/decisions.md, "Dev services"). The
rules, in order:

1. If the URL's server answers *and* accepts the URL's credentials, reuse it unchanged.
2. Otherwise start our own server under the project-local data directory (``.relaygate/``) on
   the URL's port, or on a free port when that one is taken by something we cannot use (another
   program, a server that rejects the credentials); the adjusted URL is returned.
3. Missing binaries are installed with ``apt-get`` (``sudo`` when not root); if that is not
   possible the error is one line saying what to do.

Servers started here are daemons that outlive the calling process, so the next run finds and
reuses them (or restarts them on the same data); :func:`stop_local_services` stops them and
touches nothing else: it only signals processes recorded in pid files inside ``data_dir``.

Modules: ``urls`` (URL and port helpers), ``common`` (errors, probes, processes), ``apt``
(binaries, apt-get), ``redis``, ``pgcluster`` (our own cluster's files and pg_ctl) and
``postgres``. Errors are :class:`DevStackError` with a one-line message.
"""

from __future__ import annotations

import pathlib

from relaygate.dev.services import pgcluster
from relaygate.dev.services.common import DevStackError, Log, Probe, ProbeResult, run_async
from relaygate.dev.services.postgres import ensure_postgres, probe_postgres
from relaygate.dev.services.redis import ensure_redis, probe_redis, redis_dir, stop_redis
from relaygate.store.bootstrap import BootstrapError, database_name
from relaygate.store.bootstrap import ensure_database as create_database

__all__ = [
    "DevStackError",
    "Probe",
    "ProbeResult",
    "ensure_database",
    "ensure_postgres",
    "ensure_redis",
    "probe_postgres",
    "probe_redis",
    "stop_local_services",
]


def ensure_database(url: str, log: Log = print) -> bool:
    """The store layer's create-if-missing, from sync dev code, logged like the starters;
    True when this call created the database."""
    try:
        created = run_async(create_database(url))
    except BootstrapError as exc:
        raise DevStackError(str(exc)) from None
    log(f"postgres: {'created' if created else 'found'} database {database_name(url)}")
    return bool(created)


def stop_local_services(data_dir: pathlib.Path) -> None:
    """Stop the Redis and PostgreSQL servers that ``ensure_*`` started for ``data_dir``.

    Only processes named in pid files inside our own directories are signalled (after checking
    that the pid still is redis-server/postgres), so services the machine runs itself, or that
    ``ensure_*`` merely reused, are never touched. Data is kept; deleting it is the caller's
    choice (``make clean``).
    """
    errors: list[str] = []
    try:
        stop_redis(redis_dir(data_dir))
    except (OSError, DevStackError) as exc:
        errors.append(str(exc))
    for layout in pgcluster.candidate_layouts(data_dir):
        try:
            pgcluster.stop_postgres(layout)
        except (OSError, DevStackError) as exc:
            errors.append(str(exc))
    if errors:
        raise DevStackError("; ".join(errors))
