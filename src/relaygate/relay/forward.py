"""Calling the upstream and passing its answer on: one channel after another on connection
failures, bodies passed through (errors redacted), streams filtered chunk by chunk for
their usage, and the settle of what was delivered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
import orjson
from aiohttp import web

from relaygate import health, translate, upstreams
from relaygate.channels import TYPE_AZURE, Channel
from relaygate.redact import redact, redact_bytes
from relaygate.relay import azure, dialects, errors, translated
from relaygate.relay.accounting import settle, settle_and_send, usage_event
from relaygate.relay.pushed import MAX_HELD, PushedStream
from relaygate.relay.request import Endpoint, Job, UpstreamBody, estimate_tokens
from relaygate.relay.sse import SSEUsageFilter
from relaygate.runtime import Runtime
from relaygate.tally import OVERHEAD_BUCKETS, UPSTREAM_BUCKETS
from relaygate.upstream_client import ERRORS as UPSTREAM_ERRORS
from relaygate.upstream_client import UpstreamResponse
from relaygate.upstream_client.h1 import Response as PushResponse

log = logging.getLogger(__name__)

JSON_CT = "application/json"


@dataclass(slots=True)
class _Failed:
    """An upstream error answer kept while the next channel is tried: the last one is what
    the client gets when no channel answers."""

    channel: Channel
    status: int
    content_type: str
    data: bytes
    t_up: float
    translated: bool = False  # the upstream speaks another dialect than the caller


async def forward(
    request: web.Request,
    rt: Runtime,
    ep: Endpoint,
    job: Job,
    out: UpstreamBody,
    stream: bool,
    early: Early | None = None,
) -> tuple[web.StreamResponse, bool]:
    """Call a channel, the next one on a failure before anything reached the client (a
    connection error, a timeout, a retryable status: docs/failover.md), and settle the
    attempt that answered. Returns (response, settled); when settled is False the caller
    refunds. Failed attempts cost nothing: only the answering one is settled."""
    tried: frozenset[int] = frozenset()
    failed: _Failed | None = None
    settings = rt.settings
    for attempt_no in range(settings.channel_attempts):
        if attempt_no == 0 and early is not None:
            attempt = early.attempt  # already sent, while the reserve was on its way
        else:
            # Same priority tier first (minus the channels tried), then the lower tiers.
            picked = rt.catalog.channels.pick(job.meta.group, job.model, 0, tried)
            if picked is None:
                break
            attempt = build_attempt(request, ep, job.model, out, picked, stream)
        channel, plan, upstream_model = attempt.channel, attempt.plan, attempt.upstream_model
        tried |= {channel.id}
        job.channel_id = channel.id
        job.attempts.append(channel.id)
        try:
            if attempt_no == 0 and early is not None:
                t_up = early.t_up
                try:
                    up = await early.head
                except BaseException:
                    early.abandon()  # failed or cancelled: never reuse its connection
                    raise
            else:
                t_up = time.perf_counter()
                up = await rt.http.post(attempt.url, data=attempt.payload, headers=attempt.headers)
        except UPSTREAM_ERRORS as exc:
            _upstream_failed(rt, channel, "unreachable")
            _log_unreachable(channel, exc)
            continue
        _upstream_answered(rt, channel, up.status, time.perf_counter() - t_up)
        try:
            streaming = stream and up.status < 400 and _is_event_stream(up)
            if not streaming:
                # An upstream that answers a stream request with a plain body is billed
                # (and passed on) like any body: it delivered the answer.
                try:
                    data = await up.read()
                except UPSTREAM_ERRORS as exc:
                    log.warning("channel %d failed mid-answer (%s)", channel.id, type(exc).__name__)
                    continue  # nothing reached the client yet: the next channel may answer
                if up.status >= 400:
                    health.after_error(rt, channel, up.status, data, attempt.payload)
                    ct = up.headers.get("Content-Type", JSON_CT)
                    failed = _Failed(channel, up.status, ct, data, t_up, plan is not None)
                    if _retryable(settings.retry_statuses, up.status):
                        log.info(
                            "channel %d answered HTTP %d; trying the next", channel.id, up.status
                        )
                        continue
                    return await _failed(request, rt, job, failed, ep.dialect)
                if plan is not None:
                    return await translated.non_stream(
                        request, rt, job, channel, plan, data, upstream_model, t_up
                    )
                return await _non_stream(request, rt, job, channel, up, data, t_up)
            if plan is not None:
                include_usage = not out.inject_usage
                return await translated.stream(
                    request, rt, job, channel, plan, up, upstream_model, include_usage, t_up
                )
            return await _stream(request, rt, job, channel, up, out.inject_usage, t_up, ep.dialect)
        finally:
            up.release()
    if failed is not None:
        return await _failed(request, rt, job, failed, ep.dialect)
    raise errors.UPSTREAM_UNREACHABLE


@dataclass(frozen=True, slots=True)
class Attempt:
    """One channel's call, built: what is sent, and in which dialect its answer comes."""

    channel: Channel
    plan: translate.Plan | None  # None: pass-through
    upstream_model: str
    url: str
    payload: bytes
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Early:
    """An attempt sent while the reserve was on its way (relay.early): its answer is read
    only once the reserve has admitted the request."""

    attempt: Attempt
    head: Awaitable[UpstreamResponse]
    t_up: float
    abandon: Callable[[], None]  # for an answer that will not be read


def build_attempt(
    request: web.Request,
    ep: Endpoint,
    model: str,
    out: UpstreamBody,
    channel: Channel,
    stream: bool,
) -> Attempt:
    """The request for ``channel``: its model name, its dialect, its URL and credential.
    May rewrite ``out.body`` (the model name; then ``out.modified``)."""
    upstream_model = channel.upstream_model(model)
    plan = translate.plan_for(ep.dialect, ep.path, channel.type)
    body = out.body
    if plan is not None:
        try:
            path, payload = translate.request(plan, body, upstream_model, stream, out.max_output)
        except (TypeError, AttributeError, ValueError, KeyError) as exc:
            # A field of the wrong shape (``"tools": 5``): the caller's mistake, not ours.
            log.info("request not translatable to channel %d: %r", channel.id, exc)
            raise errors.bad_request(
                "The request body has a field of the wrong type or shape for this model.",
                "invalid_request_body",
            ) from None
        headers = dialects.upstream_headers(channel, plan.upstream, request.headers)
    else:
        # (A form upload is sent as received: a mapped model name is not rewritten in it.)
        # Compared with the body's own name: a channel tried after one that mapped the name
        # gets its own, not the previous channel's.
        if (
            ep.dialect != dialects.GEMINI
            and ep.parse is None
            and body.get("model", model) != upstream_model
        ):
            body["model"] = upstream_model
            out.modified = True
        payload = orjson.dumps(body) if out.modified else out.raw
        path = dialects.upstream_path(ep.dialect, ep.path, upstream_model, stream)
        headers = dialects.upstream_headers(channel, ep.dialect, request.headers)
        if ep.parse is not None:  # the multipart boundary is the client's
            headers = {**headers, "Content-Type": request.headers.get("Content-Type", "")}
    url = channel.base_url + path
    if channel.type == TYPE_AZURE:
        url = azure.url(channel, path, upstream_model)
    return Attempt(channel, plan, upstream_model, url, payload, headers)


def _retryable(statuses: frozenset[int], status: int) -> bool:
    """A status worth another channel: the setting's (429, 5xx), and the channel's own
    credential refused (401/403: the caller did nothing wrong, another channel may serve)."""
    return status in statuses or status in (401, 403)


def _log_unreachable(channel: Channel, exc: BaseException) -> None:
    refusal = upstreams.refusal_of(exc)
    if refusal is not None:
        log.warning("channel %d not called: %s", channel.id, refusal)
    else:
        log.warning("channel %d unreachable (%s)", channel.id, type(exc).__name__)


def _upstream_answered(rt: Runtime, channel: Channel, status: int, seconds: float) -> None:
    """Time to the upstream's response head, and its health: a 5xx, 401/403 or 429 is the
    channel failing (the caller's own mistakes, other 4xx, are not)."""
    label = (str(channel.id),)
    rt.tally.observe("upstream_seconds", UPSTREAM_BUCKETS, seconds, label)
    if status >= 500 or status in (401, 403, 429):
        _upstream_failed(rt, channel, f"http_{status}")
    else:
        rt.tally.mark("upstream_ok", time.time(), label)


def _upstream_failed(rt: Runtime, channel: Channel, kind: str) -> None:
    rt.tally.inc("upstream_errors", (str(channel.id), kind))
    rt.tally.mark("upstream_failed", time.time(), (str(channel.id),))


def _is_event_stream(up: UpstreamResponse) -> bool:
    kind = up.headers.get("Content-Type", "text/event-stream").lower()
    return "text/event-stream" in kind or "ndjson" in kind


OVERHEAD_HEADER = "x-relaygate-overhead-ms"


def _common_headers(job: Job, overhead_ms: float) -> dict[str, str]:
    return {
        "X-Oneapi-Request-Id": job.rid,
        OVERHEAD_HEADER: f"{overhead_ms:.3f}",
    }


async def _non_stream(
    request: web.Request,
    rt: Runtime,
    job: Job,
    channel: Channel,
    up: UpstreamResponse,
    data: bytes,
    t_up: float,
) -> tuple[web.StreamResponse, bool]:
    """A whole answer: charged by its usage (or an estimate), then passed on."""
    upstream_ms = (time.perf_counter() - t_up) * 1000
    prompt, completion, estimated = job.metered or _usage_from_body(data, job)
    actual = job.rates.charge(prompt, completion)
    event = usage_event(job, channel, prompt, completion, False, estimated)
    overhead = (time.perf_counter() - job.t0) * 1000 - upstream_ms
    rt.tally.observe("overhead_seconds", OVERHEAD_BUCKETS, overhead / 1000)
    headers = _common_headers(job, overhead)
    headers["Content-Type"] = up.headers.get("Content-Type", JSON_CT)
    response = web.Response(status=up.status, body=data, headers=headers)
    return await settle_and_send(request, rt, job, response, actual, event)


async def _failed(
    request: web.Request, rt: Runtime, job: Job, failed: _Failed, dialect: str
) -> tuple[web.StreamResponse, bool]:
    """The last upstream error, passed on (redacted; a credential refusal as a gateway
    error) and refunded in full."""
    upstream_ms = (time.perf_counter() - failed.t_up) * 1000
    headers = _common_headers(job, (time.perf_counter() - job.t0) * 1000 - upstream_ms)
    if failed.status in (401, 403):
        response = _upstream_auth_failed(job, failed.channel, failed.status, dialect, headers)
    else:
        response = _upstream_error(failed, headers, dialect)
    return await settle_and_send(request, rt, job, response, 0, None)


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


def _upstream_error(failed: _Failed, headers: dict[str, str], dialect: str) -> web.Response:
    """The upstream's own error, passed through with its status and body, minus anything
    that looks like a credential (the channel key above all: relaygate.redact); one from an
    upstream of another dialect is rewritten in the caller's, its message kept."""
    secrets = (failed.channel.key,)
    if failed.translated:
        headers["Content-Type"] = JSON_CT
        body = translated.caller_error(dialect, failed.status, failed.data, secrets)
        return web.Response(status=failed.status, body=body, headers=headers)
    headers["Content-Type"] = redact(failed.content_type, secrets)
    return web.Response(
        status=failed.status, body=redact_bytes(failed.data, secrets), headers=headers
    )


async def _whole_stream(
    request: web.Request,
    rt: Runtime,
    job: Job,
    channel: Channel,
    up: UpstreamResponse,
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
    elif sse.done or sse.has_content:  # ended, or broke off: billed for what came
        prompt, completion = (
            estimate_tokens(job.body_bytes),
            estimate_tokens(sse.answer_text_bytes()),
        )
        actual = job.rates.charge(prompt, completion)
        event = usage_event(job, channel, prompt, completion, True, True)
    else:  # the upstream broke off before any of the answer: refund in full
        actual, event = 0, None
    response = web.Response(status=200, body=out, headers=headers)
    return await settle_and_send(request, rt, job, response, actual, event)


async def _pushed(
    request: web.Request,
    up: PushResponse,
    sse: SSEUsageFilter,
    transport: asyncio.Transport,
    channel: Channel,
) -> tuple[bytes, bool, bool]:
    """(held, client gone, cancelled): the stream pushed by the fast client's callback."""
    pushed = PushedStream(sse, transport)
    cancelled = False
    try:
        await pushed.run(request, up)
    except asyncio.CancelledError:
        cancelled = True  # aiohttp cancels the handler when the client hangs up
    if pushed.error is not None and not pushed.client_gone:
        log.warning("channel %d failed mid-stream (%s)", channel.id, type(pushed.error).__name__)
    return pushed.held, pushed.client_gone, cancelled


async def _pulled(
    resp: web.StreamResponse, up: UpstreamResponse, sse: SSEUsageFilter, channel: Channel
) -> tuple[bytes, bool, bool]:
    """(held, client gone, cancelled): the stream read piece by piece (aiohttp's client)."""
    held = b""
    client_gone = False
    cancelled = False
    try:
        async for chunk in up.iter_any():
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
    except UPSTREAM_ERRORS as exc:
        log.warning("channel %d failed mid-stream (%s)", channel.id, type(exc).__name__)
    return held, client_gone, cancelled


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
    up: UpstreamResponse,
    inject_usage: bool,
    t_up: float,
    dialect: str,
) -> tuple[web.StreamResponse, bool]:
    # a stream's overhead header is what came before the upstream call (it goes out first)
    rt.tally.observe("overhead_seconds", OVERHEAD_BUCKETS, t_up - job.t0)
    headers = {
        **_common_headers(job, (t_up - job.t0) * 1000),
        "Content-Type": up.headers.get("Content-Type", "text/event-stream"),
        "Cache-Control": "no-cache",
    }
    sse = SSEUsageFilter(strip_usage_chunk=inject_usage, dialect=dialect)
    if up.is_eof():
        return await _whole_stream(request, rt, job, channel, up, sse, headers)
    resp = web.StreamResponse(status=200, headers=headers)
    await resp.prepare(request)
    # Once the end-of-answer marker went by, the rest is held and sent with the stream's end
    # after the settle: one write instead of two.
    transport = request.transport
    if isinstance(up, PushResponse) and transport is not None:
        held, client_gone, cancelled = await _pushed(request, up, sse, transport, channel)
    else:
        held, client_gone, cancelled = await _pulled(resp, up, sse, channel)

    async def finish() -> None:
        if not client_gone:
            with contextlib.suppress(
                ConnectionResetError, aiohttp.ClientConnectionResetError, RuntimeError
            ):
                await resp.write_eof(held)

    if sse.usage is None and not sse.done and not sse.has_content and not client_gone:
        # The upstream broke off before delivering any of the answer: refund in full. One
        # that broke off later is not retried (bytes reached the client) and is billed for
        # what was delivered, by estimate (docs/failover.md).
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
