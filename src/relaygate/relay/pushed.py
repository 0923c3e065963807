"""A pass-through stream pushed from the upstream connection's own callback to the client's
socket, on the fast upstream client (``h1.Response.stream_to``).

Why: pulled with ``async for``, every piece of a stream wakes the handler's task and resumes
its whole coroutine chain (the relay's four frames under aiohttp's three), then awaits the
client write through three more; a stream of 30 chunks pays that 30 times. Pushed, a piece
costs the SSE filter and one ``transport.write``, in the callback that read it. The handler
sleeps until the stream ends, the client is gone, or the client's socket is full (then it
drains, the only await of the loop, and reading from the upstream waits meanwhile:
back-pressure as before).

What the pulled loop guaranteed holds here too: bytes reach the client in the order they
arrived, once the end-of-answer marker went by the rest is held for the final write (after
the settle), and what was delivered is what the filter saw.
"""

from __future__ import annotations

import asyncio

from aiohttp import ClientConnectionResetError, web

from relaygate.relay.sse import SSEUsageFilter
from relaygate.upstream_client.h1 import Response as PushResponse

MAX_HELD = 64 * 1024  # bytes after the end marker held for the last write; beyond, sent on


class PushedStream:
    """One stream's state while the upstream's callback writes it to the client."""

    __slots__ = (
        "_high",
        "_loop",
        "_transport",
        "_waiter",
        "client_gone",
        "ended",
        "error",
        "failure",
        "held",
        "paused",
        "sse",
    )

    def __init__(self, sse: SSEUsageFilter, transport: asyncio.Transport) -> None:
        self.sse = sse
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        # Past the transport's own high-water mark its protocol is paused, so drain() waits.
        self._high = transport.get_write_buffer_limits()[1]
        self._waiter: asyncio.Future[None] | None = None
        self.held = b""
        self.client_gone = False
        self.paused = False
        self.ended = False
        self.error: BaseException | None = None  # what broke the upstream's answer off
        self.failure: BaseException | None = None  # a bug of ours in the callback

    def on_data(self, chunk: bytes) -> bool:
        if self.client_gone or self.failure is not None:
            return False
        sse = self.sse
        try:
            out = sse.feed(chunk)
        except Exception as exc:  # raised in the handler: never taken for an upstream error
            self.failure = exc
            self._wake()
            return False
        if not out:
            return True
        if sse.done and len(self.held) < MAX_HELD:
            self.held += out
            return True
        transport = self._transport
        if transport.is_closing():
            self.client_gone = True
            self._wake()
            return False
        transport.write(b"%x\r\n%b\r\n" % (len(out), out))
        if transport.get_write_buffer_size() > self._high:
            self.paused = True
            self._wake()
            return False
        return True

    def on_end(self, error: BaseException | None) -> None:
        self.ended = True
        self.error = error
        if error is None and not self.client_gone:
            self.held += self.sse.flush()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def run(self, request: web.Request, up: PushResponse) -> None:
        """Until the upstream's end, the client's departure or a failure; raises a failure of
        the filter, and CancelledError when the handler is cancelled (the callbacks then stop
        writing: ``client_gone``)."""
        writer = request.writer
        writer.send_headers()  # the pieces go to the socket directly, after the head
        up.stream_to(self.on_data, self.on_end)
        try:
            while not (self.ended or self.client_gone or self.failure is not None):
                if self.paused:
                    try:
                        await writer.drain()
                    except (ConnectionResetError, ClientConnectionResetError):
                        self.client_gone = True
                        break
                    self.paused = False
                    up.resume()
                    continue
                self._waiter = self._loop.create_future()
                try:
                    await self._waiter
                finally:
                    self._waiter = None
        except BaseException:
            self.client_gone = True  # nothing more is written to this client
            raise
        if self.failure is not None:
            raise self.failure
