"""Management quota changes across PostgreSQL and Redis: applied once, never half-applied,
and carried into Redis later when Redis failed after the commit (issue 9 item 11)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from relaygate import cli, ledger
from relaygate.accounts import Accounts
from relaygate.admin import Admin, AdminError, LedgerPending
from relaygate.ledger import Code, ReserveRequest


class ScriptsFail:
    """A Redis client whose script calls fail (PING and reads work): Redis dying right after
    the PostgreSQL commit."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if args and args[0] in ("EVALSHA", "EVAL"):
            raise RedisConnectionError("injected: Redis went away")
        return await self._real.execute_command(*args, **options)


def _failing(env: Any) -> Admin:
    accounts = Accounts(env.pool, ScriptsFail(env.redis), env.accounts.scripts, env.keys)  # type: ignore[arg-type]
    return Admin(env.pool, accounts, allow_loopback_upstreams=True)


async def _outbox(env: Any) -> list[tuple[str, int]]:
    async with env.pool.acquire() as conn:
        rows = await conn.fetch("SELECT kind, id FROM ledger_outbox ORDER BY kind, id")
    return [(r["kind"], int(r["id"])) for r in rows]


async def _user_with_token(env: Any) -> tuple[int, int]:
    uid, _ = await env.admin.create_user("u1", quota=1000)
    tok = await env.admin.create_token(uid, "t", remain_quota=1000)
    await env.accounts.ensure_user(uid)
    await env.accounts.ensure_token(tok.id, uid)
    return uid, tok.id


async def _reserve(env: Any, uid: int, tid: int) -> Code:
    tok, user = env.keys.token(uid, tid), env.keys.user(uid)
    now = int(time.time())
    req = ReserveRequest(0, now, 10, 0, 0, True, f"r{now}|{tid}|{uid}|d|m|i", now + 900)
    keys = (tok, user, f"{tok}:d:x", f"{tok}:m:x", env.keys.reservations(uid))
    res = await ledger.reserve(env.accounts.scripts, env.redis, keys, req, (100, 100))
    return res.code


async def test_user_disable_whose_push_failed_is_enforced_after_reconciliation(env):
    uid, tid = await _user_with_token(env)
    with pytest.raises(LedgerPending):
        await _failing(env).set_user_status(uid, 2)
    assert await _outbox(env) == [("user", uid)]
    assert int(await env.redis.hget(env.keys.user(uid), "status")) == 1  # not yet enforced
    assert await env.accounts.reconcile_once() == 1
    assert await _outbox(env) == []
    assert await _reserve(env, uid, tid) == Code.USER_DISABLED


async def test_failed_token_push_is_retried_by_the_reconciler(env):
    uid, tid = await _user_with_token(env)
    with pytest.raises(LedgerPending):
        await _failing(env).update_token(tid, {"status": 2, "add_quota": 5})
    stop = asyncio.Event()
    task = asyncio.create_task(env.accounts.run_reconciler(stop, interval=0.05))
    for _ in range(100):
        if not await _outbox(env):
            break
        await asyncio.sleep(0.02)
    stop.set()
    await task
    limit, status = await env.redis.hmget(env.keys.token(uid, tid), "limit", "status")
    assert (int(limit), int(status)) == (1005, 2)


async def test_set_remain_with_redis_unreachable_changes_nothing(env, settings):
    uid, tid = await _user_with_token(env)
    from redis.asyncio import Redis

    dead = Redis.from_url("redis://127.0.0.1:1/0")
    admin = Admin(
        env.pool,
        Accounts(env.pool, dead, env.accounts.scripts, env.keys),
        allow_loopback_upstreams=True,
    )
    try:
        for call in (
            admin.set_user_remain(uid, 5),
            admin.update_token(tid, {"remain_quota": 5}),
            admin.add_user_quota(uid, 5, "op-x"),
        ):
            with pytest.raises(AdminError, match="nothing was changed"):
                await call
    finally:
        await dead.aclose()
    row = await env.admin.user_row(uid)
    assert int(row["quota_limit"]) == 1000 and await _outbox(env) == []


def _main(argv: list[str]) -> int:
    try:
        cli.main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


async def test_cli_top_up_fails_in_one_line_and_a_rerun_credits_once(
    env, settings, capsys, monkeypatch
):
    uid, _ = await _user_with_token(env)
    flags = [
        "--database-url",
        settings.database_url,
        "--redis-url",
        settings.redis_url,
        "--key-prefix",
        settings.key_prefix,
        "--shards",
        str(settings.shards),
    ]
    argv = ["admin", "top-up", *flags, "--user-id", str(uid), "--quota", "500", "--op-id", "op-1"]
    real_push = Accounts.push_user

    async def failing_push(self: Accounts, user_id: int) -> None:
        raise RedisConnectionError("injected: Redis went away")

    monkeypatch.setattr(Accounts, "push_user", failing_push)
    assert await asyncio.to_thread(_main, argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "op-1" in err[0] and "Traceback" not in err[0], err
    row = await env.admin.user_row(uid)
    assert int(row["quota_limit"]) == 1500  # committed once
    assert int(await env.redis.hget(env.keys.user(uid), "limit")) == 1000  # not pushed yet
    monkeypatch.setattr(Accounts, "push_user", real_push)
    assert await asyncio.to_thread(_main, argv) == 0  # the retry pushes, does not credit
    assert '"credited":false' in capsys.readouterr().out
    row = await env.admin.user_row(uid)
    assert int(row["quota_limit"]) == 1500
    assert int(await env.redis.hget(env.keys.user(uid), "limit")) == 1500
    assert await _outbox(env) == []
