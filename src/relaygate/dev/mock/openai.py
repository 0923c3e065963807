"""OpenAI routes: chat completions, legacy completions, embeddings, models.

Chat and legacy completions share one request flow (:meth:`OpenAIRoutes._text`); they differ
only in the limit fields they read, the id prefix and the body they build.
"""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from relaygate.dev.mock.common import (
    DONE,
    ID,
    JSON,
    MODELS,
    TS,
    Hooks,
    Reject,
    StreamTpl,
    Style,
    error,
    has_bearer,
    hooks_for,
    include_usage,
    json_body,
    model_of,
    opt_int,
    sse_data,
    stream_tpl,
    want_stream,
)
from relaygate.dev.mock.core import MockCore
from relaygate.dev.mock.tools import tool_reply, tool_to_call

_NO_KEY = "You didn't provide an API key."

# (model, completion tokens, finish reason, with usage) -> cached bytes
BodyBuilder = Callable[[str, int, str, bool], bytes]
StreamBuilder = Callable[[str, int, str, bool], StreamTpl]


@dataclass(frozen=True, slots=True)
class _TextRoute:
    kind: str  # cache key prefix
    id_prefix: str
    limit_fields: tuple[str, ...]
    body: BodyBuilder
    stream: StreamBuilder


def _chunk_stream(
    envelope: dict[str, Any],
    *,
    head: list[list[dict[str, Any]]],
    content: list[list[dict[str, Any]]],
    finish: list[dict[str, Any]],
    usage: dict[str, int] | None,
) -> StreamTpl:
    """An OpenAI stream from the ``choices`` of each chunk. With ``usage`` every chunk has a
    ``usage`` field (null until a last, choice-less chunk carries the counts), as
    ``stream_options.include_usage`` makes the real API do."""

    def chunk(choices: list[dict[str, Any]], usage_value: dict[str, int] | None = None) -> bytes:
        obj: dict[str, Any] = {**envelope, "choices": choices}
        if usage is not None:
            obj["usage"] = usage_value
        return sse_data(obj)

    tail = [chunk(finish)]
    if usage is not None:
        tail.append(chunk([], usage))
    tail.append(DONE)
    return stream_tpl([chunk(c) for c in head], [chunk(c) for c in content], tail)


class OpenAIRoutes:
    def __init__(self, core: MockCore) -> None:
        self.core = core
        self._chat = _TextRoute(
            "chat",
            "chatcmpl-",
            ("max_completion_tokens", "max_tokens"),
            self._chat_body,
            self._chat_stream,
        )
        self._cmpl = _TextRoute(
            "cmpl", "cmpl-", ("max_tokens",), self._cmpl_body, self._cmpl_stream
        )
        self._models_body = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 1_700_000_000, "owned_by": "mock"}
                    for m in MODELS
                ],
            }
        )

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._text(request, self._chat)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._text(request, self._cmpl)

    async def _text(self, request: web.Request, route: _TextRoute) -> web.StreamResponse:
        core = self.core
        try:
            if not has_bearer(request):
                raise Reject(401, _NO_KEY)
            body = await json_body(request)
            model = model_of(body)
            limit = opt_int(body, *route.limit_fields)
            stream = want_stream(body)
            hooks = hooks_for(model)
            early = await core.pre(request, Style.OPENAI, hooks, stream)
        except Reject as e:
            return error(Style.OPENAI, e.status, e.message, e.param)
        if early is not None:
            return early
        ct, clamped = core.completion_tokens(limit)
        finish = "length" if clamped else "stop"
        rid = core.new_id(route.id_prefix)
        tool = tool_to_call(body, Style.OPENAI) if route is self._chat else None
        if tool is not None:
            usage_wanted = not stream or include_usage(body)
            pt = core.cfg.prompt_tokens
            return tool_reply(Style.OPENAI, tool, model, rid.decode(), pt, ct, stream, usage_wanted)
        if not stream:
            usage = not hooks.no_usage
            key = (route.kind, model, ct, finish, hooks.no_usage)
            tpl: bytes = core.cached(key, lambda: route.body(model, ct, finish, usage))
            return core.reply(tpl, rid)
        usage = include_usage(body) and not hooks.no_usage
        skey = (f"{route.kind}-stream", model, ct, finish, usage)
        stpl: StreamTpl = core.cached(skey, lambda: route.stream(model, ct, finish, usage))
        return await core.send_stream(request, stpl, rid, hooks)

    # ---- chat completions

    def _chat_body(self, model: str, ct: int, finish: str, usage: bool) -> bytes:
        obj: dict[str, Any] = {
            "id": ID,
            "object": "chat.completion",
            "created": TS,
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": "".join(self.core.pieces(ct)),
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
        if usage:
            obj["usage"] = self.core.usage(ct)
        return orjson.dumps(obj)

    def _chat_stream(self, model: str, ct: int, finish: str, usage: bool) -> StreamTpl:
        def choice(delta: dict[str, Any], reason: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]

        envelope = {
            "id": ID,
            "object": "chat.completion.chunk",
            "created": TS,
            "model": model,
            "service_tier": "default",
            "system_fingerprint": "fp_mock",
        }
        return _chunk_stream(
            envelope,
            head=[choice({"role": "assistant", "content": "", "refusal": None})],
            content=[choice({"content": p}) for p in self.core.pieces(ct)],
            finish=choice({}, finish),
            usage=self.core.usage(ct) if usage else None,
        )

    # ---- legacy completions

    def _cmpl_body(self, model: str, ct: int, finish: str, usage: bool) -> bytes:
        obj: dict[str, Any] = {
            "id": ID,
            "object": "text_completion",
            "created": TS,
            "model": model,
            "choices": [
                {
                    "text": "".join(self.core.pieces(ct)),
                    "index": 0,
                    "logprobs": None,
                    "finish_reason": finish,
                }
            ],
            "system_fingerprint": "fp_mock",
        }
        if usage:
            obj["usage"] = self.core.usage(ct)
        return orjson.dumps(obj)

    def _cmpl_stream(self, model: str, ct: int, finish: str, usage: bool) -> StreamTpl:
        def choice(text: str, reason: str | None = None) -> list[dict[str, Any]]:
            return [{"text": text, "index": 0, "logprobs": None, "finish_reason": reason}]

        envelope = {
            "id": ID,
            "object": "text_completion",
            "created": TS,
            "model": model,
            "system_fingerprint": "fp_mock",
        }
        return _chunk_stream(
            envelope,
            head=[],
            content=[choice(p) for p in self.core.pieces(ct)],
            finish=choice("", finish),
            usage=self.core.usage(ct) if usage else None,
        )

    # ---- embeddings and models

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        try:
            if not has_bearer(request):
                raise Reject(401, _NO_KEY)
            body = await json_body(request)
            model = model_of(body)
            inputs = body.get("input")
            if isinstance(inputs, str) or (
                isinstance(inputs, list) and inputs and all(isinstance(x, int) for x in inputs)
            ):
                count = 1
            elif isinstance(inputs, list) and inputs:
                count = len(inputs)
            else:
                raise Reject(400, "'input' must be a non-empty string or array.", "input")
            dims = opt_int(body, "dimensions") or 8
            fmt = body.get("encoding_format") or "float"
            if fmt not in ("float", "base64"):
                raise Reject(400, "Invalid 'encoding_format'.", "encoding_format")
            hooks = hooks_for(model)
            early = await self.core.pre(request, Style.OPENAI, hooks, False)
        except Reject as e:
            return error(Style.OPENAI, e.status, e.message, e.param)
        if early is not None:
            return early
        key = ("emb", model, count, min(dims, 4096), fmt, hooks.no_usage)
        tpl: bytes = self.core.cached(key, lambda: self._emb_body(model, count, dims, fmt, hooks))
        return web.Response(body=tpl, content_type=JSON)

    def _emb_body(self, model: str, count: int, dims: int, fmt: str, hooks: Hooks) -> bytes:
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
            pt = self.core.cfg.prompt_tokens
            obj["usage"] = {"prompt_tokens": pt, "total_tokens": pt}
        return orjson.dumps(obj)

    async def models(self, request: web.Request) -> web.StreamResponse:
        if not has_bearer(request):
            return error(Style.OPENAI, 401, _NO_KEY)
        return web.Response(body=self._models_body, content_type=JSON)
