"""The Gemini generateContent / streamGenerateContent route (SSE with ``alt=sse``, else one
JSON array)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from relaygate.dev.mock.common import (
    ID,
    Hooks,
    Reject,
    StreamTpl,
    Style,
    error,
    has_bearer,
    hooks_for,
    json_body,
    opt_int,
    sse_data,
    stream_tpl,
)
from relaygate.dev.mock.core import MockCore
from relaygate.dev.mock.tools import tool_reply, tool_to_call


class GeminiRoutes:
    def __init__(self, core: MockCore) -> None:
        self.core = core

    async def gemini(self, request: web.Request) -> web.StreamResponse:
        model, _, method = request.match_info["spec"].partition(":")
        if method not in ("generateContent", "streamGenerateContent") or not model:
            return error(Style.GEMINI, 400, f"Unsupported method {method!r}.")
        stream = method == "streamGenerateContent"
        try:
            if not (
                has_bearer(request)
                or request.headers.get("x-goog-api-key", "").strip()
                or request.query.get("key", "").strip()
            ):
                raise Reject(401, "Method doesn't allow unregistered callers.")
            body = await json_body(request)
            gen = body.get("generationConfig")
            limit = opt_int(gen, "maxOutputTokens") if isinstance(gen, dict) else None
            hooks = hooks_for(model)
            early = await self.core.pre(request, Style.GEMINI, hooks, stream)
        except Reject as e:
            return error(Style.GEMINI, e.status, e.message)
        if early is not None:
            return early
        ct, clamped = self.core.completion_tokens(limit)
        finish = "MAX_TOKENS" if clamped else "STOP"
        rid = self.core.new_id("")
        sse = request.query.get("alt") == "sse"
        tool = tool_to_call(body, Style.GEMINI)
        if tool is not None and (sse or not stream):
            pt = self.core.cfg.prompt_tokens
            return tool_reply(Style.GEMINI, tool, model, rid.decode(), pt, ct, stream)
        if not stream:
            key = ("gem", model, ct, finish, hooks.no_usage)
            tpl: bytes = self.core.cached(key, lambda: self._gem_body(model, ct, finish, hooks))
            return self.core.reply(tpl, rid)
        skey = ("gem-stream", model, ct, finish, hooks.no_usage, sse)
        stpl: StreamTpl = self.core.cached(
            skey, lambda: self._gem_stream(model, ct, finish, hooks, sse)
        )
        if sse:
            return await self.core.send_stream(request, stpl, rid, hooks)
        # Without alt=sse Gemini streams one JSON array; delays and drop do not apply.
        return self.core.reply(stpl.full, rid)

    def _gem_usage(self, ct: int) -> dict[str, int]:
        pt = self.core.cfg.prompt_tokens
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
        obj["responseId"] = ID
        return obj

    def _gem_body(self, model: str, ct: int, finish: str, hooks: Hooks) -> bytes:
        usage = None if hooks.no_usage else self._gem_usage(ct)
        return orjson.dumps(self._gem_obj(model, "".join(self.core.pieces(ct)), finish, usage))

    def _gem_stream(self, model: str, ct: int, finish: str, hooks: Hooks, sse: bool) -> StreamTpl:
        pieces = self.core.pieces(ct)
        pt = self.core.cfg.prompt_tokens
        # Like the real API: every chunk carries usageMetadata (the prompt count so far), the
        # last one (with finishReason) the complete counts.
        partial = None if hooks.no_usage else {"promptTokenCount": pt, "totalTokenCount": pt}
        final = None if hooks.no_usage else self._gem_usage(ct)
        objs = [self._gem_obj(model, p, None, partial) for p in pieces[:-1]]
        objs.append(self._gem_obj(model, pieces[-1], finish, final))
        if sse:
            return stream_tpl([], [sse_data(o) for o in objs], [])
        parts = [orjson.dumps(o) for o in objs]
        return stream_tpl([b"["], [b",\r\n".join(parts)], [b"]"])
