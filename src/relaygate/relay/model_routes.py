"""The model catalogue as each SDK reads it: OpenAI's ``GET /v1/models`` and
``/v1/models/{id}``, Gemini's ``GET /v1beta/models`` and ``/v1beta/models/{model}``.

google-genai calls ``GET /v1/models`` (its default ``api_version`` is ``v1``) with an
``x-goog-api-key`` header or a ``?key=``: such a caller gets Gemini's shape
(``{"models": [{"name": "models/..."}]}``), a Bearer caller OpenAI's (docs/compat-relay.md).
A model appears only if the token may call it and some channel of its group serves it.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from relaygate.appkeys import RUNTIME
from relaygate.relay import dialects
from relaygate.relay.errors import RelayError
from relaygate.relay.routes import list_models
from relaygate.relay.scope import usable_token

JSON = "application/json"
GEMINI_METHODS = ("generateContent", "streamGenerateContent", "countTokens")


def is_gemini_caller(request: web.Request) -> bool:
    """The request authenticates the way Google's SDKs do (no Bearer header)."""
    if request.headers.get("Authorization"):
        return False
    return bool(request.headers.get("x-goog-api-key") or request.query.get("key"))


async def usable_models(request: web.Request) -> frozenset[str]:
    """The models the caller's token may call and some channel serves (RelayError else)."""
    rt = request.app[RUNTIME]
    meta = await usable_token(request, rt)
    served = rt.catalog.channels.models_for(meta.group)
    return served if meta.models is None else served & meta.models


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(obj), content_type=JSON)


def _openai_model(model: str, created: int) -> dict[str, Any]:
    return {"id": model, "object": "model", "created": created, "owned_by": "relaygate"}


def _gemini_model(model: str) -> dict[str, Any]:
    """A Gemini ``Model`` resource: the fields google-genai reads; token limits are not
    known per channel, so they are left out rather than invented."""
    return {
        "name": f"models/{model}",
        "baseModelId": model,
        "version": "relaygate",
        "displayName": model,
        "supportedGenerationMethods": list(GEMINI_METHODS),
    }


def _model_not_found(model: str) -> RelayError:
    return RelayError(
        404, f"The model '{model}' does not exist.", "invalid_request_error", "model_not_found"
    )


async def models_list(request: web.Request) -> web.Response:
    """``GET /v1/models``: OpenAI's list, or Gemini's for a Gemini caller."""
    if is_gemini_caller(request):
        return await gemini_models_list(request)
    return await list_models(request)


async def gemini_models_list(request: web.Request) -> web.Response:
    """``GET /v1beta/models``: all usable models in one page (no ``nextPageToken``)."""
    try:
        models = await usable_models(request)
    except RelayError as err:
        err.forget_traceback()
        return err.response(dialect=dialects.GEMINI)
    return _json({"models": [_gemini_model(m) for m in sorted(models)]})


async def model_get(request: web.Request) -> web.Response:
    """``GET /v1/models/{target}`` (OpenAI's retrieve, or Gemini's get) and
    ``GET /v1beta/models/{target}``."""
    gemini = request.path.startswith("/v1beta/") or is_gemini_caller(request)
    dialect = dialects.GEMINI if gemini else dialects.OPENAI
    model = request.match_info["target"]
    if gemini and model.startswith("models/"):
        model = model[len("models/") :]
    try:
        models = await usable_models(request)
        if model not in models:
            raise _model_not_found(model)
    except RelayError as err:
        err.forget_traceback()
        return err.response(dialect=dialect)
    if gemini:
        return _json(_gemini_model(model))
    return _json(_openai_model(model, int(request.app[RUNTIME].started_at)))
