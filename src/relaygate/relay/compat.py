"""The relay routes current SDKs call beyond chat, completions, embeddings, images, Claude
messages and Gemini's v1beta paths (issue 12): OpenAI's Responses API, moderations, speech
and rerank, google-genai's default ``/v1/models/{model}:generateContent`` paths, and the
model catalogue routes (relaygate.relay.model_routes).

Each one is an ``Endpoint`` run by ``relay.handlers.handle``: the same token checks, one
reserve and one settle, one usage log. What differs per route is only how it is bounded
and metered, decided here (docs/compat-relay.md has the decisions).
"""

from __future__ import annotations

import functools
from typing import Any

from aiohttp import web

from relaygate.metrics import counted
from relaygate.relay import dialects, errors
from relaygate.relay.handlers import handle
from relaygate.relay.model_routes import gemini_models_list, model_get, models_list
from relaygate.relay.request import Endpoint, Metered, estimate_tokens
from relaygate.relay.transcribe import parse_form, transcription_meter

MODERATION_DEFAULT_MODEL = "omni-moderation-latest"  # OpenAI's default when none is named


def speech_meter(body: dict[str, Any]) -> Metered:
    """Speech is priced per input character, as New API does (its ratio for tts-1, 7.5,
    is $0.015 per 1k characters): prompt = characters of ``input``, no completion."""
    text = body.get("input")
    if not isinstance(text, str) or not text:
        raise errors.bad_request(
            "'input' is required and must be a non-empty string.", "invalid_input"
        )
    return len(text), 0, False


def _moderation_text(value: Any) -> int | None:
    """UTF-8 bytes of the text in a moderation ``input``: a string, a list of strings, or
    a list of multimodal parts (``{"type": "text", "text": ...}``; images cost no text)."""
    if isinstance(value, str):
        return len(value.encode())
    if not isinstance(value, list) or not value:
        return None
    total = 0
    for item in value:
        if isinstance(item, str):
            total += len(item.encode())
        elif isinstance(item, dict) and isinstance(item.get("text", ""), str):
            total += len(item.get("text", "").encode())
        else:
            return None
    return total


def moderation_meter(body: dict[str, Any]) -> Metered:
    """Moderation answers carry no usage: the input text is billed as prompt tokens (an
    estimate, ~4 bytes a token; New API counts it with a tokenizer). Its default ratio is 0
    (free), as in New API."""
    size = _moderation_text(body.get("input"))
    if size is None:
        raise errors.bad_request(
            "'input' is required: a string, or a non-empty list of strings or text parts.",
            "invalid_input",
        )
    return estimate_tokens(size), 0, True


RESPONSES = Endpoint("/v1/responses", "max_output_tokens", None, True, dialects.RESPONSES)
MODERATIONS = Endpoint(
    "/v1/moderations",
    None,
    0,
    False,
    default_model=MODERATION_DEFAULT_MODEL,
    meter=moderation_meter,
)
AUDIO_SPEECH = Endpoint("/v1/audio/speech", None, 0, False, meter=speech_meter)
AUDIO_TRANSCRIPTIONS = Endpoint(
    "/v1/audio/transcriptions", None, 0, False, meter=transcription_meter, parse=parse_form
)
# Speech to English text: the same form and the same duration billing as a transcription
# (New API relays both through one audio mode).
AUDIO_TRANSLATIONS = Endpoint(
    "/v1/audio/translations", None, 0, False, meter=transcription_meter, parse=parse_form
)
# Jina/Cohere-style rerank: the answer's usage (``total_tokens``) is billed as prompt.
RERANK = Endpoint("/v1/rerank", None, 0, False)
# google-genai's default api_version is "v1": the same Gemini generate routes under /v1/.
GEMINI_GENERATE_V1 = Endpoint(
    "/v1/models", "maxOutputTokens", None, True, dialects.GEMINI, "/v1/models/{target}"
)

ENDPOINTS = (
    RESPONSES,
    MODERATIONS,
    AUDIO_SPEECH,
    AUDIO_TRANSCRIPTIONS,
    AUDIO_TRANSLATIONS,
    RERANK,
    GEMINI_GENERATE_V1,
)


def add_compat_routes(app: web.Application) -> None:
    for ep in ENDPOINTS:
        app.router.add_post(ep.route, functools.partial(handle, ep=ep))
    app.router.add_get("/v1/models", counted("/v1/models", models_list))
    # ``.+``: model names may hold a slash (``Qwen/Qwen3-...``), and Gemini's may be given as
    # ``models/{model}``.
    app.router.add_get("/v1/models/{target:.+}", counted("/v1/models/{target}", model_get))
    app.router.add_get("/v1beta/models", counted("/v1beta/models", gemini_models_list))
    app.router.add_get("/v1beta/models/{target:.+}", counted("/v1beta/models/{target}", model_get))
