"""What differs between the OpenAI, Claude (Anthropic Messages) and Gemini wire formats.

relaygate passes requests through without converting formats: a Claude request goes to the
channel serving its model as a Claude request, a Gemini one as a Gemini one. This module
knows, per dialect, where the output bound lives in the body, where usage is reported (in a
body and in a stream), how to authenticate upstream and what an error body looks like.
"""

from __future__ import annotations

from typing import Any

import orjson

from relaygate.channels import TYPE_ANTHROPIC, TYPE_AZURE, TYPE_GEMINI, Channel

OPENAI = "openai"
CLAUDE = "claude"
GEMINI = "gemini"
# OpenAI's Responses API (/v1/responses): OpenAI's error shape and auth, but its own output
# field, usage names (input/output_tokens) and stream events (relaygate.relay.compat).
RESPONSES = "responses"
ANTHROPIC_VERSION = "2023-06-01"

_GEMINI_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    413: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
}
_CLAUDE_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
}


def error_body(dialect: str, status: int, message: str, type_: str, code: str) -> bytes:
    if dialect == CLAUDE:
        kind = _CLAUDE_TYPES.get(status, "api_error")
        return orjson.dumps(
            {"type": "error", "error": {"type": kind, "message": message, "code": code}}
        )
    if dialect == GEMINI:
        state = _GEMINI_STATUS.get(status, "INTERNAL")
        return orjson.dumps({"error": {"code": status, "message": message, "status": state}})
    return orjson.dumps({"error": {"message": message, "type": type_, "code": code}})


def max_output(body: dict[str, Any], dialect: str, field: str) -> tuple[Any, str]:
    """(client's output bound or None, the field holding it)."""
    if dialect == GEMINI:
        cfg = body.get("generationConfig")
        return (cfg.get("maxOutputTokens") if isinstance(cfg, dict) else None), "maxOutputTokens"
    if dialect == OPENAI and "max_completion_tokens" in body:
        return body.get("max_completion_tokens"), "max_completion_tokens"
    return body.get(field), field


def set_max_output(body: dict[str, Any], dialect: str, field: str, tokens: int) -> None:
    if dialect == GEMINI:
        cfg = body.get("generationConfig")
        if not isinstance(cfg, dict):
            cfg = body["generationConfig"] = {}
        cfg["maxOutputTokens"] = tokens
    else:
        body[field] = tokens


MAX_REPORTED_TOKENS = 10**12  # more than any provider can report; beyond it, a broken upstream


def _tokens(value: Any) -> int | None:
    """A token count an upstream reported, or None when it is not one (a string, a float, a
    bool, negative, absurdly large): such usage is not believed, the answer is estimated."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_REPORTED_TOKENS:
        return value
    return None


def _sum_tokens(usage: dict[str, Any], names: tuple[str, ...]) -> int | None:
    total = 0
    for name in names:
        value = usage.get(name)
        if value is None:
            continue
        count = _tokens(value)
        if count is None:
            return None
        total += count
    return total


def _only_total(usage: dict[str, Any]) -> bool:
    """A usage object with a total and no split (Jina/Cohere-style rerank answers)."""
    return (
        "total_tokens" in usage
        and "completion_tokens" not in usage
        and "output_tokens" not in usage
    )


_CLAUDE_INPUT = ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")


def read_usage(obj: Any) -> tuple[int, int] | None:
    """(prompt, completion) from a response body or a stream event, in any dialect; prompt
    -1 = the event reports the output count only (Claude's message_delta). None when there
    is no usage or it is malformed (the caller then bills an estimate)."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        # Claude's message_start event nests it in "message", a Responses stream's
        # response.completed event in "response".
        inner = obj.get("message", obj.get("response"))
        usage = inner.get("usage") if isinstance(inner, dict) else None
    if isinstance(usage, dict):
        raw_prompt = usage.get("prompt_tokens")
        if raw_prompt is None and "input_tokens" not in usage and _only_total(usage):
            total = _tokens(usage["total_tokens"])  # rerank: one count, all of it input
            return None if total is None else (total, 0)
        if raw_prompt is None and "input_tokens" in usage:
            prompt = _sum_tokens(usage, _CLAUDE_INPUT)
        elif raw_prompt is None:
            prompt = -1
        else:
            prompt = _tokens(raw_prompt)
        raw_completion = usage.get("completion_tokens", usage.get("output_tokens"))
        completion = 0 if raw_completion is None else _tokens(raw_completion)
        if prompt is None or completion is None or (prompt == -1 and raw_completion is None):
            return None
        return prompt, completion
    meta = obj.get("usageMetadata")
    if isinstance(meta, dict):
        prompt = _tokens(meta.get("promptTokenCount", 0))
        completion = _sum_tokens(meta, ("candidatesTokenCount", "thoughtsTokenCount"))
        if prompt is None or completion is None:
            return None
        return prompt, completion
    return None


_TEXT_KEYS = frozenset(
    ("content", "text", "arguments", "partial_json", "reasoning_content", "thinking", "refusal")
)


def text_bytes(obj: Any) -> int:
    """UTF-8 bytes of the answer's text in a response body or stream event, any dialect
    (message/delta content, Claude text and tool input, Gemini parts, tool arguments): what
    an estimate of the completion is made from when the upstream reports no usage, the same
    for a stream and for a body."""
    if isinstance(obj, dict):
        total = 0
        for key, value in obj.items():
            if isinstance(value, str):
                if key in _TEXT_KEYS:
                    total += len(value.encode())
            elif isinstance(value, dict | list):
                total += text_bytes(value)
        return total
    if isinstance(obj, list):
        return sum(text_bytes(v) for v in obj)
    return 0


def upstream_path(dialect: str, path: str, model: str, stream: bool) -> str:
    if dialect == GEMINI:
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/v1beta/models/{model}:{action}"
    return path


def upstream_headers(channel: Channel, dialect: str, client_headers: Any) -> dict[str, str]:
    """Headers of a call to ``channel``; the caller may not modify the returned dict (the
    OpenAI-to-OpenAI one is built once per channel)."""
    if channel.type == TYPE_AZURE or (
        dialect in (OPENAI, RESPONSES) and channel.type not in (TYPE_ANTHROPIC, TYPE_GEMINI)
    ):
        return channel.bearer_headers  # an Azure channel's carry its api-key header
    headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
    if channel.type == TYPE_ANTHROPIC or (dialect == CLAUDE and channel.type not in (TYPE_GEMINI,)):
        headers["x-api-key"] = channel.key
        headers["anthropic-version"] = client_headers.get("anthropic-version", ANTHROPIC_VERSION)
        beta = client_headers.get("anthropic-beta")
        if beta:
            headers["anthropic-beta"] = beta
        if channel.type != TYPE_ANTHROPIC:
            headers["Authorization"] = f"Bearer {channel.key}"
    elif channel.type == TYPE_GEMINI or dialect == GEMINI:
        headers["x-goog-api-key"] = channel.key
    else:
        headers["Authorization"] = f"Bearer {channel.key}"
    return headers
