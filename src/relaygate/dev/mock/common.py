"""What every mock route shares: config, test hooks, error bodies, request parsing, SSE bytes.

See relaygate.dev.mock for the hooks and the token accounting rules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web


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
WORDS = ("lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit", "sed")

# Placeholders substituted per request; the timestamp one is replaced with its quotes so
# that ``created`` ends up a JSON number.
ID = "__mockid__"
ID_B = ID.encode()
TS_B = b'"__mockts__"'
TS = "__mockts__"

JSON = "application/json"
SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
DONE = b"data: [DONE]\n\n"
CACHE_MAX = 2048


# --------------------------------------------------------------------------- errors


class Style:
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
HOOK_MESSAGES = {
    429: "Rate limit reached (mock upstream fail-429 hook).",
    500: "The server had an error while processing your request (mock upstream fail-500 hook).",
}


def error(style: str, status: int, message: str, param: str | None = None) -> web.Response:
    obj: dict[str, Any]
    if style == Style.ANTHROPIC:
        obj = {"type": "error", "error": {"type": _ANTHROPIC_ERR[status], "message": message}}
    elif style == Style.GEMINI:
        obj = {"error": {"code": status, "message": message, "status": _GEMINI_ERR[status]}}
    else:
        etype, code = _OPENAI_ERR[status]
        obj = {"error": {"message": message, "type": etype, "param": param, "code": code}}
    return web.Response(status=status, body=orjson.dumps(obj), content_type=JSON)


class Reject(Exception):
    """Raised while parsing a request; turned into an error response by the handler."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True, slots=True)
class Hooks:
    fail: int | None
    no_usage: bool
    slow: bool
    drop: bool


def hooks_for(model: str) -> Hooks:
    fail = 500 if "fail-500" in model else 429 if "fail-429" in model else None
    return Hooks(fail, "no-usage" in model, "slow" in model, "drop" in model)


@dataclass(frozen=True, slots=True)
class StreamTpl:
    """A streamed answer as cached bytes: ``head`` + ``content`` events + ``tail``."""

    head: bytes
    content: tuple[bytes, ...]
    tail: bytes
    full: bytes


def stream_tpl(head: Sequence[bytes], content: Sequence[bytes], tail: Sequence[bytes]) -> StreamTpl:
    h, t = b"".join(head), b"".join(tail)
    return StreamTpl(h, tuple(content), t, h + b"".join(content) + t)


def sse_data(obj: Any) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def sse_event(name: str, obj: Any) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"


def opt_int(body: dict[str, Any], *names: str) -> int | None:
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise Reject(400, f"Invalid '{name}': expected a non-negative integer.", name)
        return value
    return None


def want_stream(body: dict[str, Any]) -> bool:
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise Reject(400, "Invalid 'stream': expected a boolean.", "stream")
    return bool(stream)


def include_usage(body: dict[str, Any]) -> bool:
    opts = body.get("stream_options")
    return isinstance(opts, dict) and opts.get("include_usage") is True


def has_bearer(request: web.Request) -> bool:
    auth = request.headers.get("Authorization", "")
    scheme, _, token = auth.partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


async def json_body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Reject(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise Reject(400, "The request body must be a JSON object.")
    return body


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise Reject(400, "you must provide a model parameter", "model")
    return model


def delay_header(request: web.Request) -> float:
    raw = request.headers.get("x-mock-delay-ms")
    if raw is None:
        return 0.0
    try:
        ms = float(raw)
    except ValueError:
        raise Reject(400, "Invalid x-mock-delay-ms header.") from None
    if not math.isfinite(ms) or ms < 0:
        raise Reject(400, "Invalid x-mock-delay-ms header.")
    return min(ms, MAX_DELAY_MS) / 1000.0
