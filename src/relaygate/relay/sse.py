"""Server-sent events pass-through that notices the usage chunk.

Bytes are forwarded as soon as an event is complete (no buffering of the answer). Only an
event that carries a usage object is parsed (not OpenAI's ``"usage":null`` on every chunk of
an include_usage stream: parsing each chunk would double the cost of streaming). If
relaygate added ``stream_options.include_usage`` itself, the usage-only chunk
(``"choices": []``) is dropped so the client sees exactly what it asked for.
"""

from __future__ import annotations

import orjson

from relaygate.relay.dialects import read_usage

MAX_PARTIAL = 1 << 20  # flush an unterminated event beyond 1 MiB rather than hold it


class SSEUsageFilter:
    __slots__ = ("_buf", "content_events", "done", "strip", "usage")

    def __init__(self, strip_usage_chunk: bool) -> None:
        self._buf = b""
        self.strip = strip_usage_chunk
        self.usage: tuple[int, int] | None = None
        self.content_events = 0
        self.done = False

    def feed(self, chunk: bytes) -> bytes:
        """Complete events ready to forward (possibly empty)."""
        buf = self._buf + chunk if self._buf else chunk
        end = buf.rfind(b"\n\n")
        if end < 0:
            if len(buf) > MAX_PARTIAL:
                self._buf = b""
                return buf
            self._buf = buf
            return b""
        ready, self._buf = buf[: end + 2], buf[end + 2 :]
        self.content_events += ready.count(b'"delta"') + ready.count(b'"candidates"')
        if b"[DONE]" in ready or b"message_stop" in ready or b'"finishReason"' in ready:
            self.done = True  # OpenAI, Claude and Gemini end-of-answer markers
        if _mentions_usage(ready):
            ready = self._take_usage(ready)
        return ready

    def flush(self) -> bytes:
        rest, self._buf = self._buf, b""
        return rest

    def _take_usage(self, ready: bytes) -> bytes:
        kept = []
        for event in ready.split(b"\n\n"):
            if not event:
                continue
            if _mentions_usage(event):
                drop = self._inspect(event)
                if drop:
                    continue
            kept.append(event)
        return b"".join(e + b"\n\n" for e in kept)

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


def _mentions_usage(data: bytes) -> bool:
    """A usage object (OpenAI, Claude) or usageMetadata (Gemini), not ``"usage":null``."""
    return b'"usage":{' in data or b'"usage": {' in data or b'"usageMetadata"' in data
