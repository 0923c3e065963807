"""The two ledger calls of a relay request and what surrounds them: one reserve (with the
rebuilds and reloads the script may ask for), then exactly one settle, whatever happens to
Redis or to the handler (relaygate.settles keeps and replays what Redis could not take).
A request whose relay dies before settling is refunded by the reaper once that relay's
heartbeat has lapsed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relaygate import events, ledger
from relaygate.cache import TokenMeta
from relaygate.channels import Channel
from relaygate.keys import DAY_TTL_SECONDS, MONTH_TTL_SECONDS, day_and_month, day_key, month_key
from relaygate.ledger import Code, ReserveRequest
from relaygate.relay import errors
from relaygate.relay.auth import IPAddress
from relaygate.relay.errors import RelayError
from relaygate.relay.request import Job
from relaygate.relay.scope import check_scope, reload_meta
from relaygate.runtime import Runtime
from relaygate.settles import LostReserve

log = logging.getLogger(__name__)

MAX_RESERVE_ROUNDS = 4

_CODE_ERRORS: dict[Code, RelayError] = {
    Code.TOKEN_DISABLED: errors.TOKEN_DISABLED,
    Code.TOKEN_EXPIRED: errors.TOKEN_EXPIRED,
    Code.TOKEN_EXHAUSTED: errors.TOKEN_EXHAUSTED,
    Code.TOKEN_DELETED: errors.TOKEN_DELETED,
    Code.USER_DISABLED: errors.USER_DISABLED,
    Code.TOKEN_QUOTA: errors.TOKEN_QUOTA,
    Code.USER_QUOTA: errors.USER_QUOTA,
    Code.DAILY_QUOTA: errors.DAILY_QUOTA,
    Code.MONTHLY_QUOTA: errors.MONTHLY_QUOTA,
}


async def reserve(
    rt: Runtime,
    meta: TokenMeta,
    key_hash: bytes,
    model: str,
    ip: IPAddress | None,
    rid: str,
    base: int,
    per_token_micro: int,
    full: int,
    meanwhile: Callable[[], None] | None = None,
) -> tuple[TokenMeta, ledger.Reservation, tuple[str, str, str, str], str]:
    """One EVALSHA on the warm path; rebuilds or reloads only when the script asks for it.
    ``meanwhile`` runs once, when the first attempt is on its way (relay.early)."""
    for _ in range(MAX_RESERVE_ROUNDS):
        now = int(time.time())
        day, month = day_and_month(now)
        owner = meta.owner
        token_key = meta.token_key
        ledger_keys = (
            token_key,
            owner.user_key,
            day_key(token_key, day),
            month_key(token_key, month),
        )
        prefix = f"{rid}|{meta.id}|{owner.user_id}|{day}|{month}|{rt.instance}"
        req = ReserveRequest(
            cached_ver=meta.ver,
            now=now,
            base=base,
            per_token_micro=per_token_micro,
            full_tokens=full,
            clamp=rt.settings.clamp_max_tokens,
            member_prefix=prefix,
            deadline=now + rt.settings.reservation_ttl,
        )
        try:
            res = await ledger.reserve_pipelined(
                rt.scripts,
                rt.hot,
                (*ledger_keys, owner.resv_key, owner.refused_key),
                req,
                (DAY_TTL_SECONDS, MONTH_TTL_SECONDS),
                meanwhile,
            )
        except RedisError as exc:
            log.error("reserve failed: %s", exc)
            if isinstance(exc, RedisConnectionError | RedisTimeoutError):
                # Its reply is lost, but it may have run: give that reservation back (this
                # relay is alive, so the reaper never will). Kept until Redis applies it.
                rt.settles.keep(LostReserve(owner.resv_key, ledger_keys, prefix))
            raise errors.LEDGER_UNAVAILABLE from None
        meanwhile = None
        if res.code == Code.OK:
            rt.tally.inc("reserves")
            return meta, res, ledger_keys, ledger.reservation_member(prefix, res.amount)
        if res.code == Code.TOKEN_MISSING:
            await _rebuild(rt.accounts.ensure_token(meta.id, meta.user_id))
        elif res.code == Code.USER_MISSING:
            await _rebuild(rt.accounts.ensure_user(meta.user_id))
        elif res.code == Code.STALE:
            fresh = await reload_meta(rt, key_hash)
            if fresh.ver > res.ver:
                # PostgreSQL is ahead of Redis (a writer died between its two steps): heal.
                await _rebuild(rt.accounts.push_token(fresh.id))
            elif fresh.ver < res.ver:
                raise errors.METADATA_UNAVAILABLE
            check_scope(fresh, model, ip)
            meta = fresh
        elif res.code in QUOTA_CODES:
            rt.tally.inc("rejections", (res.code.name.lower(),))
            needed = least_needed(base, per_token_micro, full, rt.settings.clamp_max_tokens)
            raise errors.quota_refusal(_CODE_ERRORS[res.code], needed, res.room)
        else:
            rt.tally.inc("rejections", (res.code.name.lower(),))
            raise _CODE_ERRORS.get(res.code, errors.TOKEN_DISABLED)
    raise errors.METADATA_UNAVAILABLE


QUOTA_CODES = frozenset((Code.TOKEN_QUOTA, Code.USER_QUOTA, Code.DAILY_QUOTA, Code.MONTHLY_QUOTA))


def least_needed(base: int, per_token_micro: int, full: int, clamp: bool) -> int:
    """The least reservation the request could have been admitted with (reserve.lua's
    rule): its base for a per-call price; base plus one output token when the output bound
    may be lowered to fit (clamp); else base plus its whole output bound."""
    if per_token_micro == 0:
        return base
    tokens = 1 if clamp else full
    return base + -(-tokens * per_token_micro // 1_000_000)


async def _rebuild(coro: Any) -> None:
    try:
        await coro
    except Exception as exc:
        log.warning("ledger rebuild failed: %s", exc)
        raise errors.LEDGER_UNAVAILABLE from None


Respond = Callable[[], Awaitable[None]]


async def settle(
    rt: Runtime,
    job: Job,
    actual: int,
    event: bytes | None,
    respond: Respond | None = None,
) -> None:
    """Exactly one per admitted request, whatever happens to Redis or to the handler.

    With ``respond`` (what sends the answer to the client), the settle is written to Redis
    first (with the other commands of this loop tick), then the answer is sent, and the
    handler is done: the client does not wait for a Redis round trip, anyone who reads the
    ledger after seeing the answer finds the settle applied (Redis received it before the
    client received anything), and the reply is checked by a callback rather than by
    resuming the handler.

    Whenever the outcome is unknown (the reply failed, was late, or the handler was
    cancelled), the settle is handed to the keeper (``relaygate.settles``), which journals it
    and replays it until Redis applies it; settle.lua applies it exactly once however many
    times it arrives. So an answered request is never left uncharged by a Redis outage.
    """
    meta = job.meta
    tally = rt.tally
    if event is None:
        tally.inc("refunds")
    else:
        tally.inc("settles")
        tally.inc("charged", (job.model, meta.group), actual)
    owner = meta.owner
    call = ledger.SettleCall(
        keys=(
            *job.ledger_keys,
            owner.stream_key,
            owner.orphans_key,
            owner.resv_key,
            owner.reaped_key,
        ),
        reserved=job.reserved,
        actual=actual,
        orphan_fields=(meta.token_orphan, owner.user_orphan),
        member=job.member,
        rid=job.rid,
        event=event,
    )
    sent = ledger.send_settle(rt.scripts, rt.hot, call) if respond is not None else None
    if sent is None or respond is None:
        await _settle_now(rt, call)
        if respond is not None:
            await respond()
        return
    reply, written = sent
    rt.background.watch(reply, lambda: rt.settles.keep(call))
    await written
    await respond()


async def settle_and_send(
    request: web.Request,
    rt: Runtime,
    job: Job,
    response: web.Response,
    actual: int,
    event: bytes | None,
) -> tuple[web.StreamResponse, bool]:
    """A whole answer: settled (written to Redis), then sent (``settle``'s order)."""

    async def respond() -> None:
        await response.prepare(request)
        await response.write_eof()

    await settle(rt, job, actual, event, respond)
    return response, True


async def _settle_now(rt: Runtime, call: ledger.SettleCall) -> None:
    try:
        await ledger.settle(rt.scripts, rt.hot, call)
    except asyncio.CancelledError:
        rt.settles.keep(call)
        raise
    except RedisError as exc:
        log.warning("settle of request %s kept for replay: %s", call.rid, exc)
        rt.settles.keep(call)


def usage_event(
    job: Job,
    channel: Channel,
    prompt: int,
    completion: int,
    stream: bool,
    estimated: bool,
) -> bytes:
    meta = job.meta
    other = job.rates.event_other(estimated, job.reserved)
    if len(job.attempts) > 1:  # New API's record of the channels a retried request tried
        tried = ",".join(f'"{c}"' for c in job.attempts)
        other = f'{other[:-1]},"admin_info":{{"use_channel":[{tried}]}}}}'
    return events.encode(
        {
            "rid": job.rid,
            "ts": int(time.time()),
            "user": meta.user_id,
            "token": meta.id,
            "tname": meta.name,
            "uname": meta.username,
            "model": job.model,
            "chan": channel.id,
            "group": meta.group,
            "pt": prompt,
            "ct": completion,
            "stream": 1 if stream else 0,
            "lat": int((time.perf_counter() - job.t0) * 1000),
            "ip": job.ip,
            "other": other,
        }
    )
