"""The hot path (DESIGN.md "The hot path"): key -> cached metadata -> in-memory checks ->
one reserve EVALSHA -> forward (streaming passes bytes through) -> one settle EVALSHA.

No PostgreSQL round trip on a warm cache. Every exit after a successful reservation goes
through exactly one settle (charge, or refund with ``actual = 0``), kept and replayed when
Redis cannot take it (relaygate.settles); a request whose relay dies before settling is
refunded by the reaper once that relay's heartbeat has lapsed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from random import getrandbits
from typing import Any

import aiohttp
import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relaygate import errors, events, ledger, upstreams
from relaygate.cache import TokenMeta
from relaygate.channels import Channel
from relaygate.credentials import hash_secret
from relaygate.errors import RelayError
from relaygate.keys import DAY_TTL_SECONDS, MONTH_TTL_SECONDS, day_and_month, day_key, month_key
from relaygate.ledger import Code, ReserveRequest
from relaygate.pricing import ModelPricing, Rates
from relaygate.redact import redact, redact_bytes
from relaygate.relay import dialects
from relaygate.relay.auth import IPAddress, client_ip, extract_key, ip_text
from relaygate.relay.sse import SSEUsageFilter
from relaygate.runtime import Runtime
from relaygate.settles import MAX_KEPT, LostReserve
from relaygate.stats import STATS

log = logging.getLogger(__name__)

RUNTIME: web.AppKey[Runtime] = web.AppKey("relaygate.runtime", Runtime)

IMAGE_TOKEN_BOUND = 1500  # prompt tokens one image may cost (gpt-4o high detail, 2048 px)
MAX_RESERVE_ROUNDS = 4
MAX_CHANNEL_ATTEMPTS = 2
MAX_HELD = 64 * 1024  # bytes after the end marker held for the last write; beyond, sent on
JSON_CT = "application/json"

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


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How one route is priced, sized and spoken."""

    path: str
    max_field: str | None  # the request field that bounds the output, if any
    default_output: int | None  # None = the settings' allowance; 0 = no output tokens
    streams: bool
    dialect: str = dialects.OPENAI
    route: str = ""  # the aiohttp route, also the metrics label; the path unless set

    def __post_init__(self) -> None:
        if not self.route:
            object.__setattr__(self, "route", self.path)


CHAT = Endpoint("/v1/chat/completions", "max_tokens", None, True)
COMPLETIONS = Endpoint("/v1/completions", "max_tokens", 16, True)
EMBEDDINGS = Endpoint("/v1/embeddings", None, 0, False)
IMAGES = Endpoint("/v1/images/generations", None, 0, False)
CLAUDE_MESSAGES = Endpoint("/v1/messages", "max_tokens", None, True, dialects.CLAUDE)
GEMINI_GENERATE = Endpoint(
    "/v1beta/models", "maxOutputTokens", None, True, dialects.GEMINI, "/v1beta/models/{target}"
)


def new_request_id() -> str:
    """Unique and time-ordered: nanosecond clock then 32 random bits, in hex.

    ``random`` rather than ``os.urandom`` (a syscall per request): the id needs uniqueness,
    not secrecy, and ``random`` is reseeded in every forked worker."""
    return f"{time.time_ns():016x}{getrandbits(32):08x}"


@dataclass(slots=True)
class Job:
    """One admitted request: what was reserved, and everything the usage event needs."""

    rid: str
    meta: TokenMeta
    model: str
    rates: Rates
    body_bytes: int
    reserved: int
    ledger_keys: tuple[str, str, str, str]
    member: str
    ip: str
    t0: float


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise errors.bad_request("The request body is empty; send a JSON object.", "invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(
            f"The request body is not valid JSON: {exc}", "invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object.", "invalid_json")
    return body


def requested_model(body: dict[str, Any], request: web.Request, ep: Endpoint) -> tuple[str, bool]:
    """(model, stream). Gemini names both in the path: ``/v1beta/models/{model}:{action}``."""
    if ep.dialect == dialects.GEMINI:
        model, _, action = request.match_info.get("target", "").partition(":")
        if not model or action not in ("generateContent", "streamGenerateContent"):
            raise errors.bad_request(
                "Expected /v1beta/models/{model}:generateContent or :streamGenerateContent.",
                "invalid_path",
            )
        return model, action == "streamGenerateContent"
    named = body.get("model")
    if not isinstance(named, str) or not named.strip():
        raise errors.bad_request(
            "'model' is required and must be a non-empty string.", "missing_model"
        )
    return named, bool(body.get("stream")) and ep.streams


@dataclass(frozen=True, slots=True)
class OutputBound:
    """How much output one request may produce, all of which is reserved."""

    full: int  # completion tokens of the whole answer (every choice): what is reserved
    field: str | None  # the request field carrying the output bound, if the route has one
    choices: int  # n / candidateCount: the answer's choices share ``full``
    send: int  # per-choice bound relaygate must send upstream (0: the client's own stands)
    calls: int = 1  # per-call priced units (images n)


MAX_CHOICES = 128
MAX_IMAGES = 10


def _count(body: dict[str, Any], name: str, value: Any, maximum: int) -> int:
    if value is None:
        return 1
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise errors.bad_request(
            f"'{name}' must be an integer between 1 and {maximum}.", f"invalid_{name}"
        )
    return value


def choices_of(body: dict[str, Any], dialect: str) -> int:
    """How many answers one request asks for: OpenAI ``n``, Gemini ``candidateCount``."""
    if dialect == dialects.OPENAI:
        return _count(body, "n", body.get("n"), MAX_CHOICES)
    if dialect == dialects.GEMINI:
        cfg = body.get("generationConfig")
        count = cfg.get("candidateCount") if isinstance(cfg, dict) else None
        return _count(body, "candidateCount", count, MAX_CHOICES)
    return 1


def output_bounds(
    body: dict[str, Any], ep: Endpoint, pricing: ModelPricing, cap: int
) -> OutputBound:
    """The worst case the request may produce. No allowance smaller than that: reserving
    less than the upstream may deliver is what let concurrent requests overspend, each
    seeing room for a full answer and each reserving a little.

    With no client bound the model's maximum output is reserved (a route with a documented
    default, legacy completions' 16, sends that default explicitly, so that an upstream with
    another default cannot exceed it). ``cap`` (tokens per choice, 0 = none) lowers the bound
    sent upstream."""
    if pricing.is_per_call:
        calls = _count(body, "n", body.get("n"), MAX_IMAGES) if ep is IMAGES else 1
        return OutputBound(0, None, 1, 0, calls)
    if ep.max_field is None:
        return OutputBound(0, None, 1, 0)
    given, field = dialects.max_output(body, ep.dialect, ep.max_field)
    choices = choices_of(body, ep.dialect)
    send = 0
    if given is not None:
        if not isinstance(given, int) or isinstance(given, bool) or given < 1:
            raise errors.bad_request(f"'{field}' must be a positive integer.", f"invalid_{field}")
        per_choice = given
    elif ep.default_output is not None:
        per_choice = send = ep.default_output
    else:
        per_choice = pricing.max_output
    if cap and per_choice > cap:
        per_choice = send = cap
    return OutputBound(per_choice * choices, field, choices, send)


def within_quota_cap(bound: OutputBound, base: int, per_token_micro: int, cap: int) -> OutputBound:
    """Lower the output bound so that one reservation costs at most ``cap`` quota units
    (``RELAYGATE_MAX_RESERVE_QUOTA``): one request with a huge ``max_tokens`` on an
    unlimited token must not hold its user's whole balance while it runs. The lowered
    bound is sent upstream, so the answer stays within what was reserved. The prompt part
    is never cut (one output token per choice stays possible)."""
    if per_token_micro <= 0 or not bound.full:
        return bound
    affordable = (cap - base) * 1_000_000 // per_token_micro
    if bound.full <= affordable:
        return bound
    per_choice = max(1, affordable // bound.choices)
    return replace(bound, full=per_choice * bound.choices, send=per_choice)


def check_scope(meta: TokenMeta, model: str, ip: IPAddress | None) -> None:
    if meta.networks is not None and not meta.ip_allowed(ip):
        raise errors.IP_DENIED
    if meta.models is not None and model not in meta.models:
        raise errors.model_not_allowed(model)


def check_group(rt: Runtime, meta: TokenMeta) -> None:
    """A token's own group must still be one its user may use (a change of the user's group
    or of ``UserUsableGroups`` reaches every instance through the invalidation channel)."""
    reason = rt.prices.group_refusal(meta.user_group, meta.token_group)
    if reason is not None:
        raise errors.group_refused(meta.token_group, reason)


async def confirmed_scope(
    rt: Runtime, meta: TokenMeta, key_hash: bytes, model: str, ip: IPAddress | None
) -> TokenMeta:
    """Check IP and model in memory; before refusing, make sure the metadata is current.

    A refusal is rare, so paying one HGET there buys "a re-scope is honoured on the very next
    request" without any cost on the accepted path (where reserve's ``ver`` check guards).
    """
    try:
        check_scope(meta, model, ip)
        return meta
    except RelayError:
        try:
            ver = await rt.hot.execute_command("HGET", meta.token_key, "ver")
        except RedisError:
            raise errors.LEDGER_UNAVAILABLE from None
        if ver is None or int(ver) == meta.ver:
            raise
    fresh = await reload_meta(rt, key_hash)
    check_scope(fresh, model, ip)
    return fresh


async def reload_meta(rt: Runtime, key_hash: bytes) -> TokenMeta:
    try:
        fresh = await rt.cache.load(key_hash)
    except (TimeoutError, OSError, RedisError) as exc:
        log.warning("token metadata reload failed: %s", exc)
        raise errors.METADATA_UNAVAILABLE from None
    except Exception as exc:  # asyncpg errors have no common base worth importing here
        log.warning("token metadata reload failed: %s", exc)
        raise errors.METADATA_UNAVAILABLE from None
    if fresh is None:
        raise errors.INVALID_KEY
    return fresh


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
) -> tuple[TokenMeta, ledger.Reservation, tuple[str, str, str, str], str]:
    """One EVALSHA on the warm path; rebuilds or reloads only when the script asks for it."""
    for _ in range(MAX_RESERVE_ROUNDS):
        now = int(time.time())
        day, month = day_and_month(now)
        ledger_keys = (
            meta.token_key,
            meta.user_key,
            day_key(meta.token_key, day),
            month_key(meta.token_key, month),
        )
        prefix = f"{rid}|{meta.id}|{meta.user_id}|{day}|{month}|{rt.instance}"
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
            res = await ledger.reserve(
                rt.scripts,
                rt.hot,
                (*ledger_keys, meta.resv_key),
                req,
                (DAY_TTL_SECONDS, MONTH_TTL_SECONDS),
            )
        except RedisError as exc:
            log.error("reserve failed: %s", exc)
            if isinstance(exc, RedisConnectionError | RedisTimeoutError):
                # Its reply is lost, but it may have run: give that reservation back (this
                # relay is alive, so the reaper never will). Kept until Redis applies it.
                rt.settles.keep(LostReserve(meta.resv_key, ledger_keys, prefix))
            raise errors.LEDGER_UNAVAILABLE from None
        if res.code == Code.OK:
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
        else:
            raise _CODE_ERRORS.get(res.code, errors.TOKEN_DISABLED)
    raise errors.METADATA_UNAVAILABLE


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
    call = ledger.SettleCall(
        keys=(*job.ledger_keys, meta.stream_key, meta.orphans_key, meta.resv_key, meta.reaped_key),
        reserved=job.reserved,
        actual=actual,
        orphan_fields=(meta.token_orphan, meta.user_orphan),
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
    rt.watch(reply, lambda: rt.settles.keep(call))
    await written
    await respond()


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


def upstream_headers(channel: Channel) -> dict[str, str]:
    """Headers of an OpenAI-dialect call to ``channel`` (used by the channel test too)."""
    return dialects.upstream_headers(channel, dialects.OPENAI, {})


def splice_include_usage(raw: bytes) -> bytes:
    """``raw`` (a JSON object without ``stream_options``) with include_usage added."""
    end = raw.rindex(b"}")
    return raw[:end] + b',"stream_options":{"include_usage":true}' + raw[end:]


def estimate_tokens(nbytes: int) -> int:
    """Fair estimate for billing when the upstream reports nothing: ~4 bytes per token."""
    return (nbytes + 3) // 4


async def handle(request: web.Request, ep: Endpoint) -> web.StreamResponse:
    """Answer one relay request and record it in the route's metrics."""
    app = request.app
    rt = app[RUNTIME]
    t0 = time.perf_counter()
    rid = new_request_id()
    try:
        response = await _handle(request, rt, ep, rid, t0)
    except RelayError as err:
        err.forget_traceback()
        response = err.response(rid, ep.dialect)
    except Exception:
        app[STATS].record(ep.route, 500, time.perf_counter() - t0)
        raise
    app[STATS].record(ep.route, response.status, time.perf_counter() - t0)
    return response


async def _handle(
    request: web.Request, rt: Runtime, ep: Endpoint, rid: str, t0: float
) -> web.StreamResponse:
    key = extract_key(request)
    if not key:
        raise errors.MISSING_KEY
    key_hash = hash_secret(key)
    ip = client_ip(request, rt.settings.trusted_proxies)
    limiter = rt.auth_failures
    if limiter.blocked(ip) and not rt.cache.holds(key_hash):
        raise errors.AUTH_RATE_LIMITED
    try:
        meta = await rt.cache.get(key_hash)
    except Exception as exc:
        log.warning("token metadata load failed: %s", exc)
        raise errors.METADATA_UNAVAILABLE from None
    if meta is None:
        limiter.failed(ip)
        raise errors.INVALID_KEY
    if meta.token_group:
        check_group(rt, meta)
    if request.content_length is not None and request.content_length > rt.settings.max_body_bytes:
        raise RelayError(413, "Request body too large.", "invalid_request_error", "body_too_large")
    try:
        raw = await request.read()
    except RequestPayloadError:  # a Content-Encoding the body does not match
        raise errors.UNREADABLE_BODY from None
    body = parse_body(raw)
    model, stream = requested_model(body, request, ep)
    if not meta.in_scope(model, ip):  # rare: re-check against current metadata, or refuse
        meta = await confirmed_scope(rt, meta, key_hash, model, ip)
    if not rt.channels.has(meta.group, model):
        raise errors.no_channel(meta.group, model)
    rates = rt.prices.rates(model, meta.group)
    if rates is None:
        raise errors.model_price_missing(model)
    bound = output_bounds(body, ep, rates.pricing, rt.settings.max_reserve_tokens)
    rates = rates.times(bound.calls)
    prompt_bound = len(raw) + IMAGE_TOKEN_BOUND * raw.count(b"image_url")
    rplan = rates.plan(prompt_bound)
    if rt.settings.max_reserve_quota and bound.field is not None:
        bound = within_quota_cap(
            bound, rplan.base, rplan.per_token_micro, rt.settings.max_reserve_quota
        )
    if rt.settles.pending >= MAX_KEPT:
        raise errors.LEDGER_UNAVAILABLE
    meta, res, ledger_keys, member = await reserve(
        rt, meta, key_hash, model, ip, rid, rplan.base, rplan.per_token_micro, bound.full
    )
    job = Job(
        rid=rid,
        meta=meta,
        model=model,
        rates=rates,
        body_bytes=len(raw),
        reserved=res.amount,
        ledger_keys=ledger_keys,
        member=member,
        ip=ip_text(ip),
        t0=t0,
    )
    settled = False
    try:
        modified = False
        # The upstream is never allowed more output than was reserved.
        per_choice = res.clamp_tokens // bound.choices if res.clamp_tokens else bound.send
        if res.clamp_tokens and per_choice < 1:
            raise _CODE_ERRORS[Code.TOKEN_QUOTA]  # not one token for each choice
        if per_choice and bound.field is not None:
            dialects.set_max_output(body, ep.dialect, bound.field, per_choice)
            modified = True
        inject_usage = False
        if stream and ep.dialect == dialects.OPENAI:
            had_opts = "stream_options" in body
            opts = body.get("stream_options")
            if not (isinstance(opts, dict) and opts.get("include_usage") is True):
                body["stream_options"] = {
                    **(opts if isinstance(opts, dict) else {}),
                    "include_usage": True,
                }
                inject_usage = True
                if not had_opts and not modified:
                    # The common case: splice the option into the client's bytes rather
                    # than re-serialize the whole body (the last byte of an object is "}").
                    raw = splice_include_usage(raw)
                else:
                    modified = True
        response, settled = await forward(
            request, rt, ep, job, body, raw, modified, stream, inject_usage
        )
        return response
    finally:
        if not settled:
            await settle(rt, job, 0, None)


async def forward(
    request: web.Request,
    rt: Runtime,
    ep: Endpoint,
    job: Job,
    body: dict[str, Any],
    raw: bytes,
    modified: bool,
    stream: bool,
    inject_usage: bool,
) -> tuple[web.StreamResponse, bool]:
    """Call a channel (another one on a connection failure) and settle. Returns (response,
    settled); when settled is False the caller refunds."""
    tried: frozenset[int] = frozenset()
    for attempt in range(MAX_CHANNEL_ATTEMPTS):
        channel = rt.channels.pick(job.meta.group, job.model, attempt, tried)
        if channel is None:
            break
        tried |= {channel.id}
        upstream_model = channel.upstream_model(job.model)
        if upstream_model != job.model and ep.dialect != dialects.GEMINI:
            body["model"] = upstream_model
            modified = True
        payload = orjson.dumps(body) if modified else raw
        url = channel.base_url + dialects.upstream_path(ep.dialect, ep.path, upstream_model, stream)
        headers = dialects.upstream_headers(channel, ep.dialect, request.headers)
        t_up = time.perf_counter()
        try:
            up = await rt.http.post(url, data=payload, headers=headers)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            refusal = upstreams.refusal_of(exc)
            if refusal is not None:
                log.warning("channel %d not called: %s", channel.id, refusal)
            else:
                log.warning("channel %d unreachable (%s)", channel.id, type(exc).__name__)
            continue
        try:
            if up.status >= 400 or not stream or not _is_event_stream(up):
                # An upstream that answers a stream request with a plain body is billed
                # (and passed on) like any body: it delivered the answer.
                return await _non_stream(request, rt, job, channel, up, t_up, ep.dialect)
            return await _stream(request, rt, job, channel, up, inject_usage, t_up, ep.dialect)
        finally:
            up.release()
    raise errors.UPSTREAM_UNREACHABLE


def _is_event_stream(up: aiohttp.ClientResponse) -> bool:
    kind = up.headers.get("Content-Type", "text/event-stream").lower()
    return "text/event-stream" in kind or "ndjson" in kind


def _common_headers(job: Job, overhead_ms: float) -> dict[str, str]:
    return {
        "X-Oneapi-Request-Id": job.rid,
        "x-relaygate-overhead-ms": f"{overhead_ms:.3f}",
    }


async def _non_stream(
    request: web.Request,
    rt: Runtime,
    job: Job,
    channel: Channel,
    up: aiohttp.ClientResponse,
    t_up: float,
    dialect: str,
) -> tuple[web.StreamResponse, bool]:
    try:
        data = await up.read()
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        log.warning("channel %d failed mid-answer (%s)", channel.id, type(exc).__name__)
        raise errors.UPSTREAM_UNREACHABLE from None
    upstream_ms = (time.perf_counter() - t_up) * 1000
    if up.status >= 400:  # the upstream's own error: refund in full
        actual, event = 0, None
    else:
        prompt, completion, estimated = _usage_from_body(data, job)
        actual = job.rates.charge(prompt, completion)
        event = usage_event(job, channel, prompt, completion, False, estimated)
    overhead = (time.perf_counter() - job.t0) * 1000 - upstream_ms
    headers = _common_headers(job, overhead)
    response: web.Response
    if up.status in (401, 403):
        response = _upstream_auth_failed(job, channel, up.status, dialect, headers)
    elif up.status >= 400:
        response = _upstream_error(channel, up, data, headers)
    else:
        headers["Content-Type"] = up.headers.get("Content-Type", JSON_CT)
        response = web.Response(status=up.status, body=data, headers=headers)

    async def respond() -> None:
        await response.prepare(request)
        await response.write_eof()

    await settle(rt, job, actual, event, respond)
    return response, True


def _upstream_auth_failed(
    job: Job, channel: Channel, status: int, dialect: str, headers: dict[str, str]
) -> web.Response:
    """The upstream refused the channel's credential. The caller did nothing wrong (its own
    401 would read as "your key is bad"), and such bodies are the ones that echo the key
    presented: answer a gateway error in the caller's dialect instead, and tell the operator."""
    log.warning(
        "channel %d (%s): the upstream refused the channel key (HTTP %d)",
        channel.id,
        channel.name,
        status,
    )
    response = errors.UPSTREAM_AUTH_FAILED.response(job.rid, dialect)
    response.headers.update(headers)
    return response


def _upstream_error(
    channel: Channel, up: aiohttp.ClientResponse, data: bytes, headers: dict[str, str]
) -> web.Response:
    """The upstream's own error, passed through with its status and body, minus anything
    that looks like a credential (the channel key above all: relaygate.redact)."""
    secrets = (channel.key,)
    headers["Content-Type"] = redact(up.headers.get("Content-Type", JSON_CT), secrets)
    return web.Response(status=up.status, body=redact_bytes(data, secrets), headers=headers)


async def _whole_stream(
    request: web.Request,
    rt: Runtime,
    job: Job,
    channel: Channel,
    up: aiohttp.ClientResponse,
    sse: SSEUsageFilter,
    headers: dict[str, str],
) -> tuple[web.StreamResponse, bool]:
    """A stream whose whole answer had already arrived with its headers (a short or cached
    answer, a fast mock): the same events, sent as one ordinary response in a single write
    instead of headers, events and end of stream one after the other."""
    data = await up.read()  # buffered already: returns at once
    out = sse.feed(data) + sse.flush()
    if sse.usage is not None:
        prompt, completion = sse.usage
        actual = job.rates.charge(prompt, completion)
        event = usage_event(job, channel, prompt, completion, True, False)
    elif sse.done:
        prompt, completion = (
            estimate_tokens(job.body_bytes),
            estimate_tokens(sse.answer_text_bytes()),
        )
        actual = job.rates.charge(prompt, completion)
        event = usage_event(job, channel, prompt, completion, True, True)
    else:  # the upstream broke off: refund in full, pass on what came
        actual, event = 0, None
    response = web.Response(status=200, body=out, headers=headers)

    async def respond() -> None:
        await response.prepare(request)
        await response.write_eof()

    await settle(rt, job, actual, event, respond)
    return response, True


def _usage_from_body(data: bytes, job: Job) -> tuple[int, int, bool]:
    """(prompt, completion, estimated): the upstream's usage, or, when it reports none or
    none that is made of token counts, an estimate from the request and the answer's text."""
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError:
        return estimate_tokens(job.body_bytes), estimate_tokens(len(data)), True
    parsed = dialects.read_usage(body)
    if parsed is not None and parsed[0] >= 0:
        return parsed[0], parsed[1], False
    if isinstance(body, dict) and body.get("usage", body.get("usageMetadata")) is not None:
        log.warning("upstream usage not made of token counts; billed by estimate")
    return estimate_tokens(job.body_bytes), estimate_tokens(dialects.text_bytes(body)), True


async def _stream(
    request: web.Request,
    rt: Runtime,
    job: Job,
    channel: Channel,
    up: aiohttp.ClientResponse,
    inject_usage: bool,
    t_up: float,
    dialect: str,
) -> tuple[web.StreamResponse, bool]:
    headers = {
        **_common_headers(job, (t_up - job.t0) * 1000),
        "Content-Type": up.headers.get("Content-Type", "text/event-stream"),
        "Cache-Control": "no-cache",
    }
    sse = SSEUsageFilter(strip_usage_chunk=inject_usage, dialect=dialect)
    if up.content.is_eof():
        return await _whole_stream(request, rt, job, channel, up, sse, headers)
    resp = web.StreamResponse(status=200, headers=headers)
    await resp.prepare(request)
    # Once the end-of-answer marker went by, the rest is held and sent with the stream's end
    # after the settle: one write instead of two (or, for an answer that arrived in one read,
    # headers + events + end in a single write).
    held = b""
    client_gone = False
    cancelled = False
    try:
        async for chunk in up.content.iter_any():
            out = sse.feed(chunk)
            if not out:
                continue
            if sse.done and len(held) < MAX_HELD:
                held += out
                continue
            try:
                await resp.write(out)
            except (ConnectionResetError, aiohttp.ClientConnectionResetError, RuntimeError):
                client_gone = True
                break
        else:
            held += sse.flush()
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client hangs up: bill what was delivered.
        client_gone = cancelled = True
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        log.warning("channel %d failed mid-stream (%s)", channel.id, type(exc).__name__)

    async def finish() -> None:
        if not client_gone:
            with contextlib.suppress(
                ConnectionResetError, aiohttp.ClientConnectionResetError, RuntimeError
            ):
                await resp.write_eof(held)

    if sse.usage is None and not sse.done and not client_gone:
        # The upstream broke off before the answer ended: refund in full (the client sees a
        # truncated stream). One that broke off after its usage or its end marker delivered
        # the whole answer, and is charged below.
        await settle(rt, job, 0, None, finish)
        return resp, True
    if sse.usage is not None:
        prompt, completion = sse.usage
        estimated = False
    else:
        prompt = estimate_tokens(job.body_bytes)
        completion = estimate_tokens(sse.answer_text_bytes())
        estimated = True
    actual = job.rates.charge(prompt, completion)
    event = usage_event(job, channel, prompt, completion, True, estimated)
    await settle(rt, job, actual, event, finish)
    if cancelled:
        raise asyncio.CancelledError
    return resp, True
