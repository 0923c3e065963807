"""Format translation between the OpenAI, Claude (Anthropic Messages) and Gemini dialects.

A request is translated only when the caller's dialect differs from the channel type's
(``plan_for`` returns None otherwise, and the request takes the untouched pass-through
path). Everything goes through the OpenAI chat format: caller -> OpenAI -> upstream for the
request, upstream -> OpenAI -> caller for the answer, so Claude <-> Gemini works too. The
usage billed is the upstream's, read on the OpenAI side of the translation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from relaygate.channels import TYPE_ANTHROPIC, TYPE_GEMINI
from relaygate.relay.dialects import CLAUDE, GEMINI, OPENAI, upstream_path
from relaygate.translate import anthropic, gemini
from relaygate.translate.common import (
    EventReader,
    Usage,
    sse_data,
    usage_chunk,
    usage_of_openai,
)
from relaygate.translate.gemini import SafetyBlock

__all__ = ["Plan", "SafetyBlock", "StreamTranslator", "plan_for", "request", "response"]

# The routes whose bodies are translated: chat completions, Messages, generateContent.
TRANSLATABLE = frozenset(("/v1/chat/completions", "/v1/messages", "/v1beta/models"))
_PATHS = {OPENAI: "/v1/chat/completions", CLAUDE: "/v1/messages"}


def channel_dialect(channel_type: int) -> str:
    if channel_type == TYPE_ANTHROPIC:
        return CLAUDE
    if channel_type == TYPE_GEMINI:
        return GEMINI
    return OPENAI


@dataclass(frozen=True, slots=True)
class Plan:
    caller: str  # the dialect the client speaks
    upstream: str  # the dialect the channel speaks


def plan_for(caller: str, path: str, channel_type: int) -> Plan | None:
    """None when no translation is needed (or the route has no translation)."""
    upstream = channel_dialect(channel_type)
    if upstream == caller or path not in TRANSLATABLE:
        return None
    return Plan(caller, upstream)


def _to_pivot(
    plan: Plan, body: dict[str, Any], model: str, stream: bool, max_tokens: int
) -> dict[str, Any]:
    if plan.caller == CLAUDE:
        return anthropic.request_to_openai(body, model, max_tokens)
    if plan.caller == GEMINI:
        return gemini.request_to_openai(body, model, stream, max_tokens)
    pivot = dict(body)
    pivot["model"] = model
    return pivot


def request(
    plan: Plan, body: dict[str, Any], model: str, stream: bool, max_tokens: int
) -> tuple[str, bytes]:
    """(upstream path, body bytes) of the translated request; ``model`` is the upstream's
    (after model_mapping), ``max_tokens`` the reserved bound when the client gave none."""
    pivot = _to_pivot(plan, body, model, stream, max_tokens)
    if plan.upstream == CLAUDE:
        out = anthropic.request_from_openai(pivot, model, max_tokens)
    elif plan.upstream == GEMINI:
        out = gemini.request_from_openai(pivot, max_tokens)
        return upstream_path(GEMINI, "", model, stream), orjson.dumps(out)
    else:
        out = pivot
        if stream:
            out["stream"] = True
            out["stream_options"] = {"include_usage": True}
        given = out.get("max_completion_tokens", out.get("max_tokens"))
        if not isinstance(given, int) and max_tokens:
            out["max_tokens"] = max_tokens
    return _PATHS[plan.upstream], orjson.dumps(out)


def response(plan: Plan, data: bytes, model: str) -> tuple[bytes, Usage | None]:
    """A whole upstream answer in the caller's dialect, and the upstream's usage. Raises
    SafetyBlock (a blocked Gemini prompt) or ValueError (not an answer of its dialect)."""
    obj = orjson.loads(data)
    if not isinstance(obj, dict):
        raise ValueError("not a JSON object")
    if plan.upstream == CLAUDE:
        pivot = anthropic.response_to_openai(obj)
    elif plan.upstream == GEMINI:
        pivot = gemini.response_to_openai(obj, model)
    else:
        pivot = obj
    usage = usage_of_openai(pivot.get("usage"))
    if plan.caller == CLAUDE:
        out = anthropic.response_from_openai(pivot)
    elif plan.caller == GEMINI:
        out = gemini.response_from_openai(pivot)
    else:
        out = pivot
    return orjson.dumps(out), usage


class StreamTranslator:
    """Upstream stream bytes -> the caller's stream bytes, with the usage kept.

    ``done`` says the upstream ended its answer (its end event); ``end()`` then closes the
    caller's stream (usage chunk when asked for, ``[DONE]``, ``message_stop``)."""

    def __init__(self, plan: Plan, model: str, include_usage: bool) -> None:
        self.plan = plan
        self.model = model
        self.include_usage = include_usage
        self.usage: Usage | None = None
        self.content_events = 0
        self.text_bytes = 0
        self._reader = EventReader()
        self._claude_in = anthropic.StreamToOpenAI() if plan.upstream == CLAUDE else None
        self._gemini_in = gemini.StreamToOpenAI(model) if plan.upstream == GEMINI else None
        self._claude_out = anthropic.StreamFromOpenAI(model) if plan.caller == CLAUDE else None
        self._gemini_out = gemini.StreamFromOpenAI(model) if plan.caller == GEMINI else None
        self._openai_done = False
        self._rid = ""

    @property
    def done(self) -> bool:
        if self._claude_in is not None:
            return self._claude_in.done
        if self._gemini_in is not None:
            return self._gemini_in.done
        return self._openai_done or self._reader.done

    def _pivot(self, event: Any) -> list[dict[str, Any]]:
        if not isinstance(event, dict):
            return []
        if self._claude_in is not None:
            chunks = self._claude_in.feed(event)
            self.usage = self._claude_in.usage or self.usage
            return chunks
        if self._gemini_in is not None:
            chunks = self._gemini_in.feed(event)
            self.usage = self._gemini_in.usage or self.usage
            return chunks
        usage = usage_of_openai(event.get("usage"))
        if usage is not None:
            self.usage = usage
        self._rid = self._rid or str(event.get("id", ""))
        choices = event.get("choices")
        if isinstance(choices, list) and any(
            isinstance(c, dict) and c.get("finish_reason") for c in choices
        ):
            self._openai_done = True  # the answer ended ([DONE] may follow, or not)
        if choices == []:
            return []  # the usage-only chunk: sent again, from the kept usage, at the end
        return [{**event, "usage": None} if "usage" in event else event]

    def _emit(self, chunk: dict[str, Any]) -> bytes:
        if self._claude_out is not None:
            return self._claude_out.feed(chunk)
        if self._gemini_out is not None:
            return self._gemini_out.feed(chunk)
        if chunk.get("usage") is None:
            chunk.pop("usage", None)
        return sse_data(chunk)

    def feed(self, data: bytes) -> bytes:
        out = b""
        for event in self._reader.feed(data):
            for chunk in self._pivot(event):
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    if delta.get("content") or delta.get("tool_calls"):
                        self.content_events += 1
                        self.text_bytes += len(orjson.dumps(delta)) - 2
                out += self._emit(chunk)
        return out

    def end(self) -> bytes:
        """The caller's stream end, after the upstream ended its answer."""
        out = b""
        usage = self.usage
        if usage is not None and (self.plan.caller != OPENAI or self.include_usage):
            out += self._emit(usage_chunk(self._rid, self.model, usage))
        if self._claude_out is not None:
            return out + self._claude_out.end()
        if self._gemini_out is not None:
            return out + self._gemini_out.end()
        return out + b"data: [DONE]\n\n"
