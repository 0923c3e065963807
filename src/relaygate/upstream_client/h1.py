"""A pooled HTTP/1.1 client on asyncio Protocols with httptools' C parser (llhttp):
``RELAYGATE_UPSTREAM_CLIENT=fast``.

Why it exists: aiohttp's ``ClientSession`` machinery is most of a relay's upstream-side cost
per request, and the relay needs very little of it (one POST, keep-alive, a body read whole
or as it arrives): docs/decisions.md, "Upstream HTTP client", has the measurement.

What it guarantees, because the relay's money depends on it:

* framing is llhttp's (Content-Length, chunked with extensions and trailers, read until
  close, no body for 1xx/204/304/HEAD); an answer that ends before its framing says it
  does raises :class:`UpstreamProtocolError` after the bytes that did arrive, never a
  clean end;
* a connection is reused only after a response read to its end that keeps it alive, and
  one holding bytes nobody asked for (a pipelined or unsolicited response) is closed;
* a kept-alive connection that dies before any byte of the answer is re-sent only for an
  idempotent method; a POST is not (it may have reached the upstream: answered twice);
* every address a name resolves to is checked against the upstream address policy before
  it is connected (relaygate.upstreams: the same check as aiohttp's socket factory), and
  TLS is verified with the same context;
* the connect timeout covers resolving, connecting and the TLS handshake; the read timeout
  is the longest the upstream may stay silent while the relay waits for it (not while the
  relay's own client is slow: then reading is paused — back-pressure — and the clock with
  it).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools

from relaygate.upstream_client.base import UpstreamDisconnected, UpstreamProtocolError

HIGH_WATER = 256 * 1024  # unread body bytes past which reading from the upstream pauses
KEEPALIVE_SECONDS = 15.0  # an idle connection older than this is closed, not reused
DNS_TTL = 300.0
IDEMPOTENT = frozenset(("GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"))
_URL_CACHE_MAX = 4096

Key = tuple[str, str, int]  # scheme, host, port
SocketFactory = Callable[[Any], socket.socket]
# ``Response.stream_to``: takes each piece of the body as it arrives, False to pause reading;
# then told the end (None) or what broke the answer.
OnData = Callable[[bytes], bool]
OnEnd = Callable[[BaseException | None], None]


class Headers(Mapping[str, str]):
    """Response headers; names are matched case-insensitively (repeated ones joined by ", ")."""

    __slots__ = ("_d",)

    def __init__(self) -> None:
        self._d: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        return self._d[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._d

    def _add(self, name: str, value: str) -> None:
        old = self._d.get(name)
        self._d[name] = value if old is None else f"{old}, {value}"


class Response:
    """One answer. Its body is buffered as it arrives (reading pauses past HIGH_WATER) and
    handed out whole by ``read()`` or in the pieces received by ``iter_any()``; or pushed,
    piece by piece, to the callbacks given to ``stream_to()``."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_done",
        "_exc",
        "_on_data",
        "_on_end",
        "_waiter",
        "headers",
        "status",
    )

    def __init__(self, conn: _Conn) -> None:
        self._conn: _Conn | None = conn
        self.status = 0
        self.headers = Headers()
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._done = False
        self._exc: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._on_data: OnData | None = None
        self._on_end: OnEnd | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")

    def is_eof(self) -> bool:
        """The whole body has arrived (it may not have been read yet)."""
        return self._done

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        conn = self._conn
        if conn is None:
            raise UpstreamProtocolError("the response was released before its end")
        if conn.paused:
            conn.resume()
        self._waiter = conn.loop.create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read(self) -> bytes:
        """The whole body (the part not handed out by ``iter_any`` yet)."""
        while not self._done:
            if self._exc is not None:
                raise self._exc
            await self._wait()
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        return data

    def iter_any(self) -> Response:
        """The body as it arrives: everything buffered at each step, in one piece (one
        write downstream per read from the upstream, not one per HTTP chunk)."""
        return self

    def __aiter__(self) -> Response:
        return self

    async def __anext__(self) -> bytes:
        while True:
            chunks = self._chunks
            if chunks:
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                chunks.clear()
                self._buffered = 0
                conn = self._conn
                if conn is not None and conn.paused:
                    conn.resume()
                return data
            if self._exc is not None:
                raise self._exc
            if self._done:
                raise StopAsyncIteration
            await self._wait()

    def stream_to(self, on_data: OnData, on_end: OnEnd) -> None:
        """Push the rest of the body to ``on_data`` from the connection's own callback, as each
        read from the socket arrives (what was buffered first, at once), then call
        ``on_end`` once: None after the last byte, else the error that broke the answer off
        (the read timeout, a framing error, a closed connection).

        Why: a pass-through stream then costs no task wake-up, no future and no coroutine
        resumption per piece, only this callback. ``on_data`` returning False pauses reading
        from the upstream (the caller's client is slow) until ``resume()``; the read timeout
        does not run meanwhile. Neither callback may raise.
        """
        self._on_data, self._on_end = on_data, on_end
        conn = self._conn
        chunks = self._chunks
        wants_more = True
        if chunks:
            data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            self._buffered = 0
            wants_more = on_data(data)
        if self._done or self._exc is not None:
            self._push_end()
        elif conn is not None:
            if not wants_more:
                conn.pause()
            elif conn.paused:
                conn.resume()  # paused at HIGH_WATER before the callbacks took over

    def resume(self) -> None:
        """Read from the upstream again after ``on_data`` asked for a pause."""
        conn = self._conn
        if conn is not None:
            conn.resume()

    def _push_end(self) -> None:
        on_end, self._on_end = self._on_end, None
        self._on_data = None
        if on_end is not None:
            on_end(None if self._done else self._exc)

    def release(self) -> None:
        """Give the connection back (answer read to its end, keep-alive) or close it."""
        self._on_data = self._on_end = None
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.release(self)


class _Extra(Exception):
    """Raised from a parser callback to stop at bytes past the end of the answer."""


class _Conn(asyncio.Protocol):
    """One connection; at most one request in flight (no pipelining)."""

    def __init__(self, pool: Pool, key: Key) -> None:
        self.pool = pool
        self.key = key
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.resp: Response | None = None
        self.head: asyncio.Future[Response] | None = None
        self.head_only = False  # a HEAD request: no body follows the answer's head
        self.keep_alive = False
        self.complete = False
        self.until_eof = False  # framed by the end of the connection (no length, not chunked)
        self.got_bytes = False
        self.reused = False
        self.paused = False
        self.closed = False
        self.idle_since = 0.0
        self.last_read = 0.0
        self.timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        self.last_read = self.loop.time()
        if self.resp is None or self.complete:
            self._close()  # bytes nobody asked for: never reuse this connection
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if self.complete:  # bytes after the end of the answer: the answer stands
                self._close()
            else:
                cause = exc.__context__
                if isinstance(cause, UpstreamProtocolError):
                    self._fail(cause)
                else:
                    self._fail(UpstreamProtocolError(f"bad upstream response: {exc}"))

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost decides what the end means

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.transport = None
        self._stop_timer()
        if self.resp is not None and not self.complete:
            if self.until_eof and exc is None and self.resp.status:
                self._finish()  # a body read until close ends here
            elif self.reused and not self.got_bytes:
                self._fail(UpstreamDisconnected("the upstream closed a kept-alive connection"))
            else:
                self._fail(UpstreamProtocolError("the upstream closed the connection mid-answer"))
        self.pool._discard(self)

    # --- httptools callbacks
    def on_message_begin(self) -> None:
        resp = self.resp
        if resp is None or self.complete:
            raise _Extra
        resp.headers = Headers()

    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.resp is not None
        self.resp.headers._add(name.decode("latin-1").lower(), value.decode("latin-1"))

    def on_headers_complete(self) -> None:
        resp = self.resp
        assert resp is not None
        parser = self.parser
        status = parser.get_status_code()
        if status < 200:
            if status == 101:
                raise UpstreamProtocolError("the upstream switched protocols (unsupported)")
            return  # an interim answer (100 Continue, 103): the real one follows
        resp.status = status
        self.keep_alive = parser.should_keep_alive()
        headers = resp.headers._d
        self.until_eof = (
            status not in (204, 304)
            and "content-length" not in headers
            and "chunked" not in headers.get("transfer-encoding", "").lower()
        )
        head = self.head
        if head is not None and not head.done():
            head.set_result(resp)
        if self.head_only:
            # llhttp cannot be told the request was HEAD and would take the next bytes for
            # a body: the answer ends here, and the connection is not reused.
            self.keep_alive = False
            self.until_eof = False
            self._finish()
            raise _Extra

    def on_body(self, body: bytes) -> None:
        resp = self.resp
        assert resp is not None
        on_data = resp._on_data
        if on_data is not None:
            if not on_data(body):
                self.pause()
            return
        resp._chunks.append(body)
        resp._buffered += len(body)
        if resp._buffered >= HIGH_WATER:
            self.pause()
        resp._wake()

    def on_message_complete(self) -> None:
        resp = self.resp
        if resp is None or resp.status == 0:
            return  # the end of an interim 1xx answer
        self._finish()

    # --- helpers
    def _finish(self) -> None:
        resp = self.resp
        assert resp is not None
        self.complete = True
        self._stop_timer()
        resp._done = True
        if resp._on_end is not None:
            resp._push_end()
        else:
            resp._wake()

    def _fail(self, exc: BaseException) -> None:
        head = self.head
        if head is not None and not head.done():
            head.set_exception(exc)
        resp = self.resp
        if resp is not None and resp._exc is None and not self.complete:
            resp._exc = exc
            if resp._on_end is not None:
                resp._push_end()
            else:
                resp._wake()
        self._close()

    def _close(self) -> None:
        self.keep_alive = False
        if self.transport is not None:
            self.transport.close()

    def _stop_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _check_read(self) -> None:
        """The read timeout: fires at most once per ``read_timeout`` of silence (one timer per
        request, pushed back by whatever arrived meanwhile)."""
        self.timer = None
        if self.resp is None or self.complete or self.closed:
            return
        now = self.loop.time()
        if self.paused:
            self.last_read = now  # our reader is slow, not the upstream
        deadline = self.last_read + self.pool.read_timeout
        if now >= deadline:
            self._fail(TimeoutError(f"the upstream sent nothing for {self.pool.read_timeout} s"))
        else:
            self.timer = self.loop.call_at(deadline, self._check_read)

    def pause(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            self.last_read = self.loop.time()
            if self.transport is not None:
                self.transport.resume_reading()

    def release(self, resp: Response) -> None:
        if self.resp is not resp:
            return
        self.resp = None
        self.head = None
        if self.complete and self.keep_alive and not self.closed:
            if self.paused:
                self.resume()
            self.pool._put(self)
        else:
            self._close()

    def send(self, data: bytes, body: bytes, head_only: bool) -> asyncio.Future[Response]:
        transport = self.transport
        assert transport is not None
        self.resp = Response(self)
        self.complete = self.until_eof = self.got_bytes = False
        self.head_only = head_only
        self.head = head = self.loop.create_future()
        self.last_read = self.loop.time()
        if self.pool.read_timeout:
            self.timer = self.loop.call_at(
                self.last_read + self.pool.read_timeout, self._check_read
            )
        if len(body) < 65536:
            transport.write(data + body)
        else:
            transport.writelines((data, body))
        return head


class Pool:
    """Kept-alive connections per (scheme, host, port); ``limit_per_host`` 0 = unlimited.

    ``ssl_context`` verifies https upstreams; ``socket_factory`` makes the socket for one
    resolved address or refuses it (relaygate.upstreams.guarded_socket_factory)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        socket_factory: SocketFactory | None = None,
        connect_timeout: float | None = 10.0,
        read_timeout: float | None = 600.0,
        limit_per_host: int = 0,
        keepalive_seconds: float = KEEPALIVE_SECONDS,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.ssl_context = ssl_context
        self.socket_factory = socket_factory or _plain_socket
        self.connect_timeout = connect_timeout or None
        self.read_timeout = read_timeout or 0.0
        self.limit = limit_per_host
        self.keepalive_seconds = keepalive_seconds
        self.idle: dict[Key, list[_Conn]] = {}
        self.count: dict[Key, int] = {}
        self.waiters: dict[Key, deque[asyncio.Future[None]]] = {}
        self.conns: set[_Conn] = set()
        self._dns: dict[tuple[str, int], tuple[float, list[Any]]] = {}
        self._urls: dict[str, tuple[Key, str, str]] = {}
        self.closed = False

    # --- the client interface (relaygate.upstream_client.base.UpstreamClient)
    async def post(self, url: str, *, data: bytes, headers: Mapping[str, str]) -> Response:
        return await self.request("POST", url, data, headers)

    async def request(
        self, method: str, url: str, body: bytes = b"", headers: Mapping[str, str] | None = None
    ) -> Response:
        if self.closed:
            raise RuntimeError("the upstream client is closed")
        key, data = self._head(method, url, body, headers)
        retry = method in IDEMPOTENT
        while True:
            conn = await self._acquire(key)
            try:
                return await conn.send(data, body, method == "HEAD")
            except UpstreamDisconnected:
                if retry and conn.reused:
                    retry = False  # once, on a fresh connection if need be
                    continue
                raise
            except BaseException:
                conn._close()  # cancelled (or failed) mid-request: never reuse it
                raise

    def send_now(
        self, url: str, *, data: bytes, headers: Mapping[str, str]
    ) -> tuple[_Conn, asyncio.Future[Response]] | None:
        """POST on an idle kept-alive connection now, without a coroutine: (the connection,
        the future of the answer's head); None when no idle connection is at hand. For a
        request sent while something else is awaited (relay.early): whoever does not take
        the answer must ``abandon`` it."""
        if self.closed:
            return None
        key, head = self._head("POST", url, data, headers)
        conn = self._idle_conn(key)
        if conn is None:
            return None
        return conn, conn.send(head, data, False)

    @staticmethod
    def abandon(conn: _Conn, head: asyncio.Future[Response]) -> None:
        """Drop a request sent by ``send_now`` whose answer nobody will read: its connection
        is closed (an answer that had fully arrived gives it back instead)."""
        if head.done() and not head.cancelled() and head.exception() is None:
            head.result().release()
            return
        head.cancel()
        conn._close()

    async def close(self) -> None:
        self.closed = True
        for conn in list(self.conns):
            conn._close()
        self.idle.clear()

    # --- the pool
    def _head(
        self, method: str, url: str, body: bytes, headers: Mapping[str, str] | None
    ) -> tuple[Key, bytes]:
        """(pool key, request head bytes)."""
        key, host, target = self._split(url)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
        if body or method not in ("GET", "HEAD"):
            lines.append(f"Content-Length: {len(body)}")
        if headers:
            lines += [f"{k}: {v}" for k, v in headers.items()]
        text = "\r\n".join(lines)
        if text.count("\n") != len(lines) - 1 or text.count("\r") != len(lines) - 1:
            raise ValueError("a header name or value holds a line break")
        return key, (text + "\r\n\r\n").encode("latin-1")

    def _split(self, url: str) -> tuple[Key, str, str]:
        hit = self._urls.get(url)
        if hit is not None:
            return hit
        u = urlsplit(url)
        scheme = u.scheme.lower()
        if scheme not in ("http", "https") or not u.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        port = u.port or (443 if scheme == "https" else 80)
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        host = u.netloc.rpartition("@")[2]
        hit = ((scheme, u.hostname, port), host, target)
        if len(self._urls) >= _URL_CACHE_MAX:
            self._urls.clear()
        self._urls[url] = hit
        return hit

    def _put(self, conn: _Conn) -> None:
        if self.closed:
            conn._close()
            return
        conn.idle_since = self.loop.time()
        self.idle.setdefault(conn.key, []).append(conn)
        self._wake(conn.key)

    def _discard(self, conn: _Conn) -> None:
        if conn not in self.conns:
            return
        self.conns.discard(conn)
        idle = self.idle.get(conn.key)
        if idle and conn in idle:
            idle.remove(conn)
        self.count[conn.key] -= 1
        self._wake(conn.key)

    def _wake(self, key: Key) -> None:
        q = self.waiters.get(key)
        while q:
            w = q.popleft()
            if not w.done():
                w.set_result(None)
                return

    def _idle_conn(self, key: Key) -> _Conn | None:
        idle = self.idle.get(key)
        if idle:
            now = self.loop.time()
            while idle:
                conn = idle.pop()
                transport = conn.transport
                if conn.closed or transport is None or transport.is_closing():
                    continue
                if now - conn.idle_since > self.keepalive_seconds:
                    conn._close()  # the upstream may be closing it right now
                    continue
                conn.reused = True
                return conn
        return None

    async def _acquire(self, key: Key) -> _Conn:
        while True:
            conn = self._idle_conn(key)
            if conn is not None:
                return conn
            if not self.limit or self.count.get(key, 0) < self.limit:
                self.count[key] = self.count.get(key, 0) + 1
                try:
                    conn = await self._connect(key)
                except BaseException:
                    self.count[key] -= 1
                    self._wake(key)
                    raise
                self.conns.add(conn)
                return conn
            w: asyncio.Future[None] = self.loop.create_future()
            self.waiters.setdefault(key, deque()).append(w)
            try:
                await w
            except BaseException:
                if w.done() and not w.cancelled():
                    self._wake(key)  # pass the turn on
                raise

    async def _resolve(self, host: str, port: int) -> list[Any]:
        now = self.loop.time()
        hit = self._dns.get((host, port))
        if hit is not None and hit[0] > now:
            return hit[1]
        infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        self._dns[(host, port)] = (now + DNS_TTL, infos)
        return infos

    async def _connect(self, key: Key) -> _Conn:
        scheme, host, port = key
        async with asyncio.timeout(self.connect_timeout):
            infos = await self._resolve(host, port)
            error: OSError = OSError(f"cannot resolve {host}")
            sock = None
            for info in infos:
                try:
                    sock = self.socket_factory(info)  # refuses a forbidden address
                except OSError as exc:
                    error = exc
                    continue
                try:
                    sock.setblocking(False)
                    if sock.family in (socket.AF_INET, socket.AF_INET6):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    await self.loop.sock_connect(sock, info[4])
                except OSError as exc:
                    sock.close()
                    sock, error = None, exc
                    continue
                except BaseException:
                    sock.close()
                    raise
                break
            if sock is None:
                raise error
            conn = _Conn(self, key)
            tls = self.ssl_context if scheme == "https" else None
            try:
                await self.loop.create_connection(
                    lambda: conn, sock=sock, ssl=tls, server_hostname=host if tls else None
                )
            except BaseException:
                sock.close()
                raise
        return conn


def _plain_socket(info: Any) -> socket.socket:
    family, type_, proto, _, _ = info
    return socket.socket(family=family, type=type_, proto=proto)
