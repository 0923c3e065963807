"""OpenAI chat completions <-> Gemini generateContent / streamGenerateContent.

Same shape as relaygate.translate.anthropic: requests both ways, whole answers both ways,
stream decoders (Gemini chunks -> OpenAI chunks, usage kept) and encoders (OpenAI chunks ->
Gemini chunks). Gemini has no tool-call ids: the OpenAI side gets ``call_<n>`` ids, and a
tool result finds its function name through the assistant turn that called it.
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
    sse_data,
    stream_with_usage,
)

FINISH_TO_OPENAI = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}
FINISH_FROM_OPENAI = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "content_filter": "SAFETY",
    "tool_calls": "STOP",
}
_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}


class SafetyBlock(Exception):
    """Gemini refused the prompt (``promptFeedback.blockReason``): an error, not an answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"The prompt was blocked by the upstream's safety filters ({reason}).")
        self.reason = reason


# --------------------------------------------------------------------------- requests


def _parts(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        if not isinstance(part, dict):
            continue
        if part.get("type") == "text":
            parts.append({"text": str(part.get("text", ""))})
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else image
            if not isinstance(url, str):
                continue
            parsed = parse_data_url(url)
            if parsed is not None:
                parts.append({"inlineData": {"mimeType": parsed[0], "data": parsed[1]}})
            else:
                parts.append({"fileData": {"fileUri": url, "mimeType": "image/*"}})
    return parts


def request_from_openai(body: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """A chat completion request as a generateContent body (the model is in the path)."""
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # tool call id -> function name
    for message in body.get("messages") or []:
        if not isinstance(message, dict):
            continue
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(as_text(message.get("content")))
        elif role == "assistant":
            parts = _parts(message.get("content"))
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                names[call.get("id", "")] = fn.get("name", "")
                parts.append(
                    {
                        "functionCall": {
                            "name": fn.get("name", ""),
                            "args": json_args(fn.get("arguments")),
                        }
                    }
                )
            append_turn(contents, "model", "parts", parts)
        elif role == "tool":
            name = names.get(message.get("tool_call_id", ""), message.get("name") or "")
            response = {"name": name, "response": {"content": as_text(message.get("content"))}}
            append_turn(contents, "user", "parts", [{"functionResponse": response}])
        else:
            append_turn(contents, "user", "parts", _parts(message.get("content")))
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    config: dict[str, Any] = {}
    given = body.get("max_completion_tokens", body.get("max_tokens"))
    config["maxOutputTokens"] = given if isinstance(given, int) and given > 0 else max_tokens
    for src, dst in (("temperature", "temperature"), ("top_p", "topP"), ("n", "candidateCount")):
        if body.get(src) is not None:
            config[dst] = body[src]
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    out["generationConfig"] = config
    declarations = [
        {
            "name": t["function"].get("name", ""),
            "description": t["function"].get("description", ""),
            "parameters": t["function"].get("parameters") or {"type": "object", "properties": {}},
        }
        for t in body.get("tools") or []
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    if declarations:
        out["tools"] = [{"functionDeclarations": declarations}]
        choice = body.get("tool_choice")
        if isinstance(choice, str) and choice in _MODES:
            out["toolConfig"] = {"functionCallingConfig": {"mode": _MODES[choice]}}
        elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
            name = choice["function"].get("name", "")
            calling = {"mode": "ANY", "allowedFunctionNames": [name]}
            out["toolConfig"] = {"functionCallingConfig": calling}
    return out


def _content_to_openai(content: dict[str, Any], out: list[dict[str, Any]], ids: list[str]) -> None:
    role = "assistant" if content.get("role") == "model" else "user"
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for part in content.get("parts") or []:
        if not isinstance(part, dict):
            continue
        if "text" in part:
            parts.append({"type": "text", "text": str(part["text"])})
        elif "inlineData" in part:
            blob = part["inlineData"] or {}
            url = data_url(blob.get("mimeType", "image/png"), blob.get("data", ""))
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif "fileData" in part:
            url = (part["fileData"] or {}).get("fileUri", "")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        elif "functionCall" in part:
            fn = part["functionCall"] or {}
            ids.append(f"call_{len(ids)}")
            arguments = orjson.dumps(fn.get("args") or {}).decode()
            calls.append(
                {
                    "id": ids[-1],
                    "type": "function",
                    "function": {"name": fn.get("name", ""), "arguments": arguments},
                }
            )
        elif "functionResponse" in part:
            fr = part["functionResponse"] or {}
            name = fr.get("name", "")
            # the latest call of that function (Gemini pairs them by name and order)
            call_id = next((i for i, n in reversed(list(_names(out))) if n == name), name)
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": call_id,
                    "content": orjson.dumps(fr.get("response") or {}).decode(),
                }
            )
    if calls:
        text = "".join(p["text"] for p in parts if p["type"] == "text")
        out.append({"role": "assistant", "content": text or None, "tool_calls": calls})
    elif parts:
        only_text = all(p["type"] == "text" for p in parts)
        out.append(
            {"role": role, "content": "".join(p["text"] for p in parts) if only_text else parts}
        )


def _names(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [
        (c.get("id", ""), (c.get("function") or {}).get("name", ""))
        for m in messages
        for c in m.get("tool_calls") or []
    ]


def request_to_openai(
    body: dict[str, Any], model: str, stream: bool, max_tokens: int
) -> dict[str, Any]:
    """A generateContent body (model and stream from its path) as a chat completion request."""
    messages: list[dict[str, Any]] = []
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, dict):
        text = "".join(
            str(p.get("text", "")) for p in system.get("parts") or [] if isinstance(p, dict)
        )
        if text:
            messages.append({"role": "system", "content": text})
    ids: list[str] = []
    for content in body.get("contents") or []:
        if isinstance(content, dict):
            _content_to_openai(content, messages, ids)
    out: dict[str, Any] = {"model": model, "messages": messages}
    config = body.get("generationConfig") or {}
    out["max_tokens"] = openai_max_tokens(config.get("maxOutputTokens"), max_tokens)
    for src, dst in (("temperature", "temperature"), ("topP", "top_p"), ("candidateCount", "n")):
        if config.get(src) is not None:
            out[dst] = config[src]
    if config.get("stopSequences"):
        out["stop"] = config["stopSequences"]
    tools = [
        openai_function(d, "parameters")
        for t in body.get("tools") or []
        if isinstance(t, dict)
        for d in t.get("functionDeclarations") or t.get("function_declarations") or []
        if isinstance(d, dict)
    ]
    if tools:
        out["tools"] = tools
        calling = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        mode = calling.get("mode")
        allowed = calling.get("allowedFunctionNames") or []
        if mode == "ANY" and len(allowed) == 1:
            out["tool_choice"] = {"type": "function", "function": {"name": allowed[0]}}
        elif mode in ("ANY", "NONE", "AUTO"):
            out["tool_choice"] = {"ANY": "required", "NONE": "none", "AUTO": "auto"}[mode]
    if stream:
        stream_with_usage(out)
    return out


# --------------------------------------------------------------------------- whole answers


def gemini_usage(meta: Any) -> Usage | None:
    if not isinstance(meta, dict):
        return None
    completion = int(meta.get("candidatesTokenCount") or 0) + int(
        meta.get("thoughtsTokenCount") or 0
    )
    return Usage(
        int(meta.get("promptTokenCount") or 0),
        completion,
        int(meta.get("cachedContentTokenCount") or 0),
    )


def _blocked(resp: dict[str, Any]) -> None:
    feedback = resp.get("promptFeedback")
    if not resp.get("candidates") and isinstance(feedback, dict) and feedback.get("blockReason"):
        raise SafetyBlock(str(feedback["blockReason"]))


def _candidate_message(candidate: dict[str, Any], ids: list[str]) -> tuple[dict[str, Any], str]:
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if "text" in part:
            text.append(str(part["text"]))
        elif "functionCall" in part:
            fn = part["functionCall"] or {}
            ids.append(f"call_{len(ids)}")
            calls.append(
                {
                    "id": ids[-1],
                    "type": "function",
                    "function": {
                        "name": fn.get("name", ""),
                        "arguments": orjson.dumps(fn.get("args") or {}).decode(),
                    },
                }
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        message["tool_calls"] = calls
    reason = FINISH_TO_OPENAI.get(candidate.get("finishReason") or "", "stop")
    return message, "tool_calls" if calls else reason


def response_to_openai(resp: dict[str, Any], model: str) -> dict[str, Any]:
    _blocked(resp)
    ids: list[str] = []
    choices = []
    for n, candidate in enumerate(resp.get("candidates") or []):
        if isinstance(candidate, dict):
            message, reason = _candidate_message(candidate, ids)
            index = candidate.get("index", n)
            choices.append({"index": index, "message": message, "finish_reason": reason})
    out: dict[str, Any] = {
        "id": resp.get("responseId", ""),
        "object": "chat.completion",
        "created": 0,
        "model": resp.get("modelVersion") or model,
        "choices": choices,
    }
    usage = gemini_usage(resp.get("usageMetadata"))
    if usage is not None:
        out["usage"] = openai_usage(usage)
    return out


def _usage_metadata(usage: dict[str, Any]) -> dict[str, Any]:
    prompt, completion = (
        int(usage.get("prompt_tokens") or 0),
        int(usage.get("completion_tokens") or 0),
    )
    return {
        "promptTokenCount": prompt,
        "candidatesTokenCount": completion,
        "totalTokenCount": prompt + completion,
    }


def _parts_from_message(message: dict[str, Any]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    text = as_text(message.get("content"))
    if text:
        parts.append({"text": text})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        parts.append(
            {"functionCall": {"name": fn.get("name", ""), "args": json_args(fn.get("arguments"))}}
        )
    return parts


def response_from_openai(chat: dict[str, Any]) -> dict[str, Any]:
    candidates = []
    for n, choice in enumerate(chat.get("choices") or []):
        if not isinstance(choice, dict):
            continue
        candidates.append(
            {
                "index": choice.get("index", n),
                "content": {
                    "role": "model",
                    "parts": _parts_from_message(choice.get("message") or {}),
                },
                "finishReason": FINISH_FROM_OPENAI.get(
                    choice.get("finish_reason") or "stop", "STOP"
                ),
            }
        )
    out: dict[str, Any] = {"candidates": candidates, "modelVersion": chat.get("model", "")}
    if isinstance(chat.get("usage"), dict):
        out["usageMetadata"] = _usage_metadata(chat["usage"])
    return out


# --------------------------------------------------------------------------- streams


class StreamToOpenAI:
    """Gemini stream chunks -> OpenAI chunks; the latest usageMetadata (cumulative) is the
    usage. The stream is done once a candidate reports its finishReason."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = ""
        self.usage: Usage | None = None
        self.done = False
        self._started = False
        self._calls = 0

    def feed(self, resp: dict[str, Any]) -> list[dict[str, Any]]:
        _blocked(resp)
        self.id = self.id or resp.get("responseId", "")
        usage = gemini_usage(resp.get("usageMetadata"))
        if usage is not None:
            self.usage = usage
        out: list[dict[str, Any]] = []
        if not self._started:
            self._started = True
            out.append(chunk(self.id, self.model, {"role": "assistant", "content": ""}))
        for n, candidate in enumerate(resp.get("candidates") or []):
            if not isinstance(candidate, dict):
                continue
            index = candidate.get("index", n)
            for part in (candidate.get("content") or {}).get("parts") or []:
                if not isinstance(part, dict) or part.get("thought"):
                    continue
                if "text" in part:
                    out.append(chunk(self.id, self.model, {"content": str(part["text"])}, index))
                elif "functionCall" in part:
                    fn = part["functionCall"] or {}
                    call = {
                        "index": self._calls,
                        "id": f"call_{self._calls}",
                        "type": "function",
                        "function": {
                            "name": fn.get("name", ""),
                            "arguments": orjson.dumps(fn.get("args") or {}).decode(),
                        },
                    }
                    self._calls += 1
                    out.append(chunk(self.id, self.model, {"tool_calls": [call]}, index))
            finish = candidate.get("finishReason")
            if finish:
                self.done = True
                reason = "tool_calls" if self._calls else FINISH_TO_OPENAI.get(finish, "stop")
                out.append(finish_chunk(self.id, self.model, reason, index))
        return out


class StreamFromOpenAI:
    """OpenAI chunks -> Gemini stream chunks (``alt=sse``: one JSON object per event)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._args: dict[int, list[str]] = {}
        self._names: dict[int, str] = {}
        self._finish: dict[int, str] = {}

    def feed(self, obj: dict[str, Any]) -> bytes:
        candidates = []
        for choice in obj.get("choices") or []:
            index = int(choice.get("index") or 0)
            delta = choice.get("delta") or {}
            parts: list[dict[str, Any]] = []
            if delta.get("content"):
                parts.append({"text": delta["content"]})
            for call in delta.get("tool_calls") or []:
                n = int(call.get("index") or 0)
                fn = call.get("function") or {}
                if fn.get("name"):
                    self._names[n] = fn["name"]
                self._args.setdefault(n, []).append(fn.get("arguments") or "")
            candidate: dict[str, Any] = {"index": index}
            reason = choice.get("finish_reason")
            if reason:
                parts.extend(self._calls())
                candidate["finishReason"] = FINISH_FROM_OPENAI.get(reason, "STOP")
            if parts or reason:
                candidate["content"] = {"role": "model", "parts": parts}
                candidates.append(candidate)
        out: dict[str, Any] = {"modelVersion": obj.get("model") or self.model}
        if candidates:
            out["candidates"] = candidates
        if isinstance(obj.get("usage"), dict):
            out["usageMetadata"] = _usage_metadata(obj["usage"])
        if len(out) == 1:
            return b""
        return sse_data(out)

    def _calls(self) -> list[dict[str, Any]]:
        """Gemini sends a function call whole: the streamed argument pieces, joined."""
        parts = [
            {"functionCall": {"name": self._names.get(n, ""), "args": json_args("".join(args))}}
            for n, args in sorted(self._args.items())
        ]
        self._args.clear()
        return parts

    def end(self) -> bytes:
        return b""
