"""Calling the upstream and passing its answer on: one channel after another on connection
failures, bodies passed through (errors redacted), streams filtered chunk by chunk for
their usage, and the settle of what was delivered."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp
import orjson
from aiohttp import web

from relaygate import upstreams
from relaygate.channels import Channel
from relaygate.redact import redact, redact_bytes
from relaygate.relay import dialects, errors
from relaygate.relay.accounting import settle, usage_event
from relaygate.relay.request import Endpoint, Job, UpstreamBody, estimate_tokens
from relaygate.relay.sse import SSEUsageFilter
from relaygate.runtime import Runtime

log = logging.getLogger(__name__)

MAX_CHANNEL_ATTEMPTS = 2
MAX_HELD = 64 * 1024  # bytes after the end marker held for the last write; beyond, sent on
JSON_CT = "application/json"


async def forward(
    request: web.Request,
    rt: Runtime,
    ep: Endpoint,
    job: Job,
    out: UpstreamBody,
    stream: bool,
) -> tuple[web.StreamResponse, bool]:
    """Call a channel (another one on a connection failure) and settle. Returns (response,
    settled); when settled is False the caller refunds."""
    body, modified = out.body, out.modified
    tried: frozenset[int] = frozenset()
    for attempt in range(MAX_CHANNEL_ATTEMPTS):
        channel = rt.catalog.channels.pick(job.meta.group, job.model, attempt, tried)
        if channel is None:
            break
        tried |= {channel.id}
        upstream_model = channel.upstream_model(job.model)
        # (A form upload is sent as received: a mapped model name is not rewritten in it.)
        if upstream_model != job.model and ep.dialect != dialects.GEMINI and ep.parse is None:
            body["model"] = upstream_model
            modified = True
        payload = orjson.dumps(body) if modified else out.raw
        url = channel.base_url + dialects.upstream_path(ep.dialect, ep.path, upstream_model, stream)
        headers = dialects.upstream_headers(channel, ep.dialect, request.headers)
        if ep.parse is not None:  # the multipart boundary is the client's
            headers = {**headers, "Content-Type": request.headers.get("Content-Type", "")}
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
            return await _stream(request, rt, job, channel, up, out.inject_usage, t_up, ep.dialect)
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
        prompt, completion, estimated = job.metered or _usage_from_body(data, job)
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
