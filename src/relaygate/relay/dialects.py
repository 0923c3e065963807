"""What differs between the OpenAI, Claude (Anthropic Messages) and Gemini wire formats.

relaygate passes requests through without converting formats: a Claude request goes to the
channel serving its model as a Claude request, a Gemini one as a Gemini one. This module
knows, per dialect, where the output bound lives in the body, where usage is reported (in a
body and in a stream), how to authenticate upstream and what an error body looks like.
"""

from __future__ import annotations

from typing import Any

import orjson

from relaygate.channels import TYPE_ANTHROPIC, TYPE_GEMINI, Channel

OPENAI = "openai"
CLAUDE = "claude"
GEMINI = "gemini"
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


def read_usage(obj: Any) -> tuple[int, int] | None:
    """(prompt, completion) from a response body or a stream event, in any dialect."""
    if not isinstance(obj, dict):
        return None
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        message = obj.get("message")  # Claude's message_start event
        usage = message.get("usage") if isinstance(message, dict) else None
    if isinstance(usage, dict):
        prompt = usage.get("prompt_tokens")
        if prompt is None and "input_tokens" in usage:
            prompt = sum(
                int(usage.get(k) or 0)
                for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            )
        completion = usage.get("completion_tokens", usage.get("output_tokens", 0))
        if isinstance(prompt, int) and isinstance(completion, int | None):
            return max(prompt, 0), max(completion or 0, 0)
        if prompt is None and isinstance(completion, int):  # Claude message_delta: output only
            return -1, max(completion, 0)
        return None
    meta = obj.get("usageMetadata")
    if isinstance(meta, dict):
        prompt = meta.get("promptTokenCount", 0)
        completion = int(meta.get("candidatesTokenCount") or 0) + int(
            meta.get("thoughtsTokenCount") or 0
        )
        if isinstance(prompt, int):
            return max(prompt, 0), completion
    return None


def upstream_path(dialect: str, path: str, model: str, stream: bool) -> str:
    if dialect == GEMINI:
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        return f"/v1beta/models/{model}:{action}"
    return path


def upstream_headers(channel: Channel, dialect: str, client_headers: Any) -> dict[str, str]:
    """Headers of a call to ``channel``; the caller may not modify the returned dict (the
    OpenAI-to-OpenAI one is built once per channel)."""
    if dialect == OPENAI and channel.type not in (TYPE_ANTHROPIC, TYPE_GEMINI):
        return channel.bearer_headers
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
