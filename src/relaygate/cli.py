"""``relaygate`` command line: serve, worker, migrate, dev, mock-upstream, admin.

Every setting comes from ``RELAYGATE_*`` env vars; flags override them. A bad setting or an
unreachable dependency at start-up ends the program with one clear line, not a traceback.
Admin commands print one JSON object each, for scripting.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson

from relaygate.config import FIELDS, ConfigError, Settings, from_env
from relaygate.connguard import ConnectionGuard
from relaygate.redact import RedactingFormatter

log = logging.getLogger("relaygate")


STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


class Fatal(Exception):
    """Stop with this one-line message and exit status 1."""


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"


def setup_logging(level: str) -> None:
    """Every record of every logger goes through one handler whose formatter redacts
    credentials (docs/security.md)."""
    logging.basicConfig(level=getattr(logging, level.upper()), format=LOG_FORMAT)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(RedactingFormatter(LOG_FORMAT))
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def _add_setting_flags(p: argparse.ArgumentParser, names: Sequence[str]) -> None:
    for name in names:
        var, _ = FIELDS[name]
        p.add_argument(
            f"--{name.replace('_', '-')}", dest=name, default=None, help=f"overrides {var}"
        )


COMMON = ("database_url", "redis_url", "log_level", "key_prefix", "shards")
SERVE = (*COMMON, "host", "port", "workers", "trusted_proxies")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relaygate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the relay (and optionally the flusher)")
    _add_setting_flags(p, SERVE)
    p.add_argument(
        "--with-worker", action="store_true", default=None, help="run the flusher in-process"
    )

    p = sub.add_parser("worker", help="run the usage flusher")
    _add_setting_flags(p, COMMON)

    p = sub.add_parser("migrate", help="apply database migrations")
    _add_setting_flags(p, COMMON)

    p = sub.add_parser("dev", help="local stack: services, migrate, seed, serve")
    _add_setting_flags(p, SERVE)
    p.add_argument("--mock-port", type=int, default=3001)
    p.add_argument("--no-serve", action="store_true", help="set up and seed, then exit")

    p = sub.add_parser("mock-upstream", help="an OpenAI-compatible fake upstream")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3001)
    p.add_argument("--prompt-tokens", type=int, default=10)
    p.add_argument("--completion-tokens", type=int, default=20)
    p.add_argument("--stream-chunks", type=int, default=5)
    p.add_argument("--chunk-delay", type=float, default=0.0)

    p = sub.add_parser("admin", help="management commands printing JSON")
    asub = p.add_subparsers(dest="admin_command", required=True)

    a = asub.add_parser("create-user")
    _add_setting_flags(a, COMMON)
    a.add_argument("--username", required=True)
    a.add_argument("--role", choices=("user", "admin", "root"), default="user")
    a.add_argument("--quota", type=int, default=0)
    a.add_argument("--group", default="default")

    a = asub.add_parser("create-channel")
    _add_setting_flags(a, COMMON)
    a.add_argument("--name", required=True)
    a.add_argument("--base-url", required=True)
    a.add_argument("--key", required=True)
    a.add_argument("--models", required=True)
    a.add_argument("--group", default="default")
    a.add_argument("--priority", type=int, default=0)
    a.add_argument("--weight", type=int, default=1)
    a.add_argument("--type", type=int, default=1, dest="channel_type")

    a = asub.add_parser("create-token")
    _add_setting_flags(a, COMMON)
    a.add_argument("--user-id", type=int, required=True)
    a.add_argument("--name", required=True)
    q = a.add_mutually_exclusive_group()
    q.add_argument("--remain-quota", type=int, default=0)
    q.add_argument("--unlimited", action="store_true")
    a.add_argument("--models", default=None)
    a.add_argument("--allow-ips", default=None)
    a.add_argument("--expires", type=int, default=-1)
    a.add_argument("--group", default="")
    a.add_argument("--daily-quota", type=int, default=0)
    a.add_argument("--monthly-quota", type=int, default=0)

    a = asub.add_parser("update-token", help="change a token (status, quota, models, ips)")
    _add_setting_flags(a, COMMON)
    a.add_argument("--id", type=int, required=True)
    a.add_argument("--status", type=int, choices=(1, 2), default=None)
    a.add_argument("--remain-quota", type=int, default=None)
    a.add_argument("--add-quota", type=int, default=None)
    a.add_argument("--models", default=None, help="comma list; empty string lifts the limit")
    a.add_argument("--allow-ips", default=None, help="comma list; empty string lifts the limit")
    a.add_argument("--expires", type=int, default=None)
    a.add_argument("--delete", action="store_true")

    a = asub.add_parser(
        "show-token", help="live quota figures of a token (Redis) next to PostgreSQL's"
    )
    _add_setting_flags(a, COMMON)
    a.add_argument("--id", type=int, required=True)

    a = asub.add_parser(
        "show-user", help="live quota figures of a user (Redis) next to PostgreSQL's"
    )
    _add_setting_flags(a, COMMON)
    a.add_argument("--id", type=int, required=True)

    a = asub.add_parser("top-up", help="add quota to a user's balance")
    _add_setting_flags(a, COMMON)
    a.add_argument("--user-id", type=int, required=True)
    a.add_argument("--quota", type=int, required=True)
    a.add_argument(
        "--op-id", default=None, help="operation id: a re-run with the same id credits once"
    )

    a = asub.add_parser("set-option", help="set a New API option (ModelRatio, GroupRatio, ...)")
    _add_setting_flags(a, COMMON)
    a.add_argument("--key", required=True)
    a.add_argument("--value", required=True)
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = {name: getattr(args, name) for name in FIELDS if hasattr(args, name)}
    if getattr(args, "with_worker", None):
        overrides["with_worker"] = True
    return from_env(overrides=overrides)


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        settings = settings_from_args(args)
        setup_logging(settings.log_level)
        COMMANDS[args.command](settings, args)
    except (ConfigError, Fatal) as exc:
        print(f"relaygate: {exc}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


def _run(coro: Awaitable[Any]) -> Any:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


def _describe_start_error(exc: BaseException, settings: Settings) -> str:
    from relaygate.app import UnsafeRedis

    if isinstance(exc, UnsafeRedis):
        return str(exc)
    name = type(exc).__name__
    if "Redis" in name or "redis" in type(exc).__module__:
        return f"cannot use Redis at {_safe_url(settings.redis_url)}: {exc}"
    if "asyncpg" in type(exc).__module__ or isinstance(exc, OSError):
        return f"cannot use PostgreSQL at {_safe_url(settings.database_url)}: {exc}"
    return f"start-up failed: {name}: {exc}"


def _safe_url(url: str) -> str:
    """The URL without its password, for messages."""
    from urllib.parse import urlparse

    parsed = urlparse(url)
    if parsed.password:
        return url.replace(f":{parsed.password}@", ":***@")
    return url


# --- migrate -------------------------------------------------------------------------------


async def _migrate(settings: Settings) -> list[str]:
    import asyncpg

    from relaygate.store.db import migrate

    try:
        conn = await asyncpg.connect(settings.database_url, timeout=10)
    except asyncpg.InvalidCatalogNameError:
        # The server is there but the database is not: create it, as a first deploy expects.
        from relaygate.devstack import ensure_database

        await asyncio.to_thread(ensure_database, settings.database_url, log.info)
        conn = await asyncpg.connect(settings.database_url, timeout=10)
    except Exception as exc:
        raise Fatal(_describe_start_error(exc, settings)) from None
    try:
        return await migrate(conn)
    finally:
        await conn.close()


def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    applied = _run(_migrate(settings))
    print(orjson.dumps({"applied": applied}).decode())


# --- serve ---------------------------------------------------------------------------------


def _listen_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def tune_gc(gen0: int) -> None:
    """Fewer, cheaper garbage collections while serving.

    Why: a relayed request allocates a few hundred short-lived objects, so with Python's
    default threshold (700) a young collection runs every few requests, and every tenth one
    also walks the older generation; together ~10% of the CPU per request. Objects alive at
    start-up (modules, the app, pools) are frozen out of collection once, and the young
    generation is collected every ``gen0`` allocations (50,000 ≈ a few MB of garbage at
    most). Garbage without cycles is freed by reference counting as always.
    """
    if gen0 <= 0:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0, gen1, gen2)


async def serve_app(settings: Settings, extra: Callable[[], Awaitable[None]] | None = None) -> None:
    """Run the relay until SIGTERM/SIGINT; then stop accepting, drain, settle and exit."""
    from aiohttp import web

    from relaygate.app import init_app

    app = init_app(settings)
    if settings.with_worker:
        app.cleanup_ctx.append(_flusher_ctx(settings))
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=30,
        keepalive_timeout=settings.keepalive_timeout,
    )
    try:
        await runner.setup()
    except Exception as exc:
        raise Fatal(_describe_start_error(exc, settings)) from None
    assert runner.server is not None
    ConnectionGuard(
        settings.header_timeout, settings.max_connections_per_ip, settings.trusted_proxies
    ).install(runner.server)
    try:
        sock = _listen_socket(settings.host, settings.port, reuse_port=settings.workers > 1)
    except OSError as exc:
        await runner.cleanup()
        raise Fatal(
            f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
        ) from None
    site = web.SockSite(runner, sock)
    await site.start()
    tune_gc(settings.gc_gen0)
    log.info("relaygate serving on http://%s:%d", settings.host, settings.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # A forked worker starts with these blocked (cmd_serve): one sent while it was still
    # starting is delivered now, to the handler, instead of killing it half set up.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    if extra is not None:
        await extra()
    await stop.wait()
    log.info("shutting down: draining in-flight requests")
    await runner.cleanup()


def _flusher_ctx(settings: Settings) -> Any:
    async def ctx(app: Any) -> Any:
        from relaygate.app import redis_client
        from relaygate.flusher import Flusher
        from relaygate.ledger import Scripts
        from relaygate.store.db import create_pool

        pool = await create_pool(settings.database_url, max_size=4)
        redis = redis_client(settings)
        flusher = Flusher(settings, pool, redis, Scripts.load())
        stop = asyncio.Event()
        task = asyncio.create_task(flusher.run(stop))
        outbox = asyncio.create_task(_accounts(settings, pool, redis).run_reconciler(stop))
        yield
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.gather(task, outbox), 10)
        await pool.close()
        await redis.aclose()

    return ctx


def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    if settings.workers <= 1:
        _run(serve_app(settings))
        return
    children: list[int] = []
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # until each side has its handler
    for _ in range(settings.workers):
        pid = os.fork()
        if pid == 0:
            try:
                _run(serve_app(settings.replace(with_worker=settings.with_worker and not children)))
                os._exit(0)
            except Fatal as exc:
                print(f"relaygate: {exc}", file=sys.stderr)
                os._exit(1)
            except BaseException:
                log.exception("worker process crashed")
                os._exit(1)
        children.append(pid)

    def forward(signum: int, _frame: Any) -> None:
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    status = 0
    for child in children:
        _, code = os.waitpid(child, 0)
        status = status or os.waitstatus_to_exitcode(code)
    sys.exit(status)


# --- worker --------------------------------------------------------------------------------


async def _worker(settings: Settings) -> None:
    from relaygate.app import check_eviction_policy, redis_client
    from relaygate.flusher import Flusher
    from relaygate.ledger import Scripts
    from relaygate.store.db import create_pool

    redis = redis_client(settings)
    try:
        await redis.ping()
        await check_eviction_policy(redis, settings.allow_unsafe_redis_eviction)
        pool = await create_pool(settings.database_url, max_size=4)
    except Exception as exc:
        await redis.aclose()
        raise Fatal(_describe_start_error(exc, settings)) from None
    flusher = Flusher(settings, pool, redis, Scripts.load())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("flusher %s started", flusher.consumer)
    outbox = asyncio.create_task(_accounts(settings, pool, redis).run_reconciler(stop))
    try:
        await flusher.run(stop)
        await outbox
    finally:
        outbox.cancel()
        await pool.close()
        await redis.aclose()


def _accounts(settings: Settings, pool: Any, redis: Any) -> Any:
    """The ledger bridge whose reconciler the worker runs beside the flusher."""
    from relaygate.accounts import Accounts
    from relaygate.keys import KeyScheme
    from relaygate.ledger import Scripts

    return Accounts(pool, redis, Scripts.load(), KeyScheme(settings.key_prefix, settings.shards))


def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    _run(_worker(settings))


# --- mock upstream -------------------------------------------------------------------------


def cmd_mock(settings: Settings, args: argparse.Namespace) -> None:
    from relaygate.mockupstream import MockConfig, run

    run(
        args.host,
        args.port,
        MockConfig(
            prompt_tokens=args.prompt_tokens,
            completion_tokens=args.completion_tokens,
            stream_chunks=args.stream_chunks,
            chunk_delay=args.chunk_delay,
        ),
    )


# --- admin ---------------------------------------------------------------------------------


async def _with_admin(
    settings: Settings, action: Callable[[Any], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    from relaygate.accounts import Accounts
    from relaygate.admin import LEDGER_ERRORS, Admin, AdminError
    from relaygate.app import redis_client
    from relaygate.keys import KeyScheme
    from relaygate.ledger import Scripts
    from relaygate.store.db import create_pool

    redis = redis_client(settings)
    try:
        pool = await create_pool(settings.database_url, max_size=2)
    except Exception as exc:
        await redis.aclose()
        raise Fatal(_describe_start_error(exc, settings)) from None
    try:
        accounts = Accounts(
            pool, redis, Scripts.load(), KeyScheme(settings.key_prefix, settings.shards)
        )
        admin = Admin(pool, accounts, allow_loopback_upstreams=settings.allow_loopback_upstreams)
        return await action(admin)
    except AdminError as exc:
        raise Fatal(str(exc)) from None
    except LEDGER_ERRORS as exc:  # one line, never a traceback
        raise Fatal(_describe_start_error(exc, settings)) from None
    finally:
        await pool.close()
        await redis.aclose()


def cmd_admin(settings: Settings, args: argparse.Namespace) -> None:
    from relaygate.admin import ROLES

    async def create_user(admin: Any) -> dict[str, Any]:
        uid, access = await admin.create_user(
            args.username, ROLES[args.role], args.quota, args.group
        )
        return {
            "id": uid,
            "username": args.username,
            "role": ROLES[args.role],
            "access_token": access,
        }

    async def create_channel(admin: Any) -> dict[str, Any]:
        cid = await admin.create_channel(
            args.name, args.base_url, args.key, args.models,
            group=args.group, priority=args.priority, weight=args.weight, type_=args.channel_type,
        )  # fmt: skip
        return {
            "id": cid,
            "name": args.name,
            "base_url": admin.checked_base_url(args.base_url),
            "models": args.models.split(","),
        }

    async def create_token(admin: Any) -> dict[str, Any]:
        created = await admin.create_token(
            args.user_id,
            args.name,
            remain_quota=args.remain_quota,
            unlimited=args.unlimited,
            models=args.models,
            allow_ips=args.allow_ips,
            expired_time=args.expires,
            group=args.group,
            daily_quota=args.daily_quota,
            monthly_quota=args.monthly_quota,
        )
        return {"id": created.id, "key": f"sk-{created.key}"}

    async def update_token(admin: Any) -> dict[str, Any]:
        if args.delete:
            await admin.delete_token(args.id)
            return {"id": args.id, "deleted": True}
        changes: dict[str, Any] = {}
        if args.status is not None:
            changes["status"] = args.status
        if args.remain_quota is not None:
            changes["remain_quota"] = args.remain_quota
        if args.add_quota is not None:
            changes["add_quota"] = args.add_quota
        if args.models is not None:
            changes["model_limits"] = args.models
            changes["model_limits_enabled"] = bool(args.models.strip())
        if args.allow_ips is not None:
            changes["allow_ips"] = args.allow_ips
        if args.expires is not None:
            changes["expired_time"] = args.expires
        await admin.update_token(args.id, changes)
        return {"id": args.id, "updated": sorted(changes)}

    async def top_up(admin: Any) -> dict[str, Any]:
        from relaygate.admin import AdminError

        op_id = args.op_id or uuid.uuid4().hex
        try:
            credited = await admin.add_user_quota(args.user_id, args.quota, op_id)
        except AdminError as exc:
            raise Fatal(
                f"{exc} (operation id {op_id}: re-running with --op-id {op_id} is safe)"
            ) from None
        return {"user_id": args.user_id, "added": args.quota, "op_id": op_id, "credited": credited}

    async def set_option(admin: Any) -> dict[str, Any]:
        await admin.set_option(args.key, args.value)
        return {"key": args.key}

    async def show_token(admin: Any) -> dict[str, Any]:
        row = await admin.token_row(args.id)
        if row is None:
            raise Fatal(f"token {args.id} not found")
        limit, used = await admin.accounts.live_token(args.id, int(row["user_id"]))
        return {
            "id": args.id,
            "user_id": int(row["user_id"]),
            "name": row["name"],
            "status": int(row["status"]),
            "unlimited_quota": bool(row["unlimited_quota"]),
            "limit": limit,
            "used": used,
            "remain": limit - used,
            "flushed_used": int(row["used_quota"]),
            "redis_key": admin.accounts.keys.token(int(row["user_id"]), args.id),
        }

    async def show_user(admin: Any) -> dict[str, Any]:
        async with admin.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT * FROM users WHERE id = $1 AND deleted_at IS NULL", args.id
            )
        if row is None:
            raise Fatal(f"user {args.id} not found")
        limit, used = await admin.accounts.live_user(args.id)
        return {
            "id": args.id,
            "username": row["username"],
            "role": int(row["role"]),
            "status": int(row["status"]),
            "limit": limit,
            "used": used,
            "remain": limit - used,
            "flushed_used": int(row["used_quota"]),
            "redis_key": admin.accounts.keys.user(args.id),
        }

    actions = {
        "show-token": show_token,
        "show-user": show_user,
        "create-user": create_user,
        "create-channel": create_channel,
        "create-token": create_token,
        "update-token": update_token,
        "top-up": top_up,
        "set-option": set_option,
    }
    result = _run(_with_admin(settings, actions[args.admin_command]))
    print(orjson.dumps(result).decode())


def cmd_dev(settings: Settings, args: argparse.Namespace) -> None:
    from relaygate.devmode import run_dev

    run_dev(settings, mock_port=args.mock_port, serve=not args.no_serve)


COMMANDS: dict[str, Callable[[Settings, argparse.Namespace], None]] = {
    "serve": cmd_serve,
    "worker": cmd_worker,
    "migrate": cmd_migrate,
    "dev": cmd_dev,
    "mock-upstream": cmd_mock,
    "admin": cmd_admin,
}


if __name__ == "__main__":
    main()
