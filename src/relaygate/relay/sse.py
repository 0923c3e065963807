"""Server-sent events pass-through that notices the usage chunk.

Bytes are forwarded as soon as an event is complete (no buffering of the answer). Only an
event that carries a usage object is parsed (not OpenAI's ``"usage":null`` on every chunk of
an include_usage stream: parsing each chunk would double the cost of streaming). If
relaygate added ``stream_options.include_usage`` itself, the usage-only chunk
(``"choices": []``) is dropped so the client sees exactly what it asked for.

Cost matters here (this runs on every chunk of every stream): each byte-pattern scan of a
block costs about 0.5 µs per KB, so a block is scanned once for a ``"usage`` that is not
``null`` (each such hit is then looked at where it is), for content events only until the first, and the end-of-answer
marker is looked for where the dialect puts it (OpenAI's: the block's tail), not in the
whole block.
"""

from __future__ import annotations

import re

import orjson

from relaygate.relay.dialects import CLAUDE, GEMINI, OPENAI, RESPONSES, read_usage, text_bytes

MAX_PARTIAL = 1 << 20  # flush an unterminated event beyond 1 MiB rather than hold it
MAX_KEPT_FOR_ESTIMATE = 8 << 20  # delivered bytes kept to estimate an answer without usage

# per dialect: what marks a content event, what marks the end of the answer
_CONTENT = {OPENAI: b'"delta"', CLAUDE: b'"delta"', GEMINI: b'"candidates"', RESPONSES: b'"delta"'}
_END = {
    OPENAI: b"[DONE]",
    CLAUDE: b"message_stop",
    GEMINI: b'"finishReason"',
    # The Responses API ends a stream with one of these events (and no [DONE]).
    RESPONSES: b"response.completed",
}
_RESPONSES_ENDS = (b"response.completed", b"response.incomplete", b"response.failed")
# Bytes every end-of-answer event of the dialect holds: a block without them is no end (one
# scan, where the full check of the last event costs a few slices per block).
_END_HINT = {OPENAI: b"[DONE]", CLAUDE: b"message_stop", GEMINI: b"", RESPONSES: b"response."}
# Where in a block the hint is looked for: OpenAI's end event is short (``data: [DONE]``,
# whitespace allowed), so only the block's tail; the others' can carry a body (Bedrock adds
# metrics to Claude's message_stop): the whole block. A negative start is str.find's "from
# the end".
_END_HINT_FROM = {OPENAI: -64, CLAUDE: 0, GEMINI: 0, RESPONSES: 0}
# A usage key that is not OpenAI's ``"usage":null`` (present on every chunk of an
# include_usage stream): only those are looked at.
_USAGE_TO_READ = re.compile(rb'"usage(?!": ?null)')


def _is_named_event(event: bytes, name: bytes) -> bool:
    """``event`` is the one named ``name``, by its ``event:`` line or its data's leading
    ``"type"`` (Claude's message_stop, the Responses API's response.completed)."""
    for prefix in (b"event: ", b"event:"):
        if event.startswith(prefix + name):
            rest = event[len(prefix) + len(name) :]
            return not rest or rest[:1] in (b"\n", b"\r", b" ")
    return event.startswith(b"data:") and event[5:].lstrip().startswith(b'{"type":"' + name + b'"')


class SSEUsageFilter:
    __slots__ = (
        "_buf",
        "_content",
        "_end",
        "_end_anywhere",
        "_end_hint",
        "_end_hint_from",
        "_kept",
        "_kept_bytes",
        "_sep",
        "done",
        "has_content",
        "strip",
        "usage",
    )

    def __init__(self, strip_usage_chunk: bool, dialect: str = OPENAI) -> None:
        self._buf = b""
        self.strip = strip_usage_chunk
        self.usage: tuple[int, int] | None = None
        self.has_content = False  # a content event went by (whether, not how many: one scan)
        # The delivered events, kept by reference (no copy) only to estimate the answer's
        # length should the upstream report no usage; bounded.
        self._kept: list[bytes] = []
        self._kept_bytes = 0
        self.done = False
        self._content = _CONTENT[dialect]
        self._end = _END[dialect]
        self._end_hint = _END_HINT[dialect]
        self._end_hint_from = _END_HINT_FROM[dialect]
        # Gemini's last chunk carries content, usage and finishReason: it can be long.
        self._end_anywhere = dialect == GEMINI
        # The blank line that ends an event: "\n\n", or "\r\n\r\n" for upstreams that use
        # CRLF line ends (SSE allows both); decided by the first event boundary seen.
        self._sep: bytes | None = None

    def feed(self, chunk: bytes) -> bytes:
        """Complete events ready to forward (possibly empty)."""
        sep = self._sep
        if sep is not None and not self._buf and chunk.endswith(sep):
            ready = chunk  # the usual piece: whole events, nothing held back (no copies)
        else:
            buf = self._buf + chunk if self._buf else chunk
            if sep is None:
                # (a CRLF boundary that comes first starts before the first "\n\n" + 4)
                lf = buf.find(b"\n\n")
                crlf = buf.find(b"\r\n\r\n", 0, lf + 4) if lf >= 0 else buf.find(b"\r\n\r\n")
                if crlf >= 0 and (lf < 0 or crlf < lf):
                    sep = self._sep = b"\r\n\r\n"
                elif lf >= 0:
                    sep = self._sep = b"\n\n"
            end = buf.rfind(sep) if sep is not None else -1
            if end < 0 or sep is None:
                if len(buf) > MAX_PARTIAL:
                    self._buf = b""
                    return buf
                self._buf = buf
                return b""
            end += len(sep)
            ready, self._buf = buf[:end], buf[end:]
        if not self.has_content:
            self.has_content = self._content in ready
        if self._kept_bytes < MAX_KEPT_FOR_ESTIMATE:
            self._kept.append(ready)
            self._kept_bytes += len(ready)
        if not self.done:
            if self._end_anywhere:
                # Gemini: the unescaped key can only be JSON structure, never answer text.
                self.done = self._end in ready
            elif ready.find(self._end_hint, self._end_hint_from) >= 0:
                self.done = self._is_end_event(ready, sep)
        found = _USAGE_TO_READ.search(ready)
        if found is not None:
            ready = self._take_usage(ready, found.start())
        return ready

    def _is_end_event(self, ready: bytes, sep: bytes) -> bool:
        """The block's last event is the dialect's end of answer, as a whole event: OpenAI's
        ``data: [DONE]``, Claude's ``event: message_stop``. Text inside a content delta is
        JSON-escaped on one data line, so it can never look like either."""
        body_end = len(ready) - len(sep)
        start = ready.rfind(sep, 0, body_end)
        last = ready[start + len(sep) if start >= 0 else 0 : body_end].strip()
        if self._end == b"[DONE]":
            return last in (b"data: [DONE]", b"data:[DONE]")
        names = _RESPONSES_ENDS if self._end == b"response.completed" else (self._end,)
        return any(_is_named_event(last, name) for name in names)

    def answer_text_bytes(self) -> int:
        """Bytes of the answer's text in the delivered events (see dialects.text_bytes), over
        the first MAX_KEPT_FOR_ESTIMATE bytes delivered."""
        text = 0
        for block in self._kept:
            for line in block.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                try:
                    text += text_bytes(orjson.loads(line[5:].strip()))
                except orjson.JSONDecodeError:
                    continue
        return text

    def flush(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest

    def _take_usage(self, ready: bytes, i: int) -> bytes:
        """Record every usage object in ``ready`` (the first one read at ``i``); drop the
        injected usage-only event. Only the hits of _USAGE_TO_READ are visited: the
        ``"usage":null`` on every chunk of an include_usage stream are skipped by the scan."""
        sep = self._sep or b"\n\n"
        while True:
            before = ready.rfind(sep, 0, i)
            start = 0 if before < 0 else before + len(sep)
            stop = ready.find(sep, i) + len(sep)  # ready ends with a separator: always found
            if self._inspect(ready[start : stop - len(sep)]):
                ready = ready[:start] + ready[stop:]
                stop = start
            found = _USAGE_TO_READ.search(ready, stop)
            if found is None:
                return ready
            i = found.start()

    def _inspect(self, event: bytes) -> bool:
        """Record the usage in one event; True if the event should not be forwarded."""
        for line in event.split(b"\n"):
            if not line.startswith(b"data:"):
                continue
            try:
                obj = orjson.loads(line[5:].strip())
            except orjson.JSONDecodeError:
                return False
            if not isinstance(obj, dict):
                return False
            found = read_usage(obj)
            if found is not None:
                prompt, completion = found
                if prompt < 0:  # Claude's message_delta carries the output count only
                    prompt = self.usage[0] if self.usage is not None else 0
                self.usage = (prompt, completion)
            return self.strip and obj.get("choices") == [] and obj.get("usage") is not None
        return False
