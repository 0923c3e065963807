"""Log output: plain text lines or one JSON object per line (``RELAYGATE_LOG_FORMAT``), both
redacted, and the per-request record (``RELAYGATE_REQUEST_LOG``).

Why JSON as an option: log shippers (Loki, Elasticsearch, CloudWatch) index fields without
a parsing rule per message. Structured values travel on the record as ``extra={"fields":
{...}}``: the text formatter shows them as ``key=value`` after the message, the JSON
formatter as top-level keys. The whole formatted line goes through ``redact``: a key that
slipped into a message or a traceback is masked in either format (docs/security.md), and
the mask keeps a JSON string valid.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson

from relaygate.redact import RedactingFormatter, redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"
FIELDS = "fields"  # the LogRecord attribute structured values travel in
REQUEST_LOGGER = "relaygate.request"


class TextFormatter(RedactingFormatter):
    """One human line: the classic format, then ``key=value`` for each structured field."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields: dict[str, Any] | None = getattr(record, FIELDS, None)
        if not fields:
            return line
        pairs = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
        return redact(f"{line} {pairs}")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, pid, message, the structured fields,
    and the traceback (as ``exc``) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        fields: dict[str, Any] | None = getattr(record, FIELDS, None)
        if fields:
            entry.update(fields)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exc"] = record.exc_text
        return redact(orjson.dumps(entry, default=str).decode())


def _iso(created: float) -> str:
    """UTC, millisecond precision, ``Z``: sortable as text and parsed by every shipper."""
    whole = int(created)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return f"{stamp}.{int((created - whole) * 1000):03d}Z"


def formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def setup_logging(level: str, log_format: str = "text") -> None:
    """Every record of every logger goes through one handler whose formatter redacts
    credentials; aiohttp's access log is off (the request record below replaces it)."""
    logging.basicConfig(level=getattr(logging, level.upper()))
    chosen = formatter(log_format)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(chosen)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


request_log = logging.getLogger(REQUEST_LOGGER)


def log_request(
    rid: str,
    route: str,
    status: int,
    latency_s: float,
    *,
    token_id: int | None,
    model: str | None,
    channel_id: int | None,
    overhead_ms: float | None,
) -> None:
    """The one record of a relay request: who (token id, never the key), what (model,
    channel), how it ended (status) and how long it took (latency; overhead = time spent
    in relaygate rather than waiting for the upstream)."""
    fields = {
        "request_id": rid,
        "route": route,
        "status": status,
        "token_id": token_id,
        "model": model,
        "channel_id": channel_id,
        "latency_ms": round(latency_s * 1000, 3),
        "overhead_ms": None if overhead_ms is None else round(overhead_ms, 3),
    }
    request_log.info("request", extra={FIELDS: fields})
