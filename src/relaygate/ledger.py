"""The Python face of the Lua ledger scripts (reserve, settle, sync).

Scripts are package files read once, registered by SHA and called with EVALSHA; on
``NOSCRIPT`` (a ``SCRIPT FLUSH`` or a restarted Redis) the script is loaded again and the
call retried, so no request fails for it. The connection is anything with redis-py's
``execute_command`` (``Executor``: the ordinary pool, fakeredis in unit tests); the hot path
passes a ``Pipeline`` (``relaygate.redispipe``), which can also queue a command without a
coroutine of its own. The ledger knows these two shapes, never a concrete transport.
"""

from __future__ import annotations

import asyncio
import enum
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

from redis.exceptions import NoScriptError, ResponseError


class Executor(Protocol):
    async def execute_command(self, *args: Any, **options: Any) -> Any: ...


class Pipeline(Executor, Protocol):
    """A connection that can queue a command and hand back its reply future directly."""

    def send(self, *args: Any) -> asyncio.Future[Any] | None:
        """The reply future, or None when the command cannot be queued now (down,
        saturated): then ``execute_command`` is the way."""

    def written(self) -> asyncio.Future[None]:
        """Resolved once everything queued so far has been handed to the socket."""

    def quiet(self) -> bool:
        """No reply is outstanding but those of the commands still buffered: the process is
        not busy with Redis (one request at a time), so ``written()`` writes at once."""

    async def aclose(self) -> None: ...


class Code(enum.IntEnum):
    OK = 0
    TOKEN_MISSING = 1
    USER_MISSING = 2
    STALE = 3
    TOKEN_DISABLED = 10
    TOKEN_EXPIRED = 11
    TOKEN_EXHAUSTED = 12
    TOKEN_DELETED = 13
    USER_DISABLED = 20
    TOKEN_QUOTA = 30
    USER_QUOTA = 31
    DAILY_QUOTA = 32
    MONTHLY_QUOTA = 33


_CODES = {c.value: c for c in Code}  # a dict lookup: Code(n) runs the enum machinery

# Token status values (New API) plus our tombstone for soft-deleted tokens.
STATUS_ENABLED = 1
STATUS_DISABLED = 2
STATUS_EXPIRED = 3
STATUS_EXHAUSTED = 4
STATUS_DELETED = 9


class Script:
    """One Lua file, addressed by SHA; on NOSCRIPT it is sent once with EVAL (which caches it)."""

    __slots__ = ("body", "name", "sha")

    def __init__(self, name: str) -> None:
        self.name = name
        self.body = resources.files("relaygate").joinpath(f"lua/{name}.lua").read_bytes()
        self.sha = hashlib.sha1(self.body).hexdigest()

    async def __call__(self, conn: Executor, keys: Sequence[str], args: Sequence[Any]) -> Any:
        try:
            return await conn.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except ResponseError as exc:
            if not is_noscript(exc):
                raise
        return await self._eval(conn, keys, args)

    async def pipelined(
        self,
        conn: Pipeline,
        keys: Sequence[str],
        args: Sequence[Any],
        meanwhile: Callable[[], None] | None = None,
    ) -> Any:
        """As a call, but queued without the coroutine layers of ``execute_command`` when
        the connection can take it now (the hot path). ``meanwhile`` runs once the command
        is on its way and before its reply is awaited (only then: not on the slow path)."""
        sent = conn.send("EVALSHA", self.sha, len(keys), *keys, *args)
        if sent is None:
            return await self(conn, keys, args)
        if meanwhile is not None:
            meanwhile()
        try:
            return await sent
        except ResponseError as exc:
            if not is_noscript(exc):
                raise
        return await self._eval(conn, keys, args)

    async def _eval(self, conn: Executor, keys: Sequence[str], args: Sequence[Any]) -> Any:
        # EVAL sends the body, runs it and caches it server-side in one step, so it cannot
        # lose a race with another SCRIPT FLUSH the way SCRIPT LOAD + EVALSHA could.
        return await conn.execute_command("EVAL", self.body, len(keys), *keys, *args)


def is_noscript(exc: ResponseError) -> bool:
    """Some clients do not map NOSCRIPT to NoScriptError."""
    return isinstance(exc, NoScriptError) or str(exc).startswith("NOSCRIPT")


@dataclass(frozen=True, slots=True)
class Scripts:
    reserve: Script
    settle: Script
    sync: Script
    reap: Script
    set_remain: Script

    @classmethod
    def load(cls) -> Scripts:
        return cls(
            reserve=Script("reserve"),
            settle=Script("settle"),
            sync=Script("sync"),
            reap=Script("reap"),
            set_remain=Script("set_remain"),
        )

    async def preload(self, conn: Executor) -> None:
        for script in (self.reserve, self.settle, self.sync, self.reap, self.set_remain):
            await conn.execute_command("SCRIPT", "LOAD", script.body)


@dataclass(frozen=True, slots=True)
class Reservation:
    code: Code
    ver: int
    amount: int
    clamp_tokens: int
    room: int = 0  # quota refusals: what the token/user/period had left


@dataclass(frozen=True, slots=True)
class ReserveRequest:
    """Everything the reserve script needs besides the keys."""

    cached_ver: int
    now: int
    base: int
    per_token_micro: int
    full_tokens: int
    clamp: bool
    member_prefix: str  # "<rid>|<token>|<user>|<day>|<month>|<relay instance>"
    deadline: int


async def reserve(
    scripts: Scripts,
    conn: Executor,
    keys: Sequence[str],
    req: ReserveRequest,
    ttls: tuple[int, int],
) -> Reservation:
    return _reservation(await scripts.reserve(conn, keys, _reserve_args(req, ttls)))


async def reserve_pipelined(
    scripts: Scripts,
    conn: Pipeline,
    keys: Sequence[str],
    req: ReserveRequest,
    ttls: tuple[int, int],
    meanwhile: Callable[[], None] | None = None,
) -> Reservation:
    """``reserve`` on the hot path's connection (``Script.pipelined``)."""
    raw = await scripts.reserve.pipelined(conn, keys, _reserve_args(req, ttls), meanwhile)
    return _reservation(raw)


def _reserve_args(req: ReserveRequest, ttls: tuple[int, int]) -> tuple[Any, ...]:
    return (
        req.cached_ver,
        req.now,
        req.base,
        req.per_token_micro,
        req.full_tokens,
        1 if req.clamp else 0,
        ttls[0],
        ttls[1],
        req.member_prefix,
        req.deadline,
    )


def _reservation(raw: Any) -> Reservation:
    room = int(raw[4]) if len(raw) > 4 else 0
    return Reservation(_CODES[int(raw[0])], int(raw[1]), int(raw[2]), int(raw[3]), room)


@dataclass(frozen=True, slots=True)
class SettleCall:
    """One request's settle: the same arguments for the first attempt and every replay.

    Applying it twice is harmless: settle.lua applies a settle only if it still finds the
    reservation (or finds it reaped), so a replay after a lost reply is a no-op.
    """

    keys: Sequence[str]  # token, user, day, month, stream, orphans, reservations, reaped
    reserved: int
    actual: int
    orphan_fields: tuple[str, str]  # ("t<token id>", "u<user id>")
    member: str  # the reservation's zset member
    rid: str  # the request id (the member's first field)
    event: bytes | None  # the usage event (``relaygate.events``); None = refund only

    def argv(self) -> tuple[Any, ...]:
        """ARGV of settle.lua."""
        flags = 1 if self.event is not None else 0
        head = (self.reserved, self.actual, flags, *self.orphan_fields, self.member, self.rid)
        return head if self.event is None else (*head, self.event)


@dataclass(frozen=True, slots=True)
class Settled:
    charged: int
    capped: bool
    found: int  # the reservation as found: its amount, 0 = it had been reaped, -1 = done before


async def settle(scripts: Scripts, conn: Executor, call: SettleCall) -> Settled:
    """One attempt; raises RedisError when Redis cannot be reached or answered too late.

    The caller that gets an error keeps the call and replays it (``relaygate.settles``):
    whether this attempt ran or not, the replay applies it exactly once.
    """
    raw = await scripts.settle(conn, call.keys, call.argv())
    return Settled(int(raw[0]), bool(int(raw[1])), int(raw[2]))


def send_settle(
    scripts: Scripts, conn: Pipeline, call: SettleCall
) -> tuple[asyncio.Future[Any], asyncio.Future[None]] | None:
    """Queue a first settle attempt without waiting, when ``conn`` can take it now:
    (reply, written), see ``Pipeline.send``; None otherwise (then call ``settle``).

    The reply is ``settle.lua``'s raw array. Whatever goes wrong with it (NOSCRIPT, a dropped
    connection, a deadline) is mended by replaying the call, which applies it only if this
    attempt did not.
    """
    keys = call.keys
    reply = conn.send("EVALSHA", scripts.settle.sha, len(keys), *keys, *call.argv())
    return None if reply is None else (reply, conn.written())


async def sync(
    scripts: Scripts,
    conn: Executor,
    hash_key: str,
    orphans_key: str,
    mode: str,
    ver: int,
    orphan_field: str,
    orphans_seen: int,
    fields: dict[str, int | str],
) -> int:
    flat: list[Any] = []
    for name, value in fields.items():
        flat.extend((name, value))
    raw = await scripts.sync(
        conn, (hash_key, orphans_key), (mode, ver, orphan_field, orphans_seen, *flat)
    )
    return int(raw)


def reservation_member(prefix: str, amount: int) -> str:
    return f"{prefix}|{amount}"


@dataclass(frozen=True, slots=True)
class OpenReservation:
    rid: str
    token_id: int
    user_id: int
    day: str
    month: str
    instance: str  # the relay process holding it (its heartbeat key says if it is alive)
    amount: int


def parse_reservation_member(member: str) -> OpenReservation:
    """A zset member written by reserve.lua; raises ValueError if malformed."""
    rid, tok, user, day, month, instance, amount = member.split("|")
    return OpenReservation(rid, int(tok), int(user), day, month, instance, int(amount))


async def reap(
    scripts: Scripts, conn: Executor, keys: Sequence[str], member: str, amount: int
) -> bool:
    """Refund one reservation; ``keys``: token, user, day, month, reservations, reaped."""
    rid = member.split("|", 1)[0]
    return bool(int(await scripts.reap(conn, keys, (member, amount, rid, int(time.time())))))


def token_orphan_field(token_id: int) -> str:
    return f"t{token_id}"


def user_orphan_field(user_id: int) -> str:
    return f"u{user_id}"
