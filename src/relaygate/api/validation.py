"""Input checking for the management API.

Every body field and query parameter goes through one of these helpers, which either return
a value of the promised type within its bounds or raise ``ApiFail`` with a message naming
the field. Malformed input can therefore never reach SQL or the ledger, and never turns
into a 500. Bounds follow New API where it has them (page size 100, name 50 bytes).
"""

from __future__ import annotations

import math
import re
from typing import Any, Final

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from relaygate.api.envelope import ApiFail

MISSING: Final = object()
MAX_INT64 = 2**63 - 1
MAX_ID = 2**62  # ids are BIGSERIAL; anything above is certainly unknown
MAX_BODY = 1 << 20
DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
MAX_PAGE = 1_000_000
MAX_SEARCH = 100  # characters of a search keyword


async def read_body(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a clear refusal."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiFail("Request body too large")
    try:
        raw = await request.read()
    except RequestPayloadError:
        raise ApiFail("Invalid parameters: the body does not match its Content-Encoding") from None
    if len(raw) > MAX_BODY:
        raise ApiFail("Request body too large")
    if not raw.strip():
        raise ApiFail("Invalid parameters: the request body is empty; send a JSON object")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiFail(f"Invalid parameters: the request body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise ApiFail("Invalid parameters: the request body must be a JSON object")
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def as_int(value: Any, name: str, lo: int = -MAX_INT64, hi: int = MAX_INT64) -> int:
    """An integer (a float with no fraction is accepted, as JSON writers often emit 5.0)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not _is_int(value):
        raise ApiFail(f"{name} must be an integer")
    if not lo <= value <= hi:
        raise ApiFail(f"{name} must be between {lo} and {hi}")
    return int(value)


def as_number(value: Any, name: str, lo: float, hi: float) -> float:
    if not (_is_int(value) or isinstance(value, float)) or not math.isfinite(value):
        raise ApiFail(f"{name} must be a number")
    if not lo <= value <= hi:
        raise ApiFail(f"{name} must be between {lo:g} and {hi:g}")
    return float(value)


def as_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ApiFail(f"{name} must be true or false")
    return value


CONTROL = frozenset(chr(c) for c in range(32)) | {"\x7f"}
LINE_BREAKS = frozenset("\n\r\t")


def as_str(
    value: Any, name: str, max_len: int, *, max_bytes: int | None = None, lines: bool = False
) -> str:
    """A string within bounds. Control characters are refused (they are never meant in a
    name, and break logs and terminals); ``lines`` admits line breaks and tabs."""
    if not isinstance(value, str):
        raise ApiFail(f"{name} must be a string")
    if len(value) > max_len:
        raise ApiFail(f"{name} is too long (at most {max_len} characters)")
    if max_bytes is not None and len(value.encode()) > max_bytes:
        raise ApiFail(f"{name} is too long (at most {max_bytes} bytes)")
    check_text(value, name, lines)
    return value


def check_text(value: str, name: str, lines: bool = False) -> None:
    bad = CONTROL - LINE_BREAKS if lines else CONTROL
    if not bad.isdisjoint(value):
        raise ApiFail(f"{name} must not contain control characters")
    if any("\ud800" <= c <= "\udfff" for c in value):  # cannot be stored as UTF-8
        raise ApiFail(f"{name} must be valid UTF-8 text")


def as_str_list(value: Any, name: str, max_items: int = 1000, max_len: int = 255) -> list[str]:
    """A list of strings, or one string split on commas (New API stores lists comma-joined)."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        raise ApiFail(f"{name} must be an array of strings or a comma-separated string")
    if len(value) > max_items:
        raise ApiFail(f"{name} has too many entries (at most {max_items})")
    out = []
    for item in value:
        if not isinstance(item, str):
            raise ApiFail(f"{name} must contain only strings")
        if len(item.encode()) > max_len:
            raise ApiFail(f"{name}: entry too long (at most {max_len} bytes): {item[:40]!r}")
        as_str(item, name, max_len)
        out.append(item)
    return out


def as_text_lines(value: Any, name: str, max_len: int = 10_000) -> str:
    """Newline/comma lists such as ``allow_ips``: a string, an array of strings, or null."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(as_str_list(value, name, max_len=100))
    return as_str(value, name, max_len, lines=True)


def get_id(raw: str, what: str = "ID") -> int:
    """A path id. Non-numeric and out-of-range ids get New API's plain refusal."""
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise ApiFail(f"Invalid {what}")
    value = int(raw)
    if not 0 < value < MAX_ID:
        raise ApiFail(f"Invalid {what}")
    return value


def body_id(body: dict[str, Any], name: str = "id") -> int:
    if name not in body:
        raise ApiFail(f"Invalid parameters: {name} is required")
    return as_int(body[name], name, 1, MAX_ID)


_DECIMAL = re.compile(r"-?[0-9]+")


def is_decimal(text: str) -> bool:
    """An ASCII integer, at most one leading minus: what ``int()`` takes. (``str.isdigit``
    is also true of "²", and ``lstrip("-")`` lets "--1" through: both made int() raise.)"""
    return _DECIMAL.fullmatch(text) is not None


def query_int(
    request: web.Request, name: str, default: int | None, lo: int = 0, hi: int = MAX_INT64
) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw.strip() == "":
        return default
    raw = raw.strip()
    if not is_decimal(raw) or len(raw) > 20:
        raise ApiFail(f"{name} must be an integer")
    value = int(raw)
    if not lo <= value <= hi:
        raise ApiFail(f"{name} must be between {lo} and {hi}")
    return value


def query_str(request: web.Request, name: str, max_len: int = MAX_SEARCH) -> str:
    value = request.query.get(name, "")
    if len(value) > max_len:
        raise ApiFail(f"{name} is too long (at most {max_len} characters)")
    check_text(value, name)
    return value


def _lenient_int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    if not is_decimal(raw) or len(raw) > 18:
        raise ApiFail(f"{name} must be an integer")
    return int(raw)


def page_query(request: web.Request) -> tuple[int, int]:
    """(page, page_size) as New API's GetPageQuery: ``p`` 1-based (<1 -> 1), ``page_size``
    with fallbacks ``ps`` then ``size``, default 10, capped at 100."""
    page = _lenient_int(request, "p") or 1
    page = max(1, page)
    if page > MAX_PAGE:
        raise ApiFail(f"p must be at most {MAX_PAGE}")
    size = 0
    for name in ("page_size", "ps", "size"):
        value = _lenient_int(request, name)
        if value:
            size = value
            break
    if size <= 0:
        size = DEFAULT_PAGE_SIZE
    return page, min(size, MAX_PAGE_SIZE)


def like_pattern(value: str, name: str) -> tuple[str, bool]:
    """New API's search rule: exact unless the value holds ``%`` (then SQL LIKE, at most two
    ``%``, never ``%%``, at least two other characters). Returns (pattern, is_like);
    ``_`` and ``!`` are escaped with ``!`` so only ``%`` is a wildcard."""
    if "%" not in value:
        return value, False
    if "%%" in value:
        raise ApiFail(f"{name}: consecutive % wildcards are not allowed")
    if value.count("%") > 2:
        raise ApiFail(f"{name}: at most 2 % wildcards are allowed")
    if len(value.replace("%", "")) < 2:
        raise ApiFail(f"{name}: a fuzzy search needs at least 2 characters besides %")
    escaped = value.replace("!", "!!").replace("_", "!_")
    return escaped, True


def prefix_pattern(value: str) -> str:
    """``value%`` with LIKE metacharacters escaped (``!`` is the escape character)."""
    return value.replace("!", "!!").replace("_", "!_").replace("%", "!%") + "%"
