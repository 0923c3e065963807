"""Removing credentials from text that leaves the process: log records and upstream error
bodies passed to clients.

Two layers, applied in this order:

* The exact secrets a caller knows (a channel's key, red-team #7: an upstream that echoes the
  key it was given must not hand it to an end user): the whole value, any run of 8 or more of
  its first or last characters (truncated echoes), the value without an ``sk-`` prefix, and
  masked forms that show its head and tail around ``*``/``...``/``…`` (``sk-abc...wxyz``,
  ``sk-proj-****wxyz``). Secrets shorter than 8 characters are replaced only as a whole
  word, shorter than 4 not at all: they would match ordinary text.
* The shapes every credential relaygate handles takes, whoever registered it: ``sk-`` keys
  (masked or not), ``Bearer`` and base64 ``Basic`` values, the key headers, the ``?key=``
  parameter, Google API keys. Shapes catch a client's key inside an aiohttp traceback of a
  malformed request, for one (red-team #10).

``redact`` is pure, idempotent and never raises. ``MASK`` contains no quote or backslash,
so a JSON string stays a valid JSON string.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

MASK = "[redacted]"
MIN_RUN = 8  # a known secret's first/last characters this long are redacted anywhere
MIN_WORD = 4  # shorter known secrets are redacted only as a whole word, down to this length
MIN_MASKED_SIDE = 3  # masked forms: characters of the secret shown on each side of the mask
MIN_MASKED_SHOWN = 7  # ... and on both sides together

_WORD = "A-Za-z0-9_\\-"
_MASKED = re.compile(rf"(?<![{_WORD}])([{_WORD}]+)(\*+|\.{{2,}}|…)([{_WORD}]+)")

# Characters a credential may contain in the places we see it (header values, JSON strings,
# bytes reprs): everything up to a quote, whitespace, bracket or separator (so never across
# our own mask: redacting twice changes nothing).
_CHAR = r"[^\s\"'`,;&<>()\[\]{}]"
_SK_TAIL = r"[A-Za-z0-9_\-*]"
_SHAPES = re.compile(
    "|".join(
        (
            # sk-… keys of OpenAI, Anthropic and most OpenAI-compatible providers, and the
            # masked forms providers print (sk-proj-****abcd, sk-abc...xyz).
            rf"(?P<sk>(?<![A-Za-z0-9])sk-)(?:{_SK_TAIL}{{6,}}(?:(?:\.{{2,}}|…){_SK_TAIL}+)?"
            rf"|{_SK_TAIL}{{2,}}(?:\.{{2,}}|…){_SK_TAIL}{{2,}})",
            rf"(?P<bearer>(?i:\bbearer)(?:\s|\\x20|%20)++){_CHAR}{{8,}}",
            # Basic credentials are base64: a digit, +/= or a lower-upper change tells them
            # from prose ("Basic authentication is not supported").
            r"(?P<basic>(?i:\bbasic)\s+)(?=[A-Za-z0-9+/=]*(?:[a-z][A-Z]|[0-9+/=]))"
            r"[A-Za-z0-9+/=]{8,}",
            r"(?P<header>(?i:\b(?:x-api-key|x-goog-api-key|api[-_]?key|access[-_]token"
            r"|authorization|proxy-authorization))"
            rf"[\"']?\s*[:=]\s*[\"']?)(?!(?i:bearer|basic)\b){_CHAR}{{8,}}",
            rf"(?P<query>[?&](?i:key|api[-_]?key|access_token)=){_CHAR}+",
            r"(?P<google>(?<![A-Za-z0-9])AIza)[0-9A-Za-z_\-]{30,}",
        )
    )
)


def _mask(match: re.Match[str]) -> str:
    prefix = next(g for g in match.groups() if g is not None)
    return prefix + MASK


def _known_secrets(secrets: Iterable[str]) -> list[str]:
    """The distinct secrets worth looking for, longest first, with ``sk-``-less forms."""
    found: set[str] = set()
    for secret in secrets:
        if not isinstance(secret, str):
            continue
        secret = secret.strip()
        for form in (secret, secret.removeprefix("sk-")):
            if len(form) >= MIN_WORD:
                found.add(form)
    return sorted(found, key=len, reverse=True)


def _runs(text: str, secret: str) -> list[tuple[int, int]]:
    """Spans of ``text`` holding at least MIN_RUN leading or trailing characters of
    ``secret``, each extended as far as it keeps matching the secret."""
    spans = []
    head = secret[:MIN_RUN]
    at = text.find(head)
    while at != -1:
        end = at + len(head)
        while end - at < len(secret) and end < len(text) and text[end] == secret[end - at]:
            end += 1
        spans.append((at, end))
        at = text.find(head, at + 1)
    tail = secret[-MIN_RUN:]
    at = text.find(tail)
    while at != -1:
        start, end = at, at + len(tail)
        shown = len(tail)
        while shown < len(secret) and start > 0 and text[start - 1] == secret[-shown - 1]:
            start -= 1
            shown += 1
        spans.append((start, end))
        at = text.find(tail, at + 1)
    return spans


def _words(text: str, secret: str) -> list[tuple[int, int]]:
    """Whole-word occurrences of a short secret."""
    pattern = rf"(?<![{_WORD}]){re.escape(secret)}(?![{_WORD}])"
    return [m.span() for m in re.finditer(pattern, text)]


def _masked(text: str, secrets: list[str]) -> list[tuple[int, int]]:
    """Masked forms showing a secret's head and tail: ``sk-abc...wxyz``, ``sk-a****wxyz``."""
    spans = []
    for m in _MASKED.finditer(text):
        head, tail = m.group(1), m.group(3)
        if len(head) < MIN_MASKED_SIDE or len(tail) < MIN_MASKED_SIDE:
            continue
        if len(head) + len(tail) < MIN_MASKED_SHOWN:
            continue
        if any(s.startswith(head) and s.endswith(tail) for s in secrets):
            spans.append(m.span())
    return spans


def _replace(text: str, spans: list[tuple[int, int]]) -> str:
    if not spans:
        return text
    out = []
    last = 0
    for start, end in sorted(spans):
        if end <= last:
            continue
        if start < last:
            start = last
        else:
            out.append(text[last:start])
            out.append(MASK)
        last = end
    out.append(text[last:])
    return "".join(out)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with every given secret (see the module docstring for which forms) and every
    credential-shaped value replaced by ``[redacted]``."""
    if not text:
        return text
    known = _known_secrets(secrets)
    if known:
        spans: list[tuple[int, int]] = []
        for secret in known:
            spans.extend(_runs(text, secret) if len(secret) >= MIN_RUN else _words(text, secret))
        spans.extend(_masked(text, known))
        text = _replace(text, spans)
    return _SHAPES.sub(_mask, text)


def redact_bytes(data: bytes, secrets: Iterable[str] = ()) -> bytes:
    """``redact`` for a body of unknown encoding: bytes that are not UTF-8 come back as they
    were (surrogate escapes), only the matched secrets change."""
    if not data:
        return data
    text = data.decode("utf-8", "surrogateescape")
    return redact(text, secrets).encode("utf-8", "surrogateescape")


class RedactingFormatter(logging.Formatter):
    """Redacts the whole formatted record, traceback included: aiohttp's "Error handling
    request" tracebacks quote the raw request line and headers of a malformed request,
    and libraries log what they like. Installed on every handler by ``setup_logging``."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))
