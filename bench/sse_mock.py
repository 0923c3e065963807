"""A small, fast mock upstream that streams SSE chunk by chunk (what nginx-light cannot do).

Why: the nginx mock sends its whole SSE answer in one packet with a Content-Length, so a
relay that notices "the answer is already complete" never runs its streaming path. Real
upstreams send ``Transfer-Encoding: chunked`` and one SSE event at a time. This mock does
that on a raw asyncio Protocol (uvloop, TCP_NODELAY, one ``transport.write`` per chunk) so
that it costs far less than the relays in front of it (``make bench`` measures it alone).

Paths (POST; the request body is ignored, like the nginx mock's):

* ``/v1/chat/completions`` — the same JSON answer as the nginx mock (Content-Length);
* ``/chunked/v1/chat/completions`` — SSE, chunked: role chunk, ``--chunks`` content chunks,
  finish chunk, usage chunk, ``[DONE]``, each in its own write, no delay (each its own
  packet on loopback with TCP_NODELAY, unless the receiver is slower than the writes);
* ``/delay/v1/chat/completions`` — the same, ``--delay-ms`` apart (a model "typing"; one
  shared timer writes the next frame of every delayed stream, so a frame may come up to
  one tick early or late relative to its stream's start);
* ``GET /v1/models`` — a one-model list.

    python bench/sse_mock.py --port 8010 --chunks 30 --delay-ms 2

Usage is always prompt_tokens=10, completion_tokens=<chunks>, like the nginx mock's fixed
answer. Requests are answered in order on each connection (pipelining is handled: the
next request waits until the current streamed answer has ended).
"""

from __future__ import annotations

import argparse
import asyncio
import socket

JSON_ANSWER = (
    b'{"id":"chatcmpl-ssemock","object":"chat.completion","created":1700000000,'
    b'"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":'
    b'"lorem ipsum dolor sit amet consectetur adipiscing elit sed lorem ipsum dolor sit amet '
    b'consectetur adipiscing elit sed lorem ipsum ","refusal":null},"logprobs":null,'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":20,'
    b'"total_tokens":30},"system_fingerprint":"fp_mock"}'
)
WORDS = ("lorem ", "ipsum ", "dolor ", "sit ", "amet ", "consectetur ", "adipiscing ", "elit ")
HEAD = b'data: {"id":"chatcmpl-ssemock","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","system_fingerprint":"fp_mock","choices":['


def _frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def sse_frames(n_chunks: int) -> list[bytes]:
    """The chunked-encoding frames of one SSE answer, one per write; the last one also
    carries the terminating zero-size chunk."""
    events = [
        HEAD
        + b'{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
    ]
    for i in range(n_chunks):
        word = WORDS[i % len(WORDS)].encode()
        events.append(
            HEAD
            + b'{"index":0,"delta":{"content":"'
            + word
            + b'"},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
        )
    events.append(
        HEAD + b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n'
    )
    events.append(
        HEAD
        + b'],"usage":{"prompt_tokens":10,"completion_tokens":%d,"total_tokens":%d}}\n\n'
        % (n_chunks, 10 + n_chunks)
    )
    events.append(b"data: [DONE]\n\n")
    frames = [_frame(e) for e in events]
    frames[-1] += b"0\r\n\r\n"
    return frames


SSE_HEADERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
JSON_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(JSON_ANSWER), JSON_ANSWER)
)
MODELS = b'{"object":"list","data":[{"id":"gpt-4o-mini","object":"model","created":1700000000,"owned_by":"mock"}]}'
MODELS_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(MODELS), MODELS)
)
NOT_FOUND = b'{"error":{"message":"sse mock: unknown path","type":"invalid_request_error"}}'
NOT_FOUND_RESPONSE = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    % (len(NOT_FOUND), NOT_FOUND)
)


class MockProtocol(asyncio.Protocol):
    """One connection: parse requests by hand (Content-Length bodies only, which is what
    wrk and the relays send), answer them in order."""

    frames: list[bytes] = []
    delay: float = 0.0

    def __init__(self) -> None:
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.busy = False  # a streamed answer is in flight: later requests wait
        self.sent = 0  # frames of the delayed answer written so far
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._drain()

    def _drain(self) -> None:
        while not self.busy and self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end]
            length = 0
            lower = head.lower()
            i = lower.find(b"\r\ncontent-length:")
            if i >= 0:
                j = lower.find(b"\r\n", i + 2)
                length = int(head[i + 17 : j if j >= 0 else len(head)])
            total = end + 4 + length
            if len(self.buf) < total:
                return
            self.buf = self.buf[total:]
            line = head[: head.find(b"\r\n")] if b"\r\n" in head else head
            parts = line.split(b" ")
            path = parts[1] if len(parts) > 1 else b"/"
            if path == b"/v1/chat/completions":
                self.transport.write(JSON_RESPONSE)
            elif path == b"/chunked/v1/chat/completions":
                self.transport.write(SSE_HEADERS)
                for f in self.frames:
                    self.transport.write(f)
            elif path == b"/delay/v1/chat/completions":
                self.transport.write(SSE_HEADERS)
                self.busy = True
                self.sent = 0
                Ticker.add(self)
            elif path == b"/v1/models":
                self.transport.write(MODELS_RESPONSE)
            else:
                self.transport.write(NOT_FOUND_RESPONSE)

    def tick(self) -> bool:
        """Write the next frame; False once the answer is complete (or the peer is gone)."""
        if self.transport is None:
            return False
        self.transport.write(self.frames[self.sent])
        self.sent += 1
        if self.sent < len(self.frames):
            return True
        self.busy = False
        self._drain()
        return False


class Ticker:
    """One timer for all delayed streams, not one per stream and chunk: every ``delay``
    each active stream gets its next frame. Why: a timer callback per chunk made the mock
    cost as much CPU per request as the relays it is meant to measure."""

    active: list[MockProtocol] = []
    pending: list[MockProtocol] = []
    armed = False

    @classmethod
    def add(cls, proto: MockProtocol) -> None:
        cls.pending.append(proto)
        if not cls.armed:
            cls.armed = True
            proto.loop.call_later(MockProtocol.delay, cls.run, proto.loop)

    @classmethod
    def run(cls, loop: asyncio.AbstractEventLoop) -> None:
        streams = cls.active + cls.pending
        cls.pending = []
        cls.active = [p for p in streams if p.tick()]
        if cls.active or cls.pending:
            loop.call_later(MockProtocol.delay, cls.run, loop)
        else:
            cls.armed = False


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(MockProtocol, host, port, backlog=4096, reuse_address=True)
    print(f"sse mock on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8010)
    p.add_argument("--chunks", type=int, default=30, help="content chunks per SSE answer")
    p.add_argument("--delay-ms", type=float, default=2.0, help="gap between chunks on /delay")
    a = p.parse_args()
    MockProtocol.frames = sse_frames(a.chunks)
    MockProtocol.delay = a.delay_ms / 1000
    try:
        import uvloop

        uvloop.run(serve(a.host, a.port))
    except ImportError:
        asyncio.run(serve(a.host, a.port))


if __name__ == "__main__":
    main()
