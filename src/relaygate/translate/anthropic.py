"""OpenAI chat completions <-> Anthropic Messages: requests, whole answers and streams.

Every translation goes through the OpenAI chat format (the pivot): a Claude request for an
OpenAI channel is turned into a chat completion request, a chat completion request for a
Claude channel into a Messages request; answers come back the other way. The stream
decoders turn upstream events into OpenAI chunks (dicts) and keep the usage for the
settle; the encoders turn OpenAI chunks into the caller's events.
"""

from __future__ import annotations

from typing import Any

import orjson

from relaygate.translate.common import (
    Usage,
    append_turn,
    as_text,
    chunk,
    data_url,
    finish_chunk,
    json_args,
    openai_function,
    openai_max_tokens,
    openai_usage,
    parse_data_url,
    sse_event,
    stream_with_usage,
)

STOP_TO_OPENAI = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
STOP_FROM_OPENAI = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


# --------------------------------------------------------------------------- requests


def _image_block(url: str) -> dict[str, Any]:
    parsed = parse_data_url(url)
    if parsed is not None:
        mime, data = parsed
        return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if isinstance(url, str):
                blocks.append(_image_block(url))
    return blocks


def _assistant_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = [b for b in _user_blocks(message.get("content")) if b.get("text") != ""]
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "toolu_missing",
                "name": fn.get("name", ""),
                "input": json_args(fn.get("arguments")),
            }
        )
    return blocks


def _tools_to_claude(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = []
    for tool in body.get("tools") or []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict):
            tools.append(
                {
                    "name": fn.get("name", ""),
                    "description": fn.get("description", ""),
                    "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
                }
            )
    choice = body.get("tool_choice")
    if tools and choice != "none":
        out["tools"] = tools
        if choice == "required":
            out["tool_choice"] = {"type": "any"}
        elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            out["tool_choice"] = {"type": "tool", "name": choice["function"].get("name", "")}
        if body.get("parallel_tool_calls") is False:
            out.setdefault("tool_choice", {"type": "auto"})["disable_parallel_tool_use"] = True


def request_from_openai(body: dict[str, Any], model: str, max_tokens: int) -> dict[str, Any]:
    """A chat completion request as a Messages request (``max_tokens`` is required there:
    the client's bound, else the reservation's)."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(as_text(message.get("content")))
        elif role == "assistant":
            append_turn(messages, "assistant", "content", _assistant_blocks(message))
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id", ""),
                "content": as_text(message.get("content")),
            }
            append_turn(messages, "user", "content", [result])
        else:
            append_turn(messages, "user", "content", _user_blocks(message.get("content")))
    given = body.get("max_completion_tokens", body.get("max_tokens"))
    out: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": given if isinstance(given, int) and given > 0 else max_tokens,
    }
    if system:
        out["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    _tools_to_claude(body, out)
    if body.get("stream"):
        out["stream"] = True
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    return out


def _claude_content_to_openai(role: str, content: Any, out: list[dict[str, Any]]) -> None:
    if isinstance(content, str):
        out.append({"role": role, "content": content})
        return
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image":
            src = block.get("source") or {}
            if src.get("type") == "base64":
                url = data_url(src.get("media_type", "image/png"), src.get("data", ""))
            else:
                url = src.get("url", "")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {"name": block.get("name", ""), "arguments": arguments},
                }
            )
        elif kind == "tool_result":
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id", ""),
                    "content": as_text(block.get("content")),
                }
            )
    if calls:
        text = "".join(p.get("text", "") for p in parts if p["type"] == "text")
        out.append({"role": "assistant", "content": text or None, "tool_calls": calls})
    elif parts:
        only_text = all(p["type"] == "text" for p in parts)
        value: Any = "".join(p["text"] for p in parts) if only_text else parts
        out.append({"role": role, "content": value})


def request_to_openai(body: dict[str, Any], model: str, max_tokens: int) -> dict[str, Any]:
    """A Messages request as a chat completion request."""
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": as_text(system)})
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            role = "assistant" if message.get("role") == "assistant" else "user"
            _claude_content_to_openai(role, message.get("content"), messages)
    out: dict[str, Any] = {"model": model, "messages": messages}
    out["max_tokens"] = openai_max_tokens(body.get("max_tokens"), max_tokens)
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = body["stop_sequences"]
    tools = [
        openai_function(t, "input_schema") for t in body.get("tools") or [] if isinstance(t, dict)
    ]
    if tools:
        out["tools"] = tools
        choice = body.get("tool_choice")
        if isinstance(choice, dict):
            kind = choice.get("type")
            if kind == "any":
                out["tool_choice"] = "required"
            elif kind == "tool":
                out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
            elif kind == "none":
                out["tool_choice"] = "none"
    if body.get("stream"):
        stream_with_usage(out)
    return out


# --------------------------------------------------------------------------- whole answers


def claude_usage(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    cached = int(usage.get("cache_read_input_tokens") or 0)
    created = int(usage.get("cache_creation_input_tokens") or 0)
    prompt = int(usage.get("input_tokens") or 0) + cached + created
    return Usage(prompt, int(usage.get("output_tokens") or 0), cached)


def response_to_openai(msg: dict[str, Any]) -> dict[str, Any]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in msg.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id", ""),
                    "type": "function",
                    "function": {
                        "name": block.get("name", ""),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    out: dict[str, Any] = {
        "id": msg.get("id", ""),
        "object": "chat.completion",
        "created": 0,
        "model": msg.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": STOP_TO_OPENAI.get(msg.get("stop_reason") or "", "stop"),
            }
        ],
    }
    usage = claude_usage(msg.get("usage"))
    if usage is not None:
        out["usage"] = openai_usage(usage)
    return out


def response_from_openai(chat: dict[str, Any]) -> dict[str, Any]:
    choices = chat.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = as_text(message.get("content"))
    if text:
        content.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id", ""),
                "name": fn.get("name", ""),
                "input": json_args(fn.get("arguments")),
            }
        )
    usage = chat.get("usage") or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return {
        "id": chat.get("id", ""),
        "type": "message",
        "role": "assistant",
        "model": chat.get("model", ""),
        "content": content,
        "stop_reason": STOP_FROM_OPENAI.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": {
            "input_tokens": int(usage.get("prompt_tokens") or 0) - int(cached),
            "output_tokens": int(usage.get("completion_tokens") or 0),
            "cache_read_input_tokens": int(cached),
        },
    }


# --------------------------------------------------------------------------- streams


class StreamToOpenAI:
    """Anthropic stream events -> OpenAI chunks; the usage (input from message_start,
    output from the last message_delta) is kept for the settle."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.usage: Usage | None = None
        self.done = False
        self._tool_index: dict[int, int] = {}

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self.id, self.model = message.get("id", ""), message.get("model", "")
            self.usage = claude_usage(message.get("usage"))
            return [chunk(self.id, self.model, {"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") != "tool_use":
                return []
            n = self._tool_index[int(event.get("index", 0))] = len(self._tool_index)
            call = {
                "index": n,
                "id": block.get("id", ""),
                "type": "function",
                "function": {"name": block.get("name", ""), "arguments": ""},
            }
            return [chunk(self.id, self.model, {"tool_calls": [call]})]
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [chunk(self.id, self.model, {"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                n = self._tool_index.get(int(event.get("index", 0)), 0)
                args = {"index": n, "function": {"arguments": delta.get("partial_json", "")}}
                return [chunk(self.id, self.model, {"tool_calls": [args]})]
            return []
        if kind == "message_delta":
            usage = event.get("usage") or {}
            if self.usage is not None and "output_tokens" in usage:
                self.usage = Usage(
                    self.usage.prompt, int(usage["output_tokens"]), self.usage.cached
                )
            elif self.usage is None:
                self.usage = claude_usage(usage)
            reason = (event.get("delta") or {}).get("stop_reason") or ""
            return [finish_chunk(self.id, self.model, STOP_TO_OPENAI.get(reason, "stop"))]
        if kind == "message_stop":
            self.done = True
        return []


class StreamFromOpenAI:
    """OpenAI chunks -> Anthropic stream events (bytes)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._started = False
        self._block: str | None = None  # "text" or "tool"
        self._index = -1
        self._stop = "end_turn"
        self._finished = False

    def _start(self, obj: dict[str, Any]) -> bytes:
        self._started = True
        message = {
            "id": obj.get("id", ""),
            "type": "message",
            "role": "assistant",
            "model": obj.get("model") or self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return sse_event("message_start", {"type": "message_start", "message": message})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._block = kind
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return out + sse_event("content_block_start", start)

    def _close(self) -> bytes:
        if self._block is None:
            return b""
        self._block = None
        stop = {"type": "content_block_stop", "index": self._index}
        return sse_event("content_block_stop", stop)

    def feed(self, obj: dict[str, Any]) -> bytes:
        out = b"" if self._started else self._start(obj)
        for choice in obj.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._block != "text":
                    out += self._open("text", {"type": "text", "text": ""})
                body = {"type": "text_delta", "text": text}
                out += sse_event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": self._index, "delta": body},
                )
            for call in delta.get("tool_calls") or []:
                fn = call.get("function") or {}
                if call.get("id"):
                    block = {"type": "tool_use", "id": call["id"], "name": fn.get("name", "")}
                    out += self._open("tool", {**block, "input": {}})
                if fn.get("arguments"):
                    body = {"type": "input_json_delta", "partial_json": fn["arguments"]}
                    out += sse_event(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": self._index, "delta": body},
                    )
            if choice.get("finish_reason"):
                self._stop = STOP_FROM_OPENAI.get(choice["finish_reason"], "end_turn")
        usage = obj.get("usage")
        if isinstance(usage, dict):
            out += self._finish(usage)
        return out

    def _finish(self, usage: dict[str, Any]) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": self._stop, "stop_sequence": None},
            "usage": {
                "input_tokens": int(usage.get("prompt_tokens") or 0),
                "output_tokens": int(usage.get("completion_tokens") or 0),
            },
        }
        return self._close() + sse_event("message_delta", delta)

    def end(self) -> bytes:
        """After the upstream's end: close what is open and stop the message."""
        out = b"" if self._started else self._start({})
        out += self._finish({})
        return out + sse_event("message_stop", {"type": "message_stop"})
