"""What the relay needs from an upstream HTTP client, whichever one serves it.

relay/forward.py, relay/translated.py and health.py use only this: ``post()`` one request,
then the response's status, headers, whole body (``read()``) or the body as it arrives
(``iter_any()``), whether the whole body is in already (``is_eof()``), and ``release()``.
Keeping it this narrow is what lets ``RELAYGATE_UPSTREAM_CLIENT`` switch between aiohttp's
client and the httptools one (relaygate.upstream_client.h1) without the relay knowing.

Every failure of the upstream — refused address, connection, timeout, a response broken
off or mis-framed — is one of ``ERRORS``: the relay treats them alike (the next channel
before anything reached the client; what was delivered billed after).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Protocol

import aiohttp


class UpstreamProtocolError(ConnectionError):
    """The upstream broke the response: closed the connection before its end, or sent
    something that is not HTTP/1.1. A ``ConnectionError`` (so an ``OSError``) because every
    caller already reads those as "the upstream failed", and it must never pass for a
    complete answer: a truncated stream is billed as what was delivered."""


class UpstreamDisconnected(UpstreamProtocolError):
    """A kept-alive connection closed before any byte of the answer. The request may or may
    not have reached the upstream, so it is re-sent only when that is harmless (an
    idempotent method); a POST is never re-sent: it could be answered, and billed, twice."""


ERRORS: tuple[type[BaseException], ...] = (TimeoutError, aiohttp.ClientError, OSError)


class UpstreamResponse(Protocol):
    """One upstream answer; ``release()`` it once done (the connection is then reused if
    the answer was read to its end and keeps the connection alive, closed otherwise)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...  # case-insensitive

    def is_eof(self) -> bool: ...

    async def read(self) -> bytes: ...

    def iter_any(self) -> AsyncIterator[bytes]: ...

    def release(self) -> None: ...


class UpstreamClient(Protocol):
    async def post(
        self, url: str, *, data: bytes, headers: Mapping[str, str]
    ) -> UpstreamResponse: ...

    async def close(self) -> None: ...
