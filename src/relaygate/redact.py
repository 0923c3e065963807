"""Removing credentials from text that leaves the process: log records and upstream error
bodies passed to clients.

Two layers: the exact secrets a caller knows (a channel's key), and shapes every credential
relaygate handles takes (``sk-`` keys, ``Bearer`` values, the key headers and the ``?key=``
parameter, Google API keys). Shapes catch what nobody registered: a client's key inside
an aiohttp traceback of a malformed request, for one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "[redacted]"

# Characters a credential may contain in the places we see it (header values, JSON strings,
# bytes reprs): everything up to a quote, whitespace or separator.
_VALUE = r"[^\s\"'`,;&<>)\]}]+"
_SHAPES = re.compile(
    "|".join(
        (
            r"(?P<sk>\bsk-)[A-Za-z0-9_\-]{6,}",
            rf"(?P<bearer>(?i:\bbearer)(?:\s|\\x20|%20)+){_VALUE}",
            rf"(?P<header>(?i:\b(?:x-api-key|x-goog-api-key|api-key|authorization|proxy-authorization))"
            rf"[\"']?\s*[:=]\s*[\"']?)(?!(?i:bearer)\b){_VALUE}",
            rf"(?P<query>[?&](?:key|api_key|access_token)=){_VALUE}",
            r"(?P<google>\bAIza)[0-9A-Za-z_\-]{30,}",
        )
    )
)


def _mask(match: re.Match[str]) -> str:
    prefix = next(g for g in match.groups() if g is not None)
    return prefix + MASK


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every given secret (of 6 characters or more) and every credential-shaped
    value replaced by ``[redacted]``."""
    for secret in secrets:
        if len(secret) >= 6 and secret in text:
            text = text.replace(secret, MASK)
    return _SHAPES.sub(_mask, text)


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted record, traceback included: aiohttp's "Error handling
    request" tracebacks quote the raw request line and headers of a malformed request,
    and libraries log what they like. Installed on every handler by ``setup_logging``."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
