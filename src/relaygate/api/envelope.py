"""New API's response envelope: ``{"success", "message", "data"}``.

Business errors (validation, not found, too low a role) are HTTP 200 with
``success: false``; only authentication failures use 401 (NEWAPI.md §0). Handlers raise
``ApiFail`` rather than building error responses, so every refusal has the same shape.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

JSON = "application/json"


class ApiFail(Exception):
    """A refusal shown to the caller as ``{"success": false, "message": ...}``."""

    def __init__(self, message: str, status: int = 200) -> None:
        super().__init__(message)
        self.message = message
        self.status = status

    def response(self) -> web.Response:
        return fail(self.message, self.status)


def _dumps(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)


def ok(data: Any = None, *, message: str = "", **extra: Any) -> web.Response:
    """Success. ``data=None`` omits the field, as New API does for some writes."""
    payload: dict[str, Any] = {"success": True, "message": message}
    if data is not None:
        payload["data"] = data
    payload.update(extra)
    return web.Response(body=_dumps(payload), content_type=JSON)


def fail(message: str, status: int = 200, **extra: Any) -> web.Response:
    payload: dict[str, Any] = {"success": False, "message": message}
    payload.update(extra)
    return web.Response(status=status, body=_dumps(payload), content_type=JSON)


def raw_json(payload: Any, status: int = 200) -> web.Response:
    """A body outside the envelope (OpenAI billing shapes, the OpenAPI document)."""
    return web.Response(status=status, body=_dumps(payload), content_type=JSON)


def page(page_no: int, page_size: int, total: int, items: list[Any], **extra: Any) -> Any:
    """New API's PageInfo object."""
    return {"page": page_no, "page_size": page_size, "total": total, "items": items, **extra}
