"""Answering a translated request (relaygate.translate): the whole answer or the stream in
the caller's dialect, and its one settle, billed by the upstream's usage (an estimate when
it reports none). Pass-through requests never come here."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp
import orjson
from aiohttp import web

from relaygate import translate
from relaygate.channels import Channel
from relaygate.redact import redact
from relaygate.relay.accounting import settle, settle_and_send, usage_event
from relaygate.relay.dialects import error_body
from relaygate.relay.errors import RelayError
from relaygate.relay.request import Job, estimate_tokens
from relaygate.runtime import Runtime
from relaygate.translate.common import Usage
from relaygate.upstream_client import ERRORS as UPSTREAM_ERRORS
from relaygate.upstream_client import UpstreamResponse

log = logging.getLogger(__name__)

JSON_CT = "application/json"
_UNTRANSLATABLE = RelayError(
    502,
    "The upstream answer could not be translated; nothing was charged.",
    "upstream_error",
    "bad_response",
)


def _headers(job: Job, overhead_ms: float) -> dict[str, str]:
    return {"X-Oneapi-Request-Id": job.rid, "x-relaygate-overhead-ms": f"{overhead_ms:.3f}"}


def _bill(
    job: Job, channel: Channel, usage: Usage | None, text_bytes: int, stream: bool
) -> tuple[int, bytes]:
    if usage is not None:
        prompt, completion, estimated = usage.prompt, usage.completion, False
    else:
        prompt, completion = estimate_tokens(job.body_bytes), estimate_tokens(text_bytes)
        estimated = True
    actual = job.rates.charge(prompt, completion)
    return actual, usage_event(job, channel, prompt, completion, stream, estimated)


async def non_stream(
    request: web.Request,
    rt: Runtime,
    job: Job,
    channel: Channel,
    plan: translate.Plan,
    data: bytes,
    model: str,
    t_up: float,
) -> tuple[web.StreamResponse, bool]:
    headers = _headers(job, (t_up - job.t0) * 1000)
    actual, event = 0, None
    try:
        body, usage = translate.response(plan, data, model)
    except translate.SafetyBlock as exc:
        err = RelayError(400, str(exc), "invalid_request_error", "content_filter")
        response = err.response(job.rid, plan.caller)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("channel %d: answer not translatable (%s)", channel.id, type(exc).__name__)
        response = _UNTRANSLATABLE.response(job.rid, plan.caller)
    else:
        actual, event = _bill(job, channel, usage, len(data), False)
        headers["Content-Type"] = JSON_CT
        response = web.Response(status=200, body=body, headers=headers)
    response.headers.update(headers)
    return await settle_and_send(request, rt, job, response, actual, event)


async def stream(
    request: web.Request,
    rt: Runtime,
    job: Job,
    channel: Channel,
    plan: translate.Plan,
    up: UpstreamResponse,
    model: str,
    include_usage: bool,
    t_up: float,
) -> tuple[web.StreamResponse, bool]:
    headers = {
        **_headers(job, (t_up - job.t0) * 1000),
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
    }
    tr = translate.StreamTranslator(plan, model, include_usage)
    resp = web.StreamResponse(status=200, headers=headers)
    await resp.prepare(request)
    client_gone = cancelled = False
    tail = b""
    try:
        async for data in up.iter_any():
            out = tr.feed(data)
            if not out:
                continue
            try:
                await resp.write(out)
            except (ConnectionResetError, aiohttp.ClientConnectionResetError, RuntimeError):
                client_gone = True
                break
    except asyncio.CancelledError:
        client_gone = cancelled = True
    except translate.SafetyBlock as exc:
        tail = _stream_error(plan.caller, str(exc))
    except UPSTREAM_ERRORS as exc:
        log.warning("channel %d failed mid-stream (%s)", channel.id, type(exc).__name__)
    if tr.done and not client_gone:
        tail = tr.end()

    async def finish() -> None:
        if not client_gone:
            with contextlib.suppress(
                ConnectionResetError, aiohttp.ClientConnectionResetError, RuntimeError
            ):
                await resp.write_eof(tail)

    if tr.usage is None and not tr.done and not tr.content_events and not client_gone:
        await settle(rt, job, 0, None, finish)  # broke off before any of the answer
    else:
        actual, event = _bill(job, channel, tr.usage, tr.text_bytes, True)
        await settle(rt, job, actual, event, finish)
    if cancelled:
        raise asyncio.CancelledError
    return resp, True


def _stream_error(dialect: str, message: str) -> bytes:
    body = error_body(dialect, 400, message, "invalid_request_error", "content_filter")
    if dialect == "claude":
        return b"event: error\ndata: " + body + b"\n\n"
    return b"data: " + body + b"\n\n"


def caller_error(dialect: str, status: int, data: bytes, secrets: tuple[str, ...]) -> bytes:
    """An upstream error of another dialect as the caller's: its message kept (redacted),
    its status kept."""
    message = "upstream error"
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        obj = None
    if isinstance(obj, dict):
        err = obj.get("error", obj)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            message = err["message"]
        elif isinstance(err, str):
            message = err
    kind = "rate_limit_error" if status == 429 else "upstream_error"
    return error_body(dialect, status, redact(message[:2000], secrets), kind, f"upstream_{status}")
