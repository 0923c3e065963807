"""Tool calls in each provider's wire format: a request that declares tools and ends with a
user turn (not a tool result) is answered with a call of its first tool, arguments
``TOOL_ARGS``; the same token accounting as a text answer. Not cached: tests, not benches,
use it."""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import web

from relaygate.dev.mock.common import DONE, SSE_HEADERS, Style, sse_data, sse_event

TOOL_ARGS = {"location": "Paris", "unit": "celsius"}
_ARGS_TEXT = orjson.dumps(TOOL_ARGS).decode()


def _last(items: Any) -> dict[str, Any]:
    if isinstance(items, list) and items and isinstance(items[-1], dict):
        return items[-1]
    return {}


def tool_to_call(body: dict[str, Any], style: str) -> str | None:
    """The name of the tool to call, or None for an ordinary answer."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or not isinstance(tools[0], dict):
        return None
    if style == Style.GEMINI:
        decls = tools[0].get("functionDeclarations") or tools[0].get("function_declarations")
        last = _last(body.get("contents"))
        parts = last.get("parts") or []
        if last.get("role", "user") != "user" or any("functionResponse" in p for p in parts):
            return None
        return str(decls[0].get("name")) if decls else None
    last = _last(body.get("messages"))
    if style == Style.ANTHROPIC:
        content = last.get("content")
        if last.get("role") != "user" or (
            isinstance(content, list)
            and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)
        ):
            return None
        return str(tools[0].get("name"))
    if last.get("role") != "user":
        return None
    fn = tools[0].get("function") or {}
    return str(fn.get("name"))


def _openai(name: str, model: str, rid: str, pt: int, ct: int, stream: bool, usage: bool) -> bytes:
    base = {"id": rid, "created": int(time.time()), "model": model}
    call = {"id": "call_mock1", "type": "function", "function": {"name": name}}
    totals = {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}
    if not stream:
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{**call, "function": {"name": name, "arguments": _ARGS_TEXT}}],
        }
        choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
        return orjson.dumps(
            {**base, "object": "chat.completion", "choices": [choice], "usage": totals}
        )

    def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": reason}
        return sse_data({**base, "object": "chat.completion.chunk", "choices": [choice]})

    half = len(_ARGS_TEXT) // 2
    out = chunk({"role": "assistant", "content": None})
    first = {**call, "index": 0, "function": {"name": name, "arguments": ""}}
    out += chunk({"tool_calls": [first]})
    for piece in (_ARGS_TEXT[:half], _ARGS_TEXT[half:]):
        out += chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
    out += chunk({}, "tool_calls")
    if usage:
        out += sse_data({**base, "object": "chat.completion.chunk", "choices": [], "usage": totals})
    return out + DONE


def _anthropic(name: str, model: str, rid: str, pt: int, ct: int, stream: bool) -> bytes:
    block = {"type": "tool_use", "id": "toolu_mock1", "name": name}
    message: dict[str, Any] = {"id": rid, "type": "message", "role": "assistant", "model": model}
    if not stream:
        message.update(
            content=[{**block, "input": TOOL_ARGS}],
            stop_reason="tool_use",
            stop_sequence=None,
            usage={"input_tokens": pt, "output_tokens": ct},
        )
        return orjson.dumps(message)
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {"input_tokens": pt, "output_tokens": 1}
    half = len(_ARGS_TEXT) // 2
    out = sse_event("message_start", {"type": "message_start", "message": start})
    out += sse_event(
        "content_block_start",
        {"type": "content_block_start", "index": 0, "content_block": {**block, "input": {}}},
    )
    for piece in (_ARGS_TEXT[:half], _ARGS_TEXT[half:]):
        delta = {"type": "input_json_delta", "partial_json": piece}
        out += sse_event(
            "content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta}
        )
    out += sse_event("content_block_stop", {"type": "content_block_stop", "index": 0})
    out += sse_event(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": ct},
        },
    )
    return out + sse_event("message_stop", {"type": "message_stop"})


def _gemini(name: str, model: str, rid: str, pt: int, ct: int, stream: bool) -> bytes:
    obj = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"functionCall": {"name": name, "args": TOOL_ARGS}}],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": pt,
            "candidatesTokenCount": ct,
            "totalTokenCount": pt + ct,
        },
        "modelVersion": model,
        "responseId": rid,
    }
    return sse_data(obj) if stream else orjson.dumps(obj)


def tool_reply(
    style: str,
    name: str,
    model: str,
    rid: str,
    prompt_tokens: int,
    completion_tokens: int,
    stream: bool,
    usage: bool = True,
) -> web.Response:
    if style == Style.ANTHROPIC:
        body = _anthropic(name, model, rid, prompt_tokens, completion_tokens, stream)
    elif style == Style.GEMINI:
        body = _gemini(name, model, rid, prompt_tokens, completion_tokens, stream)
    else:
        body = _openai(name, model, rid, prompt_tokens, completion_tokens, stream, usage)
    if stream:
        return web.Response(body=body, headers=SSE_HEADERS)
    return web.Response(body=body, content_type="application/json")
