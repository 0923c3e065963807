"""The write protocol shared by every management change (see relaygate.admin)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import asyncpg

from relaygate.accounts import Accounts, LedgerMissing
from relaygate.admin.rules import (
    LEDGER_ERRORS,
    MSG_LEDGER_DOWN,
    AdminError,
    LedgerPending,
    pending_message,
)
from relaygate.store import queries

log = logging.getLogger(__name__)


class AdminBase:
    """The write protocol every management change follows: PostgreSQL, outbox, push."""

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
