"""Management operations shared by the CLI and the management API.

PostgreSQL first, Redis derived. Each write to a user or token row bumps its ``ver`` and, in
the same transaction, adds a ``ledger_outbox`` row; after the commit the row is pushed to its
Redis ledger hash, version-checked (``Accounts.push_*``), and announced, so every relay
honours it on its next request. If that push fails, the change stays committed and the
outbox row stays: the reconciler (``Accounts.run_reconciler``) pushes it once Redis is back,
and the caller hears so in one line (``LedgerPending``). Redis is never written before
PostgreSQL commits, so nothing is ever half-applied or has to be undone. Quota edits never
overwrite ``used``: a top-up adds to ``limit`` (at most once per operation id), and "set
remain to X" becomes ``limit := used_live + X`` (DESIGN.md "The ledger").
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from redis.exceptions import RedisError

from relaygate.accounts import Accounts, LedgerMissing
from relaygate.cache import parse_allow_ips
from relaygate.credentials import hash_secret, mask_key, new_access_token, new_token_key
from relaygate.keys import msg_channel
from relaygate.store import api_queries, queries
from relaygate.upstreams import UpstreamRefused, check_base_url

log = logging.getLogger(__name__)

ROLE_USER = 1
ROLE_ADMIN = 10
ROLE_ROOT = 100
ROLES = {"user": ROLE_USER, "admin": ROLE_ADMIN, "root": ROLE_ROOT}
MAX_QUOTA = 500_000 * 1_000_000_000  # New API's bound: 1e9 dollars of quota units
MAX_TOKEN_NAME_BYTES = 50
# What a lost Redis (or a PostgreSQL gone between commit and push) raises.
LEDGER_ERRORS = (RedisError, OSError, asyncpg.PostgresError)
MSG_LEDGER_DOWN = "The quota ledger (Redis) is unreachable; nothing was changed. Try again later."
MAX_OP_ID = 128
CHANNEL_STATUSES = (1, 2, 3)
USER_UPDATABLE = ("username", "display_name", "password", "group", "email", "remark")


class AdminError(ValueError):
    """A rejected management request; the message is shown to the caller as is."""


class LedgerPending(AdminError):
    """Committed in PostgreSQL, not yet in Redis: the outbox carries it there once Redis is
    back. Repeating the request is not needed (and for a top-up without an operation id it
    would credit again)."""


def pending_message(what: str) -> str:
    return (
        f"{what} was saved, but the quota ledger (Redis) could not be updated; it takes effect"
        " automatically once Redis is reachable again. Do not repeat it."
    )


@dataclass(frozen=True, slots=True)
class CreatedToken:
    id: int
    key: str  # without the sk- prefix; shown once


def normalize_allow_ips(raw: str | Sequence[str] | None) -> str:
    """Validate IPs/CIDRs (newline- or comma-separated) and store them one per line."""
    if raw is None:
        return ""
    text = "\n".join(raw) if not isinstance(raw, str) else raw
    entries = [e.strip() for e in text.replace(",", "\n").split("\n") if e.strip()]
    for entry in entries:
        try:
            parse_allow_ips(entry)
        except ValueError:
            raise AdminError(f"Invalid IP address or CIDR in allow_ips: {entry!r}") from None
    return "\n".join(entries)


def normalize_models(models: str | Sequence[str] | None) -> str:
    if models is None:
        return ""
    items = models.split(",") if isinstance(models, str) else list(models)
    out = []
    for m in items:
        if not isinstance(m, str):
            raise AdminError("Model names must be strings.")
        m = m.strip()
        if len(m.encode()) > 255:
            raise AdminError(f"Model name too long: {m[:40]}...")
        if m and m not in out:
            out.append(m)
    return ",".join(out)


def check_quota(value: int, field: str) -> None:
    if value < 0:
        raise AdminError(f"{field}: quota value cannot be negative")
    if value > MAX_QUOTA:
        raise AdminError(f"{field}: quota value out of range, the maximum is {MAX_QUOTA}")


def check_token_name(name: str) -> None:
    if len(name.encode()) > MAX_TOKEN_NAME_BYTES:
        raise AdminError("Token name is too long (at most 50 bytes)")


async def hash_password(password: str) -> str:
    """scrypt with a random salt; passwords are optional (no login route yet) but never plain.

    scrypt costs ~60 ms of CPU by design, and the management API is served by the relay's
    own event loop: run inline it would stall every request in flight, so it runs in a
    thread (hashlib releases the GIL while it works).
    """
    return await asyncio.to_thread(_scrypt_hash, password)


async def verify_password(password: str, stored: str) -> bool:
    """Does ``password`` match a ``hash_password`` value? Off the event loop, as hashing."""
    return await asyncio.to_thread(_scrypt_verify, password, stored)


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1)


def _scrypt_hash(password: str) -> str:
    salt = secrets.token_bytes(16)
    return f"scrypt${salt.hex()}${_scrypt(password, salt).hex()}"


def _scrypt_verify(password: str, stored: str) -> bool:
    scheme, _, rest = stored.partition("$")
    salt_hex, _, digest_hex = rest.partition("$")
    if scheme != "scrypt" or not salt_hex or not digest_hex:
        return False
    try:
        salt, digest = bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)
    except ValueError:
        return False
    return hmac.compare_digest(_scrypt(password, salt), digest)


def check_username(username: str) -> str:
    username = username.strip()
    if not username or len(username) > 20:
        raise AdminError("username must be 1 to 20 characters")
    return username


def check_password(password: str) -> None:
    if not 8 <= len(password) <= 20:
        raise AdminError("password must be 8 to 20 characters")


def _token_changes(
    token_id: int, changes: dict[str, Any]
) -> tuple[list[str], list[Any], int | None]:
    """Validated ``SET`` assignments and their arguments (``$1`` is the token id), and the
    remain to set if any (it needs the live ``used``, read by the caller)."""
    sets: list[str] = []
    args: list[Any] = [token_id]

    def put(column: str, value: Any) -> None:
        args.append(value)
        sets.append(f'"{column}" = ${len(args)}')

    if "name" in changes:
        check_token_name(changes["name"])
        put("name", changes["name"])
    if "expired_time" in changes:
        expired = int(changes["expired_time"])
        if expired != -1 and expired < 0:
            raise AdminError("expired_time must be -1 (never) or a unix timestamp")
        put("expired_time", expired)
    if "unlimited_quota" in changes:
        put("unlimited_quota", bool(changes["unlimited_quota"]))
    if "model_limits" in changes:
        put("model_limits", normalize_models(changes["model_limits"]))
    if "model_limits_enabled" in changes:
        put("model_limits_enabled", bool(changes["model_limits_enabled"]))
    if "allow_ips" in changes:
        put("allow_ips", normalize_allow_ips(changes["allow_ips"]))
    if "group" in changes:
        put("group", changes["group"])
    for field in ("daily_quota", "monthly_quota"):
        if field in changes:
            check_quota(int(changes[field]), field)
            put(field, int(changes[field]))
    if "status" in changes:
        put("status", int(changes["status"]))
    if "add_quota" in changes:
        args.append(int(changes["add_quota"]))
        sets.append(f"quota_limit = quota_limit + ${len(args)}")
    remain: int | None = None
    if "remain_quota" in changes:
        remain = int(changes["remain_quota"])
        check_quota(remain, "remain_quota")
    return sets, args, remain


class Admin:
    def __init__(
        self, pool: asyncpg.Pool, accounts: Accounts, *, allow_loopback_upstreams: bool = False
    ) -> None:
        self.pool = pool
        self.accounts = accounts
        # RELAYGATE_ALLOW_LOOPBACK_UPSTREAMS: whether a channel may point at loopback.
        self.allow_loopback_upstreams = allow_loopback_upstreams

    # --- the write protocol: PostgreSQL, outbox, push -------------------------------------

    async def _ledger_up(self) -> None:
        """Refuse before changing anything when Redis is already unreachable, so that the
        "saved, pending" answer is left to a Redis failing in the middle of a write."""
        try:
            await self.accounts.redis.ping()
        except LEDGER_ERRORS:
            raise AdminError(MSG_LEDGER_DOWN) from None

    @staticmethod
    async def _outbox(conn: Any, kind: str, row: Any) -> None:
        """In the write's transaction: this row (``id``, ``user_id``, ``ver``) must reach Redis."""
        await conn.execute(
            queries.OUTBOX_ADD, kind, int(row["id"]), int(row["user_id"]), int(row["ver"])
        )

    async def _push(self, kind: str, ident: int, what: str) -> None:
        """After the commit. A failure leaves the outbox row for the reconciler."""
        try:
            await self.accounts.push(kind, ident)
        except LEDGER_ERRORS as exc:
            log.warning("%s %d: push to the ledger failed (%s); outbox keeps it", kind, ident, exc)
            raise LedgerPending(pending_message(what)) from None

    async def _write_user(self, sql: str, args: Sequence[Any], what: str) -> None:
        """One ``UPDATE users ... RETURNING id, id AS user_id, ver`` (bumping ``ver``) and its
        outbox row in one transaction, then the push."""
        await self._ledger_up()
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(sql, *args)
            if row is None:
                raise AdminError("user not found")
            await self._outbox(conn, "user", row)
        await self._push("user", int(row["id"]), what)

    async def _live_used(self, read: Callable[[], Awaitable[tuple[int, int]]]) -> int:
        """Live ``used`` for "set remain"; Redis unreachable means nothing is changed."""
        try:
            _, used = await read()
        except LedgerMissing as exc:
            raise AdminError(f"{exc.args[0].split()[0]} not found") from None
        except LEDGER_ERRORS:
            raise AdminError(MSG_LEDGER_DOWN) from None
        return used

    # --- users ---------------------------------------------------------------------------

    async def create_user(
        self,
        username: str,
        role: int = ROLE_USER,
        quota: int = 0,
        group: str = "default",
        display_name: str = "",
        *,
        password: str = "",
        email: str = "",
        remark: str = "",
    ) -> tuple[int, str]:
        """Returns (id, access token). The access token is stored hashed and shown once."""
        username = check_username(username)
        if role not in ROLES.values():
            raise AdminError("role must be 1 (user), 10 (admin) or 100 (root)")
        check_quota(quota, "quota")
        if password:
            check_password(password)
        access = new_access_token()
        password_hash = await hash_password(password) if password else ""
        try:
            async with self.pool.acquire() as conn:
                user_id = await conn.fetchval(
                    'INSERT INTO users (username, display_name, role, "group", quota_limit,'
                    " access_token_hash, password_hash, email, remark)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
                    username, display_name or username, role, group, quota, hash_secret(access),
                    password_hash, email, remark,
                )  # fmt: skip
        except asyncpg.UniqueViolationError:
            raise AdminError(f"username {username!r} is already taken") from None
        return int(user_id), access

    async def user_by_name(self, username: str) -> Any:
        async with self.pool.acquire() as conn:
            return await conn.fetchrow(
                "SELECT * FROM users WHERE username = $1 AND deleted_at IS NULL", username
            )

    async def user_row(self, user_id: int) -> Any:
        async with self.pool.acquire() as conn:
            return await conn.fetchrow(
                "SELECT * FROM users WHERE id = $1 AND deleted_at IS NULL", user_id
            )

    async def rotate_access_token(self, user_id: int) -> str:
        access = new_access_token()
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                "UPDATE users SET access_token_hash = $2 WHERE id = $1 AND deleted_at IS NULL",
                user_id, hash_secret(access),
            )  # fmt: skip
        if done != "UPDATE 1":
            raise AdminError("user not found")
        return access

    async def add_user_quota(self, user_id: int, delta: int, op_id: str | None = None) -> bool:
        """Top-up (or a debit with a negative delta): moves ``limit`` only.

        With ``op_id`` the credit happens at most once: the id is claimed in the same
        transaction, and a repeat (same user and amount) only pushes again. Returns whether
        this call credited.
        """
        if op_id is not None and not 0 < len(op_id) <= MAX_OP_ID:
            raise AdminError(f"operation id must be 1 to {MAX_OP_ID} characters")
        await self._ledger_up()
        async with self.pool.acquire() as conn, conn.transaction():
            found = await conn.fetchval(
                "SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE", user_id
            )
            if found is None:
                raise AdminError("user not found")
            if op_id is not None and not await self._claim_op(conn, op_id, user_id, delta):
                credited = False
            else:
                row = await conn.fetchrow(
                    "UPDATE users SET quota_limit = quota_limit + $2, ver = ver + 1"
                    " WHERE id = $1 RETURNING id, id AS user_id, ver",
                    user_id, delta,
                )  # fmt: skip
                await self._outbox(conn, "user", row)
                credited = True
        await self._push("user", user_id, "The quota change")
        return credited

    @staticmethod
    async def _claim_op(conn: Any, op_id: str, user_id: int, delta: int) -> bool:
        """True if ``op_id`` is new (now claimed); False if this very top-up already ran."""
        if await conn.fetchval(queries.QUOTA_OP_CLAIM, op_id, user_id, delta) is not None:
            return True
        prior = await conn.fetchrow(queries.QUOTA_OP_BY_ID, op_id)
        if (int(prior["user_id"]), int(prior["delta"])) != (user_id, delta):
            raise AdminError(f"operation id {op_id!r} was already used for another top-up")
        return False

    async def set_user_remain(self, user_id: int, remain: int) -> int:
        """``limit := used_live + remain``; returns the limit.

        ``used`` is read from Redis first (spend landing after that read counts against the
        new remain, as it would a moment later); the limit is committed in PostgreSQL and
        pushed version-checked, never written to Redis directly.
        """
        check_quota(remain, "quota")
        used = await self._live_used(lambda: self.accounts.live_user(user_id))
        limit = used + remain
        await self._write_user(
            "UPDATE users SET quota_limit = $2, ver = ver + 1"
            " WHERE id = $1 AND deleted_at IS NULL RETURNING id, id AS user_id, ver",
            (user_id, limit),
            "The quota change",
        )
        return limit

    async def set_user_status(self, user_id: int, status: int) -> None:
        await self._write_user(
            "UPDATE users SET status = $2, ver = ver + 1"
            " WHERE id = $1 AND deleted_at IS NULL RETURNING id, id AS user_id, ver",
            (user_id, status),
            "The status change",
        )

    async def set_user_role(self, user_id: int, role: int) -> None:
        if role not in ROLES.values():
            raise AdminError("role must be 1 (user), 10 (admin) or 100 (root)")
        # The role is part of every cached token's metadata: the push drops them.
        await self._write_user(
            "UPDATE users SET role = $2, ver = ver + 1"
            " WHERE id = $1 AND deleted_at IS NULL RETURNING id, id AS user_id, ver",
            (user_id, role),
            "The role change",
        )

    async def update_user(self, user_id: int, changes: dict[str, Any]) -> None:
        """Profile fields (``USER_UPDATABLE``); quota goes through ``set_user_remain``."""
        sets: list[str] = []
        args: list[Any] = [user_id]
        for field in USER_UPDATABLE:
            if field not in changes:
                continue
            value = changes[field]
            if field == "username":
                value = check_username(value)
            if field == "password":
                check_password(value)
                field, value = "password_hash", await hash_password(value)
            args.append(value)
            sets.append(f'"{field}" = ${len(args)}')
        if sets:
            sql = (
                f"UPDATE users SET {', '.join(sets)}, ver = ver + 1"
                " WHERE id = $1 AND deleted_at IS NULL RETURNING id, id AS user_id, ver"
            )
            try:
                await self._write_user(sql, args, "The change")
            except asyncpg.UniqueViolationError:
                raise AdminError(f"username {changes.get('username')!r} is already taken") from None
        if "quota" in changes:
            await self.set_user_remain(user_id, int(changes["quota"]))

    async def delete_user(self, user_id: int) -> None:
        """Soft delete: the user's tokens stop at once (the ledger marks the user disabled) and
        the access token is forgotten; the username becomes free again."""
        await self._write_user(
            "UPDATE users SET deleted_at = $2, access_token_hash = NULL, ver = ver + 1"
            " WHERE id = $1 AND deleted_at IS NULL RETURNING id, id AS user_id, ver",
            (user_id, int(time.time())),
            "The deletion",
        )

    # --- tokens --------------------------------------------------------------------------

    async def create_token(
        self,
        user_id: int,
        name: str,
        *,
        remain_quota: int = 0,
        unlimited: bool = False,
        models: str | Sequence[str] | None = None,
        model_limits_enabled: bool | None = None,
        allow_ips: str | Sequence[str] | None = None,
        expired_time: int = -1,
        group: str = "",
        daily_quota: int = 0,
        monthly_quota: int = 0,
        max_tokens: int | None = None,
    ) -> CreatedToken:
        """``max_tokens`` caps the user's live tokens; the count and the insert run under a
        lock on the user's row, so concurrent creates cannot pass the cap together."""
        check_token_name(name)
        check_quota(remain_quota, "remain_quota")
        check_quota(daily_quota, "daily_quota")
        check_quota(monthly_quota, "monthly_quota")
        if expired_time != -1 and expired_time < 0:
            raise AdminError("expired_time must be -1 (never) or a unix timestamp")
        model_list = normalize_models(models)
        enabled = bool(model_list) if model_limits_enabled is None else model_limits_enabled
        ips = normalize_allow_ips(allow_ips)
        key = new_token_key()
        try:  # before the row: a committed key is always in the index (relaygate.keyindex)
            await self.accounts.key_index.add(hash_secret(key))
        except LEDGER_ERRORS:
            raise AdminError(MSG_LEDGER_DOWN) from None
        async with self.pool.acquire() as conn, conn.transaction():
            exists = await conn.fetchval(
                "SELECT 1 FROM users WHERE id = $1 AND deleted_at IS NULL FOR UPDATE", user_id
            )
            if not exists:
                raise AdminError(f"user {user_id} not found")
            if max_tokens is not None:
                count = await conn.fetchval(api_queries.COUNT_TOKENS_OF_USER, user_id)
                if int(count) >= max_tokens:
                    raise AdminError(f"Maximum number of tokens reached ({max_tokens})")
            token_id = await conn.fetchval(
                "INSERT INTO tokens (user_id, key_hash, key_mask, name, expired_time, quota_limit,"
                " unlimited_quota, model_limits_enabled, model_limits, allow_ips, \"group\","
                " daily_quota, monthly_quota, created_time)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) RETURNING id",
                user_id, hash_secret(key), mask_key(key), name, expired_time, remain_quota,
                unlimited, enabled, model_list, ips, group, daily_quota, monthly_quota,
                int(time.time()),
            )  # fmt: skip
        return CreatedToken(int(token_id), key)

    async def token_row(self, token_id: int, user_id: int | None = None) -> Any:
        async with self.pool.acquire() as conn:
            if user_id is None:
                return await conn.fetchrow(
                    "SELECT * FROM tokens WHERE id = $1 AND deleted_at IS NULL", token_id
                )
            return await conn.fetchrow(
                "SELECT * FROM tokens WHERE id = $1 AND user_id = $2 AND deleted_at IS NULL",
                token_id, user_id,
            )  # fmt: skip

    async def update_token(
        self, token_id: int, changes: dict[str, Any], user_id: int | None = None
    ) -> None:
        """Apply validated field changes in one PostgreSQL transaction, then push them.

        ``remain_quota`` becomes ``limit := used_live + X`` with ``used`` read from the ledger
        first (Redis unreachable: nothing changes); ``add_quota`` adds to ``limit``. ``used``
        is never written. Other fields are written as given. ``user_id`` restricts the
        write to that owner's token.
        """
        sets, args, remain = _token_changes(token_id, changes)
        row = await self.token_row(token_id, user_id)
        if row is None:
            raise AdminError("token not found")
        if not sets and remain is None:
            return
        if remain is not None:
            owner = int(row["user_id"])
            used = await self._live_used(lambda: self.accounts.live_token(token_id, owner))
            args.append(used + remain)
            sets.append(f"quota_limit = ${len(args)}")
        await self._write_token(f"{', '.join(sets)}, ver = ver + 1", args, user_id, "The change")

    async def _write_token(
        self, assignments: str, args: list[Any], user_id: int | None, what: str
    ) -> None:
        """One ``UPDATE tokens SET <assignments>`` of token ``args[0]`` (owned by ``user_id``
        if given) and its outbox row in one transaction, then the push."""
        where = "WHERE id = $1 AND deleted_at IS NULL"
        if user_id is not None:
            args = [*args, user_id]
            where += f" AND user_id = ${len(args)}"
        await self._ledger_up()
        async with self.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                f"UPDATE tokens SET {assignments} {where} RETURNING id, user_id, ver", *args
            )
            if row is None:
                raise AdminError("token not found")
            await self._outbox(conn, "token", row)
        await self._push("token", int(args[0]), what)

    async def delete_token(self, token_id: int, user_id: int | None = None) -> None:
        await self._write_token(
            "deleted_at = $2, ver = ver + 1", [token_id, int(time.time())], user_id, "The deletion"
        )

    # --- channels ------------------------------------------------------------------------

    def checked_base_url(self, base_url: str) -> str:
        """Normalized (no trailing ``/v1``) and allowed by the SSRF guard (relaygate.upstreams)."""
        try:
            return check_base_url(base_url, self.allow_loopback_upstreams)
        except UpstreamRefused as exc:
            raise AdminError(str(exc)) from None

    async def create_channel(
        self,
        name: str,
        base_url: str,
        key: str,
        models: str | Sequence[str],
        *,
        group: str = "default",
        priority: int = 0,
        weight: int = 1,
        type_: int = 1,
        model_mapping: str = "",
        status: int = 1,
        test_model: str = "",
    ) -> int:
        if not key:
            raise AdminError("channel key cannot be empty")
        base_url = self.checked_base_url(base_url)
        model_list = normalize_models(models)
        if not model_list:
            raise AdminError("a channel needs at least one model")
        if status not in CHANNEL_STATUSES:
            raise AdminError("status must be 1 (enabled), 2 (disabled) or 3 (auto-disabled)")
        async with self.pool.acquire() as conn:
            channel_id = await conn.fetchval(
                'INSERT INTO channels (type, name, key, base_url, models, "group", priority,'
                " weight, model_mapping, status, test_model)"
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"
                " RETURNING id",
                type_, name, key, base_url, model_list, group, priority, weight,
                model_mapping, status, test_model,
            )  # fmt: skip
        await self.announce_channel(int(channel_id))
        return int(channel_id)

    async def update_channel(self, channel_id: int, changes: dict[str, Any]) -> None:
        """Write the given fields; an empty ``key`` keeps the stored one (it is write-only,
        so clients that echo a channel back without it must not wipe it)."""
        sets: list[str] = []
        args: list[Any] = [channel_id]

        def put(column: str, value: Any) -> None:
            args.append(value)
            sets.append(f'"{column}" = ${len(args)}')

        for field in ("type", "name", "priority", "weight", "model_mapping", "test_model", "group"):
            if field in changes:
                put(field, changes[field])
        if changes.get("key"):
            put("key", changes["key"])
        if "base_url" in changes:
            put("base_url", self.checked_base_url(str(changes["base_url"])))
        if "models" in changes:
            model_list = normalize_models(changes["models"])
            if not model_list:
                raise AdminError("a channel needs at least one model")
            put("models", model_list)
        if "status" in changes:
            if changes["status"] not in CHANNEL_STATUSES:
                raise AdminError("status must be 1 (enabled), 2 (disabled) or 3 (auto-disabled)")
            put("status", changes["status"])
        async with self.pool.acquire() as conn:
            if sets:
                done = await conn.execute(
                    f"UPDATE channels SET {', '.join(sets)} WHERE id = $1 AND deleted_at IS NULL",
                    *args,
                )
            else:
                found = await conn.fetchval(
                    "SELECT 1 FROM channels WHERE id = $1 AND deleted_at IS NULL", channel_id
                )
                done = "UPDATE 1" if found else "UPDATE 0"
        if done != "UPDATE 1":
            raise AdminError("Channel does not exist")
        await self.announce_channel(channel_id)

    async def delete_channel(self, channel_id: int) -> None:
        async with self.pool.acquire() as conn:
            done = await conn.execute(
                "UPDATE channels SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL",
                channel_id, int(time.time()),
            )  # fmt: skip
        if done != "UPDATE 1":
            raise AdminError("Channel does not exist")
        await self.announce_channel(channel_id)

    async def record_channel_test(self, channel_id: int, response_ms: int) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE channels SET test_time = $2, response_time = $3 WHERE id = $1",
                channel_id, int(time.time()), response_ms,
            )  # fmt: skip

    async def announce_channel(self, channel_id: int) -> None:
        await self.accounts.redis.publish(self.accounts.keys.inval_channel, msg_channel(channel_id))

    async def set_option(self, key: str, value: str) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO options (key, value) VALUES ($1, $2)"
                " ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                key, value,
            )  # fmt: skip
        await self.accounts.redis.publish(self.accounts.keys.inval_channel, f"opt:{key}")
