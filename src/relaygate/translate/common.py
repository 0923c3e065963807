"""What every translation shares: usage counts, OpenAI chunk builders, SSE framing and
parsing, data URLs and tool-argument JSON."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

MAX_EVENT = 8 << 20  # an unterminated upstream event beyond this is dropped, not held


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as billed: prompt includes cached and cache-written tokens."""

    prompt: int
    completion: int
    cached: int = 0


def openai_usage(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.prompt + usage.completion,
    }
    if usage.cached:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached}
    return out


def usage_of_openai(usage: Any) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    return Usage(prompt, completion, int(cached))


def as_text(content: Any) -> str:
    """The text of a message content: a string, or the text parts of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return "" if content is None else str(content)


def openai_function(decl: dict[str, Any], schema_key: str) -> dict[str, Any]:
    """A Claude tool or a Gemini function declaration as an OpenAI function tool (a missing
    schema is an empty object schema, which every upstream accepts)."""
    return {
        "type": "function",
        "function": {
            "name": decl.get("name", ""),
            "description": decl.get("description", ""),
            "parameters": decl.get(schema_key) or {"type": "object"},
        },
    }


def openai_max_tokens(given: Any, default: int) -> int:
    """The caller's positive output limit, else the relay's default (never unbounded: the
    reserve needs a bound)."""
    return given if isinstance(given, int) and given > 0 else default


def stream_with_usage(out: dict[str, Any]) -> None:
    """Ask the OpenAI-shaped upstream for the usage chunk the caller's dialect bills from."""
    out["stream"] = True
    out["stream_options"] = {"include_usage": True}


def json_args(arguments: Any) -> Any:
    """Tool-call arguments (a JSON text in OpenAI) as an object; a broken text is kept."""
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"value": value}


def append_turn(
    turns: list[dict[str, Any]], role: str, field: str, items: list[dict[str, Any]]
) -> None:
    """Consecutive turns of one role merged (their ``field`` lists joined): Anthropic's
    Messages and Gemini's contents both alternate user and assistant turns."""
    if not items:
        return
    if turns and turns[-1]["role"] == role:
        turns[-1][field].extend(items)
    else:
        turns.append({"role": role, field: items})


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(mime type, base64 data) of a ``data:`` URL, or None for another URL."""
    if not url.startswith("data:"):
        return None
    head, _, data = url[5:].partition(",")
    mime = head.split(";", 1)[0] or "application/octet-stream"
    if ";base64" not in head:
        data = base64.b64encode(data.encode()).decode()
    else:
        try:
            base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return None
    return mime, data


def data_url(mime: str, data: str) -> str:
    return f"data:{mime};base64,{data}"


def chunk(rid: str, model: str, delta: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": index, "delta": delta, "finish_reason": None}],
    }


def finish_chunk(rid: str, model: str, reason: str, index: int = 0) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": index, "delta": {}, "finish_reason": reason}],
    }


def usage_chunk(rid: str, model: str, usage: Usage) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [],
        "usage": openai_usage(usage),
    }


def sse_event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def sse_data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


class EventReader:
    """Upstream SSE bytes -> the JSON objects of their ``data:`` lines (``[DONE]`` sets
    ``done``). Events are cut at blank lines, LF or CRLF."""

    def __init__(self) -> None:
        self._buf = b""
        self.done = False

    def feed(self, data: bytes) -> Iterator[Any]:
        buf = (self._buf + data).replace(b"\r\n", b"\n") if self._buf or b"\r" in data else data
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf if len(buf) <= MAX_EVENT else b""
            return
        ready, self._buf = buf[:end], buf[end + 2 :]
        for event in ready.split(b"\n\n"):
            payload = b"".join(
                line[5:].strip() for line in event.split(b"\n") if line.startswith(b"data:")
            )
            if not payload:
                continue
            if payload == b"[DONE]":
                self.done = True
                continue
            try:
                yield orjson.loads(payload)
            except orjson.JSONDecodeError:
                continue

    def flush(self) -> Iterator[Any]:
        rest, self._buf = self._buf, b""
        if rest.strip():
            yield from self.feed(rest + b"\n\n")
