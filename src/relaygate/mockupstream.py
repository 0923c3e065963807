"""A fast fake LLM upstream (OpenAI, Anthropic Messages, Gemini) for dev, tests and benchmarks.

One process serves many tests: behaviour is chosen per request, never by restarting it.

Test hooks (substrings of the requested model name, combinable, e.g. ``gpt-slow-no-usage``):

* ``fail-500`` -> HTTP 500 with the provider's error body.
* ``fail-429`` -> HTTP 429 with the provider's error body.
* ``no-usage`` -> no usage anywhere (non-stream body and every stream event).
* ``slow``     -> sleep 0.5 s before answering; when streaming, before every content chunk
  instead (on top of ``MockConfig.chunk_delay``).
* ``drop``     -> streams only: the connection is closed abruptly right after the second
  content chunk (no finish chunk, no usage, no ``[DONE]``; the chunked body is left
  unterminated so the client sees a payload error).

Request header ``x-mock-delay-ms: N`` sleeps N milliseconds before answering (before the
response headers, also for the failure hooks).

Authentication: OpenAI routes need ``Authorization: Bearer <anything>``; the Anthropic route
also accepts ``x-api-key``; the Gemini routes also accept ``x-goog-api-key`` or ``?key=``.
The key is never looked at beyond "present", never stored and never logged (``run`` turns the
access log off because a Gemini ``?key=`` would otherwise appear in the request line).

Token accounting is deterministic: ``prompt_tokens`` is always ``MockConfig.prompt_tokens``;
completion tokens are ``min(MockConfig.completion_tokens, <the request's max tokens>)`` where
the request's max is ``max_tokens``/``max_completion_tokens`` (OpenAI), ``max_tokens``
(Anthropic) or ``generationConfig.maxOutputTokens`` (Gemini). The answer text has exactly that
many words, split over ``stream_chunks`` content chunks when streamed (stream and non-stream
texts are identical). A clamped answer reports ``length``/``max_tokens``/``MAX_TOKENS``.

Speed: every body is built once per distinct (route, model, tokens, flags) and cached as bytes
with placeholders for the response id and the timestamp, which are substituted per request.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import math
import os
import secrets
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

__all__ = ["MOCK_CONFIG", "MockConfig", "build_app", "main", "run"]


@dataclass(frozen=True)
class MockConfig:
    prompt_tokens: int = 10
    completion_tokens: int = 20
    stream_chunks: int = 5  # content chunks per streamed answer
    chunk_delay: float = 0.0  # seconds between streamed chunks


MOCK_CONFIG = web.AppKey("mock_config", MockConfig)

SLOW_SECONDS = 0.5
DROP_AFTER_CHUNKS = 2
MAX_DELAY_MS = 600_000.0
MODELS = (
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-3.5-turbo-instruct",
    "text-embedding-3-small",
    "claude-3-5-haiku-latest",
    "gemini-2.0-flash",
)
_WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed")

# Placeholders substituted per request; the timestamp one is replaced with its quotes so
# that ``created`` ends up a JSON number.
_ID = "__mockid__"
_ID_B = _ID.encode()
_TS_B = b'"__mockts__"'
_TS = "__mockts__"

_JSON = "application/json"
_SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
_DONE = b"data: [DONE]\n\n"
_CACHE_MAX = 2048


# --------------------------------------------------------------------------- errors


class _Style:
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"


_OPENAI_ERR: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    429: ("requests", "rate_limit_exceeded"),
    500: ("server_error", None),
}
_ANTHROPIC_ERR = {
    400: "invalid_request_error",
    401: "authentication_error",
    429: "rate_limit_error",
    500: "api_error",
}
_GEMINI_ERR = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
}
_HOOK_MESSAGES = {
    429: "Rate limit reached (mock upstream fail-429 hook).",
    500: "The server had an error while processing your request (mock upstream fail-500 hook).",
}


def _error(style: str, status: int, message: str, param: str | None = None) -> web.Response:
    obj: dict[str, Any]
    if style == _Style.ANTHROPIC:
        obj = {"type": "error", "error": {"type": _ANTHROPIC_ERR[status], "message": message}}
    elif style == _Style.GEMINI:
        obj = {"error": {"code": status, "message": message, "status": _GEMINI_ERR[status]}}
    else:
        etype, code = _OPENAI_ERR[status]
        obj = {"error": {"message": message, "type": etype, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(obj), content_type=_JSON)


class _Reject(Exception):
    """Raised while parsing a request; turned into an error response by the handler."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True, slots=True)
class _Hooks:
    fail: int | None
    no_usage: bool
    slow: bool
    drop: bool


def _hooks(model: str) -> _Hooks:
    fail = 500 if "fail-500" in model else 429 if "fail-429" in model else None
    return _Hooks(fail, "no-usage" in model, "slow" in model, "drop" in model)


@dataclass(frozen=True, slots=True)
class _StreamTpl:
    """A streamed answer as cached bytes: ``head`` + ``content`` events + ``tail``."""

    head: bytes
    content: tuple[bytes, ...]
    tail: bytes
    full: bytes


def _stream_tpl(
    head: Sequence[bytes], content: Sequence[bytes], tail: Sequence[bytes]
) -> _StreamTpl:
    h, t = b"".join(head), b"".join(tail)
    return _StreamTpl(h, tuple(content), t, h + b"".join(content) + t)


def _sse(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def _sse_event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def _opt_int(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _Reject(400, f"Invalid '{name}': expected a non-negative integer.", name)
        return value
    return None


def _want_stream(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise _Reject(400, "Invalid 'stream': expected a boolean.", "stream")
    return bool(stream)


def _include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


def _has_bearer(request: web.Request) -> bool:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


async def _json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _Reject(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise _Reject(400, "The request body must be a JSON object.")
    return body


def _model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Reject(400, "you must provide a model parameter", "model")
    return model


def _delay_header(request: web.Request) -> float:
    raw = request.headers.get("x-mock-delay-ms")
    if raw is None:
        return 0.0
    try:
        ms = float(raw)
    except ValueError:
        raise _Reject(400, "Invalid x-mock-delay-ms header.") from None
    if not math.isfinite(ms) or ms < 0:
        raise _Reject(400, "Invalid x-mock-delay-ms header.")
    return min(ms, MAX_DELAY_MS) / 1000.0


# --------------------------------------------------------------------------- the mock


class _Mock:
    def __init__(self, cfg: MockConfig) -> None:
        if cfg.prompt_tokens < 0 or cfg.completion_tokens < 0:
            raise ValueError("token counts must be non-negative")
        if cfg.stream_chunks < 1:
            raise ValueError("stream_chunks must be at least 1")
        if cfg.chunk_delay < 0:
            raise ValueError("chunk_delay must be non-negative")
        self.cfg = cfg
        self._prefix = secrets.token_hex(4)
        self._seq = itertools.count(1)
        self._cache: dict[tuple[Any, ...], Any] = {}
        self._models_body = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "mock"}
                    for m in MODELS
                ],
            }
        )

    # ---- per-request values

    def _new_id(self, prefix: str) -> bytes:
        return f"{prefix}{self._prefix}{next(self._seq):012x}".encode()

    @staticmethod
    def _fill(tpl: bytes, rid: bytes, ts: bytes) -> bytes:
        return tpl.replace(_TS_B, ts).replace(_ID_B, rid)

    def _cached(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            hit = self._cache[key] = build()
        return hit

    def _pieces(self, ct: int) -> tuple[str, ...]:
        """``ct`` words spread over ``stream_chunks`` pieces (some empty if ct is small)."""

        def build() -> tuple[str, ...]:
            words = [_WORDS[i % len(_WORDS)] + " " for i in range(ct)]
            k = self.cfg.stream_chunks
            return tuple("".join(words[i * ct // k : (i + 1) * ct // k]) for i in range(k))

        pieces: tuple[str, ...] = self._cached(("pieces", ct), build)
        return pieces

    def _completion_tokens(self, limit: int | None) -> tuple[int, bool]:
        full = self.cfg.completion_tokens
        if limit is not None and limit < full:
            return limit, True
        return full, False

    def _usage(self, ct: int) -> dict[str, int]:
        pt = self.cfg.prompt_tokens
        return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}

    # ---- common request flow

    async def _pre(
        self, request: web.Request, style: str, hooks: _Hooks, stream: bool
    ) -> web.Response | None:
        """Delays and failure hooks; returns an error response or ``None`` to go on."""
        delay = _delay_header(request)
        if hooks.slow and (not stream or hooks.fail is not None):
            delay += SLOW_SECONDS
        if delay > 0:
            await asyncio.sleep(delay)
        if hooks.fail is not None:
            return _error(style, hooks.fail, _HOOK_MESSAGES[hooks.fail])
        return None

    async def _send_stream(
        self, request: web.Request, tpl: _StreamTpl, rid: bytes, hooks: _Hooks
    ) -> web.StreamResponse:
        ts = str(int(time.time())).encode()
        resp = web.StreamResponse(headers=_SSE_HEADERS)
        await resp.prepare(request)
        delay = self.cfg.chunk_delay + (SLOW_SECONDS if hooks.slow else 0.0)
        if delay <= 0 and not hooks.drop:
            await resp.write(self._fill(tpl.full, rid, ts))
            await resp.write_eof()
            return resp
        if tpl.head:
            await resp.write(self._fill(tpl.head, rid, ts))
        for n, event in enumerate(tpl.content, 1):
            if delay > 0:
                await asyncio.sleep(delay)
            await resp.write(self._fill(event, rid, ts))
            if hooks.drop and n >= DROP_AFTER_CHUNKS:
                # Abrupt close: the buffered chunks are flushed, the chunked body is never
                # terminated. aiohttp's own write_eof afterwards hits a ConnectionError,
                # which it swallows.
                if request.transport is not None:
                    request.transport.close()
                return resp
        if tpl.tail:
            await resp.write(self._fill(tpl.tail, rid, ts))
        await resp.write_eof()
        return resp

    def _reply(self, tpl: bytes, rid: bytes) -> web.Response:
        body = self._fill(tpl, rid, str(int(time.time())).encode())
        return web.Response(body=body, content_type=_JSON)

    # ---- OpenAI chat completions

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            if not _has_bearer(request):
                raise _Reject(401, "You didn't provide an API key.")
            body = await _json_body(request)
            model = _model_of(body)
            limit = _opt_int(body, "max_completion_tokens", "max_tokens")
            stream = _want_stream(body)
            hooks = _hooks(model)
            early = await self._pre(request, _Style.OPENAI, hooks, stream)
        except _Reject as e:
            return _error(_Style.OPENAI, e.status, e.message, e.param)
        if early is not None:
            return early
        ct, clamped = self._completion_tokens(limit)
        finish = "length" if clamped else "stop"
        rid = self._new_id("chatcmpl-")
        if not stream:
            key = ("chat", model, ct, finish, hooks.no_usage)
            tpl: bytes = self._cached(key, lambda: self._chat_body(model, ct, finish, hooks))
            return self._reply(tpl, rid)
        usage = _include_usage(body) and not hooks.no_usage
        skey = ("chat-stream", model, ct, finish, usage)
        stpl: _StreamTpl = self._cached(skey, lambda: self._chat_stream(model, ct, finish, usage))
        return await self._send_stream(request, stpl, rid, hooks)

    def _chat_body(self, model: str, ct: int, finish: str, hooks: _Hooks) -> bytes:
        obj: dict[str, Any] = {
            "id": _ID,
            "object": "chat.completion",
            "created": _TS,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(self._pieces(ct)),
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }
        if not hooks.no_usage:
            obj["usage"] = self._usage(ct)
        return orjson.dumps(obj)

    def _chat_stream(self, model: str, ct: int, finish: str, usage: bool) -> _StreamTpl:
        def chunk(delta: dict[str, Any], reason: str | None) -> bytes:
            obj: dict[str, Any] = {
                "id": _ID,
                "object": "chat.completion.chunk",
                "created": _TS,
                "model": model,
                "service_tier": "default",
                "system_fingerprint": "fp_mock",
                "choices": [
                    {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
                ],
            }
            if usage:
                obj["usage"] = None
            return _sse(obj)

        head = [chunk({"role": "assistant", "content": "", "refusal": None}, None)]
        content = [chunk({"content": p}, None) for p in self._pieces(ct)]
        tail = [chunk({}, finish)]
        if usage:
            tail.append(
                _sse(
                    {
                        "id": _ID,
                        "object": "chat.completion.chunk",
                        "created": _TS,
                        "model": model,
                        "service_tier": "default",
                        "system_fingerprint": "fp_mock",
                        "choices": [],
                        "usage": self._usage(ct),
                    }
                )
            )
        tail.append(_DONE)
        return _stream_tpl(head, content, tail)

    # ---- OpenAI legacy completions

    async def completions(self, request: web.Request) -> web.StreamResponse:
        try:
            if not _has_bearer(request):
                raise _Reject(401, "You didn't provide an API key.")
            body = await _json_body(request)
            model = _model_of(body)
            limit = _opt_int(body, "max_tokens")
            stream = _want_stream(body)
            hooks = _hooks(model)
            early = await self._pre(request, _Style.OPENAI, hooks, stream)
        except _Reject as e:
            return _error(_Style.OPENAI, e.status, e.message, e.param)
        if early is not None:
            return early
        ct, clamped = self._completion_tokens(limit)
        finish = "length" if clamped else "stop"
        rid = self._new_id("cmpl-")
        if not stream:
            key = ("cmpl", model, ct, finish, hooks.no_usage)
            tpl: bytes = self._cached(key, lambda: self._cmpl_body(model, ct, finish, hooks))
            return self._reply(tpl, rid)
        usage = _include_usage(body) and not hooks.no_usage
        skey = ("cmpl-stream", model, ct, finish, usage)
        stpl: _StreamTpl = self._cached(skey, lambda: self._cmpl_stream(model, ct, finish, usage))
        return await self._send_stream(request, stpl, rid, hooks)

    def _cmpl_body(self, model: str, ct: int, finish: str, hooks: _Hooks) -> bytes:
        obj: dict[str, Any] = {
            "id": _ID,
            "object": "text_completion",
            "created": _TS,
            "model": model,
            "choices": [
                {
                    "text": "".join(self._pieces(ct)),
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "system_fingerprint": "fp_mock",
        }
        if not hooks.no_usage:
            obj["usage"] = self._usage(ct)
        return orjson.dumps(obj)

    def _cmpl_stream(self, model: str, ct: int, finish: str, usage: bool) -> _StreamTpl:
        def chunk(choices: list[dict[str, Any]], usage_value: Any = None) -> bytes:
            obj: dict[str, Any] = {
                "id": _ID,
                "object": "text_completion",
                "created": _TS,
                "model": model,
                "system_fingerprint": "fp_mock",
                "choices": choices,
            }
            if usage:
                obj["usage"] = usage_value
            return _sse(obj)

        def choice(text: str, reason: str | None) -> list[dict[str, Any]]:
            return [{"text": text, "index": 0, "logprobs": None, "finish_reason": reason}]

        content = [chunk(choice(p, None)) for p in self._pieces(ct)]
        tail = [chunk(choice("", finish))]
        if usage:
            tail.append(chunk([], self._usage(ct)))
        tail.append(_DONE)
        return _stream_tpl([], content, tail)

    # ---- OpenAI embeddings and models

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        try:
            if not _has_bearer(request):
                raise _Reject(401, "You didn't provide an API key.")
            body = await _json_body(request)
            model = _model_of(body)
            inputs = body.get("input")
            if isinstance(inputs, str) or (
                isinstance(inputs, list) and inputs and all(isinstance(x, int) for x in inputs)
            ):
                count = 1
            elif isinstance(inputs, list) and inputs:
                count = len(inputs)
            else:
                raise _Reject(400, "'input' must be a non-empty string or array.", "input")
            dims = _opt_int(body, "dimensions") or 8
            fmt = body.get("encoding_format") or "float"
            if fmt not in ("float", "base64"):
                raise _Reject(400, "Invalid 'encoding_format'.", "encoding_format")
            hooks = _hooks(model)
            early = await self._pre(request, _Style.OPENAI, hooks, False)
        except _Reject as e:
            return _error(_Style.OPENAI, e.status, e.message, e.param)
        if early is not None:
            return early
        key = ("emb", model, count, min(dims, 4096), fmt, hooks.no_usage)
        tpl: bytes = self._cached(key, lambda: self._emb_body(model, count, dims, fmt, hooks))
        return web.Response(body=tpl, content_type=_JSON)

    def _emb_body(self, model: str, count: int, dims: int, fmt: str, hooks: _Hooks) -> bytes:
        dims = max(1, min(dims, 4096))
        data = []
        for i in range(count):
            vec = [round(math.sin(i + j + 1) / math.sqrt(dims), 6) for j in range(dims)]
            emb: Any = vec
            if fmt == "base64":
                emb = base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": emb})
        obj: dict[str, Any] = {"object": "list", "data": data, "model": model}
        if not hooks.no_usage:
            pt = self.cfg.prompt_tokens
            obj["usage"] = {"prompt_tokens": pt, "total_tokens": pt}
        return orjson.dumps(obj)

    async def models(self, request: web.Request) -> web.StreamResponse:
        if not _has_bearer(request):
            return _error(_Style.OPENAI, 401, "You didn't provide an API key.")
        return web.Response(body=self._models_body, content_type=_JSON)

    # ---- Anthropic Messages

    async def messages(self, request: web.Request) -> web.StreamResponse:
        try:
            if not (_has_bearer(request) or request.headers.get("x-api-key", "").strip()):
                raise _Reject(401, "x-api-key header is required")
            body = await _json_body(request)
            model = _model_of(body)
            limit = _opt_int(body, "max_tokens")
            stream = _want_stream(body)
            hooks = _hooks(model)
            early = await self._pre(request, _Style.ANTHROPIC, hooks, stream)
        except _Reject as e:
            return _error(_Style.ANTHROPIC, e.status, e.message)
        if early is not None:
            return early
        ct, clamped = self._completion_tokens(limit)
        stop = "max_tokens" if clamped else "end_turn"
        rid = self._new_id("msg_mock")
        key = ("msg-stream" if stream else "msg", model, ct, stop, hooks.no_usage)
        if not stream:
            tpl: bytes = self._cached(key, lambda: self._msg_body(model, ct, stop, hooks))
            return self._reply(tpl, rid)
        stpl: _StreamTpl = self._cached(key, lambda: self._msg_stream(model, ct, stop, hooks))
        return await self._send_stream(request, stpl, rid, hooks)

    def _msg_body(self, model: str, ct: int, stop: str, hooks: _Hooks) -> bytes:
        obj: dict[str, Any] = {
            "id": _ID,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "".join(self._pieces(ct))}],
            "stop_reason": stop,
            "stop_sequence": None,
        }
        if not hooks.no_usage:
            obj["usage"] = {"input_tokens": self.cfg.prompt_tokens, "output_tokens": ct}
        return orjson.dumps(obj)

    def _msg_stream(self, model: str, ct: int, stop: str, hooks: _Hooks) -> _StreamTpl:
        message: dict[str, Any] = {
            "id": _ID,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        delta: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
        }
        if not hooks.no_usage:
            # Like the real API: message_start carries the input count and a provisional
            # output count; message_delta carries the final (cumulative) output count.
            message["usage"] = {
                "input_tokens": self.cfg.prompt_tokens,
                "output_tokens": min(1, ct),
            }
            delta["usage"] = {"output_tokens": ct}
        head = [
            _sse_event("message_start", {"type": "message_start", "message": message}),
            _sse_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            _sse_event("ping", {"type": "ping"}),
        ]
        content = [
            _sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": p},
                },
            )
            for p in self._pieces(ct)
        ]
        tail = [
            _sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            _sse_event("message_delta", delta),
            _sse_event("message_stop", {"type": "message_stop"}),
        ]
        return _stream_tpl(head, content, tail)

    # ---- Gemini

    async def gemini(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["spec"].partition(":")
        if method not in ("generateContent", "streamGenerateContent") or not model:
            return _error(_Style.GEMINI, 400, f"Unsupported method {method!r}.")
        stream = method == "streamGenerateContent"
        try:
            if not (
                _has_bearer(request)
                or request.headers.get("x-goog-api-key", "").strip()
                or request.query.get("key", "").strip()
            ):
                raise _Reject(401, "Method doesn't allow unregistered callers.")
            body = await _json_body(request)
            gen = body.get("generationConfig")
            limit = _opt_int(gen, "maxOutputTokens") if isinstance(gen, dict) else None
            hooks = _hooks(model)
            early = await self._pre(request, _Style.GEMINI, hooks, stream)
        except _Reject as e:
            return _error(_Style.GEMINI, e.status, e.message)
        if early is not None:
            return early
        ct, clamped = self._completion_tokens(limit)
        finish = "MAX_TOKENS" if clamped else "STOP"
        rid = self._new_id("")
        sse = request.query.get("alt") == "sse"
        if not stream:
            key = ("gem", model, ct, finish, hooks.no_usage)
            tpl: bytes = self._cached(key, lambda: self._gem_body(model, ct, finish, hooks))
            return self._reply(tpl, rid)
        skey = ("gem-stream", model, ct, finish, hooks.no_usage, sse)
        stpl: _StreamTpl = self._cached(
            skey, lambda: self._gem_stream(model, ct, finish, hooks, sse)
        )
        if sse:
            return await self._send_stream(request, stpl, rid, hooks)
        # Without alt=sse Gemini streams one JSON array; delays and drop do not apply.
        return self._reply(stpl.full, rid)

    def _gem_usage(self, ct: int) -> dict[str, int]:
        pt = self.cfg.prompt_tokens
        return {"promptTokenCount": pt, "candidatesTokenCount": ct, "totalTokenCount": pt + ct}

    def _gem_obj(
        self, model: str, text: str, finish: str | None, usage: dict[str, int] | None
    ) -> dict[str, Any]:
        cand: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
        if finish is not None:
            cand["finishReason"] = finish
        cand["index"] = 0
        obj: dict[str, Any] = {"candidates": [cand]}
        if usage is not None:
            obj["usageMetadata"] = usage
        obj["modelVersion"] = model
        obj["responseId"] = _ID
        return obj

    def _gem_body(self, model: str, ct: int, finish: str, hooks: _Hooks) -> bytes:
        usage = None if hooks.no_usage else self._gem_usage(ct)
        return orjson.dumps(self._gem_obj(model, "".join(self._pieces(ct)), finish, usage))

    def _gem_stream(self, model: str, ct: int, finish: str, hooks: _Hooks, sse: bool) -> _StreamTpl:
        pieces = self._pieces(ct)
        pt = self.cfg.prompt_tokens
        # Like the real API: every chunk carries usageMetadata (the prompt count so far), the
        # last one (with finishReason) the complete counts.
        partial = None if hooks.no_usage else {"promptTokenCount": pt, "totalTokenCount": pt}
        final = None if hooks.no_usage else self._gem_usage(ct)
        objs = [self._gem_obj(model, p, None, partial) for p in pieces[:-1]]
        objs.append(self._gem_obj(model, pieces[-1], finish, final))
        if sse:
            return _stream_tpl([], [_sse(o) for o in objs], [])
        parts = [orjson.dumps(o) for o in objs]
        return _stream_tpl([b"["], [b",\r\n".join(parts)], [b"]"])


# --------------------------------------------------------------------------- app


def build_app(cfg: MockConfig) -> web.Application:
    mock = _Mock(cfg)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[MOCK_CONFIG] = cfg
    app.router.add_post("/v1/chat/completions", mock.chat_completions)
    app.router.add_post("/v1/completions", mock.completions)
    app.router.add_post("/v1/embeddings", mock.embeddings)
    app.router.add_get("/v1/models", mock.models)
    app.router.add_post("/v1/messages", mock.messages)
    app.router.add_post("/v1beta/models/{spec}", mock.gemini)
    return app


def _loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(host: str, port: int, cfg: MockConfig) -> None:
    """Serve the mock until interrupted (blocking; uvloop when available, no access log)."""
    web.run_app(
        build_app(cfg),
        host=host,
        port=port,
        access_log=None,
        print=None,
        backlog=4096,
        loop=_loop(),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m relaygate.mockupstream --port 8000``."""
    p = argparse.ArgumentParser(
        prog="relaygate.mockupstream", description="Fake OpenAI/Anthropic/Gemini upstream."
    )
    p.add_argument("--host", default=os.environ.get("MOCK_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("MOCK_PORT", "8000")))
    p.add_argument("--prompt-tokens", type=int, default=MockConfig.prompt_tokens)
    p.add_argument("--completion-tokens", type=int, default=MockConfig.completion_tokens)
    p.add_argument("--stream-chunks", type=int, default=MockConfig.stream_chunks)
    p.add_argument("--chunk-delay", type=float, default=MockConfig.chunk_delay)
    a = p.parse_args(argv)
    cfg = MockConfig(a.prompt_tokens, a.completion_tokens, a.stream_chunks, a.chunk_delay)
    run(a.host, a.port, cfg)


if __name__ == "__main__":
    main()
