"""A relay request from top to bottom (DESIGN.md "The hot path"): key -> cached metadata ->
in-memory checks (relay.scope) -> how much to reserve (relay.request) -> one reserve EVALSHA
(relay.accounting) -> forward, streaming passes bytes through (relay.forward) -> one settle
EVALSHA.

No PostgreSQL round trip on a warm cache. Every exit after a successful reservation goes
through exactly one settle (charge, or refund with ``actual = 0``).
"""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from relaygate.appkeys import RUNTIME, STATS
from relaygate.cache import TokenMeta
from relaygate.logfmt import log_request
from relaygate.pricing import Rates, ReservationPlan
from relaygate.relay import errors
from relaygate.relay.accounting import reserve, settle
from relaygate.relay.auth import client_ip, ip_text
from relaygate.relay.early import Speculation
from relaygate.relay.errors import RelayError
from relaygate.relay.forward import OVERHEAD_HEADER, Early, forward
from relaygate.relay.request import (
    IMAGE_TOKEN_BOUND,
    Endpoint,
    Job,
    Metered,
    OutputBound,
    UpstreamBody,
    fit_body,
    new_request_id,
    output_bounds,
    parse_body,
    requested_model,
    within_quota_cap,
)
from relaygate.relay.scope import authenticate, confirmed_scope
from relaygate.runtime import Runtime
from relaygate.settles import MAX_KEPT

log = logging.getLogger(__name__)

JOB = "relaygate.job"  # the request's Job, kept on the request for its log record


async def handle(request: web.Request, ep: Endpoint) -> web.StreamResponse:
    """Answer one relay request and record it in the route's metrics."""
    app = request.app
    rt = app[RUNTIME]
    t0 = time.perf_counter()
    rid = new_request_id()
    rt.early.active += 1
    try:
        response = await _handle(request, rt, ep, rid, t0)
    except RelayError as err:
        err.forget_traceback()
        response = err.response(rid, ep.dialect)
    except Exception:
        app[STATS].record(ep.route, 500, time.perf_counter() - t0)
        if rt.settings.request_log:
            _log(request, ep, rid, 500, time.perf_counter() - t0, None)
        raise
    finally:
        rt.early.active -= 1
    elapsed = time.perf_counter() - t0
    app[STATS].record(ep.route, response.status, elapsed)
    if rt.settings.request_log:
        _log(request, ep, rid, response.status, elapsed, response)
    return response


def _log(
    request: web.Request,
    ep: Endpoint,
    rid: str,
    status: int,
    elapsed: float,
    response: web.StreamResponse | None,
) -> None:
    """The request record, from what ``_handle`` left on the request (nothing when it was
    refused before a reservation) and the overhead header of an answered one."""
    job: Job | None = request.get(JOB)
    overhead = response.headers.get(OVERHEAD_HEADER) if response is not None else None
    log_request(
        rid,
        ep.route,
        status,
        elapsed,
        token_id=job.meta.id if job is not None else None,
        model=job.model if job is not None else None,
        channel_id=job.channel_id if job is not None else None,
        overhead_ms=float(overhead) if overhead else None,
    )


async def _handle(
    request: web.Request, rt: Runtime, ep: Endpoint, rid: str, t0: float
) -> web.StreamResponse:
    ip = client_ip(request, rt.settings.trusted_proxies)
    key_hash, meta = await authenticate(request, rt, ip)
    raw = await _read_body(request, rt)
    body = _parse(request, ep, raw)
    model, stream = requested_model(body, request, ep)
    if not meta.in_scope(model, ip):  # rare: re-check against current metadata, or refuse
        meta = await confirmed_scope(rt, meta, key_hash, model, ip)
    metered = ep.meter(body) if ep.meter is not None else None
    rates, bound, rplan = _price(rt, meta, model, body, raw, ep, metered)
    if rt.settles.pending >= MAX_KEPT:
        raise errors.LEDGER_UNAVAILABLE
    spec = Speculation() if rt.early.allows(meta.user_id, meta.id) and rt.hot.quiet() else None
    meanwhile = None
    if spec is not None:
        meanwhile = partial(spec.start, request, rt, ep, meta, model, body, raw, bound, stream)
    try:
        admitted, res, ledger_keys, member = await reserve(
            rt,
            meta,
            key_hash,
            model,
            ip,
            rid,
            rplan.base,
            rplan.per_token_micro,
            bound.full,
            meanwhile,
        )
    except BaseException as exc:
        if spec is not None:
            spec.not_admitted(rt, meta.user_id, meta.id, refused=isinstance(exc, RelayError))
        raise
    early: Early | None = None
    fitted: UpstreamBody | None = None
    if spec is not None:
        in_full = not res.clamp_tokens and admitted is meta  # as the early call was sent
        early, fitted = spec.admitted(rt, meta.user_id, meta.id, in_full)
        if fitted is None and spec.out is not None:
            body = _parse(request, ep, raw)  # it was fitted in place for the early call
    meta = admitted
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
        metered=metered,
    )
    if rt.settings.request_log:
        request[JOB] = job
    settled = False
    try:
        per_choice = res.clamp_tokens // bound.choices if res.clamp_tokens else bound.send
        if res.clamp_tokens and per_choice < 1:
            raise errors.TOKEN_QUOTA  # not one token left for each choice
        if fitted is None:
            fitted = fit_body(body, raw, ep, bound, per_choice, stream)
            fitted.max_output = per_choice or bound.full // bound.choices
        sent_early, early = early, None  # forward owns it now
        response, settled = await forward(request, rt, ep, job, fitted, stream, sent_early)
        return response
    finally:
        if early is not None:  # refused before the upstream was called (no token left)
            early.abandon()
        if not settled:
            await settle(rt, job, 0, None)


def _parse(request: web.Request, ep: Endpoint, raw: bytes) -> dict[str, Any]:
    if ep.parse is None:
        return parse_body(raw)
    return ep.parse(raw, request.headers.get("Content-Type", ""))


async def _read_body(request: web.Request, rt: Runtime) -> bytes:
    if request.content_length is not None and request.content_length > rt.settings.max_body_bytes:
        raise RelayError(413, "Request body too large.", "invalid_request_error", "body_too_large")
    try:
        return await request.read()
    except RequestPayloadError:  # a Content-Encoding the body does not match
        raise errors.UNREADABLE_BODY from None


def _price(
    rt: Runtime,
    meta: TokenMeta,
    model: str,
    body: dict[str, Any],
    raw: bytes,
    ep: Endpoint,
    metered: Metered | None = None,
) -> tuple[Rates, OutputBound, ReservationPlan]:
    """What this request may cost at most: its rates, its output bound, and the reserve
    plan (base + per output token) that covers both. A metered request is billed its
    metered prompt, so that is what is reserved (not the body's size: an audio upload)."""
    if not rt.catalog.channels.has(meta.group, model):
        raise errors.no_channel(meta.group, model)
    rates = rt.catalog.prices.rates(model, meta.group)
    if rates is None:
        raise errors.model_price_missing(model)
    bound = output_bounds(body, ep, rates.pricing, rt.settings.max_reserve_tokens)
    rates = rates.times(bound.calls)
    if metered is not None:
        rplan = rates.plan(metered[0])
    else:
        rplan = rates.plan(len(raw) + IMAGE_TOKEN_BOUND * raw.count(b"image_url"))
    cap = rt.settings.max_reserve_quota
    if cap and bound.field is not None:
        bound = within_quota_cap(bound, rplan.base, rplan.per_token_micro, cap)
    return rates, bound, rplan
