"""A minimal pooled HTTP/1.1 client on an asyncio Protocol with httptools' C parser (llhttp).

Why it exists: to measure, in bench/ab.py, how much of a naive relay's CPU per request is
aiohttp's ClientSession machinery rather than the work itself. It is a *measurement
prototype*, not relaygate's upstream client: plain http only, no TLS, no connect/read
timeouts, no redirects, no proxy. What it does do correctly, because a mis-framed answer
would make the figures meaningless: llhttp frames every response (Content-Length, chunked
incl. extensions/trailers, read-until-close), a connection goes back to the pool only
after a complete response with keep-alive, an incomplete body raises
:class:`ResponseError`, and the transport is paused while the consumer has more than
``HIGH_WATER`` bytes unread (back-pressure).

    pool = Pool(limit_per_host=0)
    resp = await pool.request("POST", "http://127.0.0.1:8000/v1/chat/completions", body, headers)
    data = await resp.read()            # or: async for chunk in resp.iter_chunks(): ...
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlsplit

import httptools

HIGH_WATER = 256 * 1024


class ResponseError(Exception):
    """The upstream broke the response (closed early, bad framing)."""


class Response:
    __slots__ = ("_buffered", "_chunks", "_conn", "_done", "_exc", "_waiter", "headers", "status")

    def __init__(self, conn: _Conn) -> None:
        self._conn = conn
        self.status = 0
        self.headers: dict[str, str] = {}
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._done = False
        self._waiter: asyncio.Future[None] | None = None
        self._exc: BaseException | None = None

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read(self) -> bytes:
        while not self._done:
            if self._exc is not None:
                raise self._exc
            self._conn.resume()
            await self._wait()
        if self._exc is not None:
            raise self._exc
        data = b"".join(self._chunks)
        self._chunks.clear()
        return data

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                # Everything buffered at once (like aiohttp's iter_any): one write downstream
                # per read from upstream, not one per HTTP chunk.
                chunk = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                self._conn.resume()
                yield chunk
                continue
            if self._exc is not None:
                raise self._exc
            if self._done:
                return
            self._conn.resume()
            await self._wait()

    def close(self) -> None:
        """Give the connection back (complete response) or close it (anything else)."""
        self._conn.release(self)


class _Conn(asyncio.Protocol):
    def __init__(self, pool: Pool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.resp: Response | None = None
        self.head: asyncio.Future[Response] | None = None
        self.keep_alive = False
        self.complete = False
        self.paused = False
        self.closed = False
        self._hname = b""

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        if self.resp is not None and not self.complete:
            try:
                self.parser.feed_past_eof()  # read-until-close bodies end here
            except httptools.HttpParserError:
                pass
            if not self.complete:
                self._fail(ResponseError("upstream closed the connection mid-response"))
        self.pool._discard(self)

    def data_received(self, data: bytes) -> None:
        if self.resp is None:
            self._close()  # bytes nobody asked for: never reuse this connection
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ResponseError("upgrade not supported"))
        except httptools.HttpParserError as e:
            self._fail(ResponseError(f"bad upstream response: {e}"))

    # --- httptools callbacks
    def on_message_begin(self) -> None:
        assert self.resp is not None
        self.resp.headers = {}

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.resp is not None
        self.resp.headers[name.decode("latin-1").title()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        resp = self.resp
        assert resp is not None
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # interim response; llhttp goes on to the final one
        resp.status = status
        self.keep_alive = self.parser.should_keep_alive()
        if self.head is not None and not self.head.done():
            self.head.set_result(resp)

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        assert resp is not None
        resp._chunks.append(body)
        resp._buffered += len(body)
        if resp._buffered >= HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        resp._wake()

    def on_message_complete(self) -> None:
        resp = self.resp
        assert resp is not None
        if resp.status == 0:
            return  # end of an interim 1xx message
        self.complete = True
        resp._done = True
        resp._wake()

    # --- helpers
    def _fail(self, exc: BaseException) -> None:
        resp = self.resp
        if self.head is not None and not self.head.done():
            self.head.set_exception(exc)
        if resp is not None and resp._exc is None:
            resp._exc = exc
            resp._wake()
        self._close()

    def _close(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()

    def resume(self) -> None:
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()

    def release(self, resp: Response) -> None:
        if self.resp is not resp:
            return
        if self.complete and self.keep_alive and not self.closed:
            self.resp = None
            self.resume()
            self.pool._put(self)
        else:
            self.resp = None
            self._close()

    def send(self, data: bytes) -> asyncio.Future[Response]:
        assert self.transport is not None
        self.resp = Response(self)
        self.complete = False
        self.parser = httptools.HttpResponseParser(self)
        self.head = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.head


class Pool:
    """Keep-alive connections per (host, port); ``limit_per_host`` 0 = unlimited."""

    def __init__(self, limit_per_host: int = 0) -> None:
        self.limit = limit_per_host
        self.idle: dict[tuple[str, int], list[_Conn]] = {}
        self.count: dict[tuple[str, int], int] = {}
        self.waiters: dict[tuple[str, int], deque[asyncio.Future[None]]] = {}

    def _put(self, conn: _Conn) -> None:
        self.idle.setdefault(conn.key, []).append(conn)
        self._wake(conn.key)

    def _discard(self, conn: _Conn) -> None:
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
        self.count[conn.key] = self.count.get(conn.key, 1) - 1
        self._wake(conn.key)

    def _wake(self, key: tuple[str, int]) -> None:
        q = self.waiters.get(key)
        while q:
            w = q.popleft()
            if not w.done():
                w.set_result(None)
                return

    async def _acquire(self, host: str, port: int) -> _Conn:
        key = (host, port)
        while True:
            idle = self.idle.get(key)
            while idle:
                conn = idle.pop()
                if not conn.closed:
                    return conn
            if not self.limit or self.count.get(key, 0) < self.limit:
                self.count[key] = self.count.get(key, 0) + 1
                try:
                    loop = asyncio.get_running_loop()
                    _t, conn = await loop.create_connection(lambda: _Conn(self, key), host, port)
                except BaseException:
                    self.count[key] -= 1
                    raise
                return conn
            w: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.waiters.setdefault(key, deque()).append(w)
            await w

    async def request(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str]
    ) -> Response:
        u = urlsplit(url)
        host = u.hostname or "127.0.0.1"
        port = u.port or 80
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        lines = [f"{method} {path} HTTP/1.1", f"Host: {u.netloc}", f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        if method == "HEAD":
            raise ValueError(
                "HEAD is not supported by this prototype (llhttp would wait for a body)"
            )
        conn = await self._acquire(host, port)
        try:
            return await conn.send(data)
        except BaseException:
            conn._close()
            raise

    async def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn._close()
        self.idle.clear()
