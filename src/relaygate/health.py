"""Channel health: automatic disable on an upstream's credential refusal or a configured
error message, automatic re-enable after a successful channel test (New API's
``AutomaticDisableChannelEnabled`` / ``AutomaticDisableKeywords`` /
``AutomaticEnableChannelEnabled``).

A disable is one PostgreSQL write (status 3, "auto-disabled") and the ``chan:<id>``
invalidation every relay already listens to, so every relay process rebuilds its channel
table without the channel; the process that saw the failure also drops it from its own
table at once, so its very next request cannot pick it. It runs in the background, off the
request: the hot path keeps zero PostgreSQL round trips.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson

from relaygate.channels import TYPE_ANTHROPIC, TYPE_AZURE, TYPE_GEMINI, Channel, channel_from_row
from relaygate.keys import msg_channel
from relaygate.relay import azure, dialects
from relaygate.runtime import Runtime
from relaygate.upstream_client import ERRORS as UPSTREAM_ERRORS
from relaygate.upstreams import refusal_of

log = logging.getLogger(__name__)

STATUS_ENABLED = 1
STATUS_AUTO_DISABLED = 3
MAX_SCANNED = 64 * 1024  # bytes of an error body searched for the keywords

_DISABLE = "UPDATE channels SET status = 3 WHERE id = $1 AND status = 1 AND deleted_at IS NULL"
_ENABLE = "UPDATE channels SET status = 1 WHERE id = $1 AND status = 3 AND deleted_at IS NULL"


def disable_reason(
    status: int,
    body: bytes,
    keywords: tuple[str, ...],
    connection_failed: bool = False,
    sent: bytes = b"",
) -> str | None:
    """Why an upstream answer disables its channel (for the log), or None when it does not:
    the upstream refused the channel key (401/403), or its error names a configured keyword
    (a spent balance, a banned organization). A connection failure never disables: it says
    nothing about the channel's credential. A keyword that is also in the request ``sent``
    does not count: upstreams echo the caller's text in their errors ("Unrecognized request
    argument supplied: <name>"), and a caller must not be able to take a channel offline
    for everyone by naming a keyword."""
    if connection_failed or status < 400:
        return None
    if status in (401, 403):
        return f"upstream answered HTTP {status}"
    if keywords:
        text = body[:MAX_SCANNED].decode("utf-8", "replace").lower()
        asked = _request_text(sent)
        for word in keywords:
            if word in text and word not in asked:
                return f"upstream error mentions {word!r}"
    return None


def _request_text(sent: bytes) -> str:
    """The request as the upstream reads it: a JSON body's escapes (``\\u0020``) decoded,
    so a keyword cannot be smuggled past the comparison; any other body as it is."""
    if not sent:
        return ""
    try:
        sent = orjson.dumps(orjson.loads(sent))
    except orjson.JSONDecodeError:
        pass
    return sent.decode("utf-8", "replace").lower()


def after_error(rt: Runtime, channel: Channel, status: int, body: bytes, sent: bytes) -> None:
    """Disable ``channel`` if its error to the request ``sent`` calls for it (and the
    setting allows it)."""
    settings = rt.settings
    if not settings.auto_disable_channels:
        return
    reason = disable_reason(status, body, settings.auto_disable_keywords, sent=sent)
    if reason is None:
        return
    rt.catalog.channels = rt.catalog.channels.without(channel.id)
    rt.background.spawn(disable(rt, channel, reason))


async def disable(rt: Runtime, channel: Channel, reason: str) -> bool:
    """Set the channel auto-disabled and tell every relay; True if this call changed it."""
    async with rt.pool.acquire() as conn:
        done = await conn.execute(_DISABLE, channel.id)
    changed = bool(done == "UPDATE 1")
    if changed:
        log.warning("channel %d (%s) auto-disabled: %s", channel.id, channel.name, reason)
    await rt.redis.publish(rt.keys.inval_channel, msg_channel(channel.id))
    return changed


def test_call(channel: Channel, model: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    """(URL, body, headers) of the smallest request in the channel type's own dialect: a
    Claude channel is tested with a Messages call, a Gemini one with generateContent, the
    rest with a chat completion (at its deployment URL for Azure)."""
    path, body, headers = _test_call(channel, channel.upstream_model(model))
    if channel.type == TYPE_AZURE:
        return azure.url(channel, path, channel.upstream_model(model)), body, headers
    return channel.base_url + path, body, headers


def _test_call(channel: Channel, upstream: str) -> tuple[str, dict[str, Any], dict[str, str]]:
    if channel.type == TYPE_ANTHROPIC:
        body: dict[str, Any] = {
            "model": upstream,
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "hi"}],
        }
        return "/v1/messages", body, dialects.upstream_headers(channel, dialects.CLAUDE, {})
    if channel.type == TYPE_GEMINI:
        body = {
            "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
            "generationConfig": {"maxOutputTokens": 1},
        }
        path = dialects.upstream_path(dialects.GEMINI, "", upstream, False)
        return path, body, dialects.upstream_headers(channel, dialects.GEMINI, {})
    body = {"model": upstream, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    return "/v1/chat/completions", body, dialects.upstream_headers(channel, dialects.OPENAI, {})


def is_test_answer(channel: Channel, answer: Any) -> bool:
    """The test call got an answer of its dialect (not, say, a proxy's HTML page)."""
    if not isinstance(answer, dict):
        return False
    if channel.type == TYPE_ANTHROPIC:
        return answer.get("type") == "message" and "content" in answer
    if channel.type == TYPE_GEMINI:
        return "candidates" in answer
    return "choices" in answer


async def enable_after_test(rt: Runtime, channel_id: int, force: bool = False) -> bool:
    """An auto-disabled channel that passed its test is enabled again (the setting allows
    it, or ``force``: the periodic retest is its own setting; a channel an administrator
    disabled, status 2, stays disabled). True if changed."""
    if not (rt.settings.auto_enable_channels or force):
        return False
    async with rt.pool.acquire() as conn:
        done = await conn.execute(_ENABLE, channel_id)
    if done != "UPDATE 1":
        return False
    log.warning("channel %d re-enabled after a successful test", channel_id)
    await rt.redis.publish(rt.keys.inval_channel, msg_channel(channel_id))
    return True


TEST_SECONDS = 30  # the whole test call (connecting: RELAYGATE_UPSTREAM_CONNECT_TIMEOUT)


@dataclass(frozen=True, slots=True)
class TestResult:
    failure: str | None  # why the test failed (no key, no base URL), None = passed
    seconds: float
    answered: bool  # the upstream answered (its latency is worth recording)


async def run_test(rt: Runtime, channel: Channel, model: str) -> TestResult:
    """One smallest call in the channel type's dialect (``test_call``), judged."""
    url, payload, headers = test_call(channel, model)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(TEST_SECONDS):
            resp = await rt.http.post(url, data=orjson.dumps(payload), headers=headers)
            try:
                body = await resp.read()
            finally:
                resp.release()
            status = resp.status
    except UPSTREAM_ERRORS as exc:
        reason = refusal_of(exc) or type(exc).__name__  # names an address, never the key
        return TestResult(reason, time.perf_counter() - started, False)
    elapsed = time.perf_counter() - started
    if status != 200:
        return TestResult(f"upstream answered HTTP {status}", elapsed, True)
    try:
        valid = is_test_answer(channel, orjson.loads(body))
    except orjson.JSONDecodeError:
        valid = False
    if not valid:
        return TestResult("the upstream answer is not one of its dialect", elapsed, True)
    return TestResult(None, elapsed, True)


_AUTO_DISABLED = (
    'SELECT id, type, name, key, base_url, models, "group", priority, weight, model_mapping,'
    " test_model, other FROM channels WHERE status = 3 AND deleted_at IS NULL ORDER BY id"
)


async def retest_periodically(rt: Runtime) -> None:
    """Every ``RELAYGATE_CHANNEL_RETEST_SECONDS`` (0 = never), test the auto-disabled
    channels and re-enable those that pass. One relay per round does it (a Redis lock that
    expires with the round), whichever takes the lock first."""
    interval = rt.settings.channel_retest_seconds
    if interval <= 0:
        return
    background = rt.background
    lock = f"{rt.keys.prefix}:chan-retest"
    while not background.closing.is_set():
        await background.pause(interval)
        try:
            if not await rt.redis.set(lock, rt.instance, nx=True, px=int(interval * 1000)):
                continue
            async with rt.pool.acquire() as conn:
                rows = await conn.fetch(_AUTO_DISABLED)
            for row in rows:
                channel = channel_from_row(row)
                model = row["test_model"] or (sorted(channel.models) or ["gpt-4o-mini"])[0]
                result = await run_test(rt, channel, model)
                if result.failure is None:
                    await enable_after_test(rt, channel.id, force=True)
                else:
                    log.info("channel %d still failing its test: %s", channel.id, result.failure)
        except Exception as exc:  # keep testing through PostgreSQL or Redis outages
            log.warning("periodic channel test failed: %s", exc)
