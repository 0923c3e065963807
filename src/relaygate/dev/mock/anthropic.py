"""The Anthropic Messages route, streamed as named SSE events like the real API."""

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
    model_of,
    opt_int,
    sse_event,
    stream_tpl,
    want_stream,
)
from relaygate.dev.mock.core import MockCore
from relaygate.dev.mock.tools import tool_reply, tool_to_call


class AnthropicRoutes:
    def __init__(self, core: MockCore) -> None:
        self.core = core

    async def messages(self, request: web.Request) -> web.StreamResponse:
        try:
            if not (has_bearer(request) or request.headers.get("x-api-key", "").strip()):
                raise Reject(401, "x-api-key header is required")
            body = await json_body(request)
            model = model_of(body)
            limit = opt_int(body, "max_tokens")
            stream = want_stream(body)
            hooks = hooks_for(model)
            early = await self.core.pre(request, Style.ANTHROPIC, hooks, stream)
        except Reject as e:
            return error(Style.ANTHROPIC, e.status, e.message)
        if early is not None:
            return early
        ct, clamped = self.core.completion_tokens(limit)
        stop = "max_tokens" if clamped else "end_turn"
        rid = self.core.new_id("msg_mock")
        tool = tool_to_call(body, Style.ANTHROPIC)
        if tool is not None:
            pt = self.core.cfg.prompt_tokens
            return tool_reply(Style.ANTHROPIC, tool, model, rid.decode(), pt, ct, stream)
        key = ("msg-stream" if stream else "msg", model, ct, stop, hooks.no_usage)
        if not stream:
            tpl: bytes = self.core.cached(key, lambda: self._msg_body(model, ct, stop, hooks))
            return self.core.reply(tpl, rid)
        stpl: StreamTpl = self.core.cached(key, lambda: self._msg_stream(model, ct, stop, hooks))
        return await self.core.send_stream(request, stpl, rid, hooks)

    def _msg_body(self, model: str, ct: int, stop: str, hooks: Hooks) -> bytes:
        obj: dict[str, Any] = {
            "id": ID,
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "".join(self.core.pieces(ct))}],
            "stop_reason": stop,
            "stop_sequence": None,
        }
        if not hooks.no_usage:
            obj["usage"] = {"input_tokens": self.core.cfg.prompt_tokens, "output_tokens": ct}
        return orjson.dumps(obj)

    def _msg_stream(self, model: str, ct: int, stop: str, hooks: Hooks) -> StreamTpl:
        message: dict[str, Any] = {
            "id": ID,
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
                "input_tokens": self.core.cfg.prompt_tokens,
                "output_tokens": min(1, ct),
            }
            delta["usage"] = {"output_tokens": ct}
        head = [
            sse_event("message_start", {"type": "message_start", "message": message}),
            sse_event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                },
            ),
            sse_event("ping", {"type": "ping"}),
        ]
        content = [
            sse_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": p},
                },
            )
            for p in self.core.pieces(ct)
        ]
        tail = [
            sse_event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            sse_event("message_delta", delta),
            sse_event("message_stop", {"type": "message_stop"}),
        ]
        return stream_tpl(head, content, tail)
