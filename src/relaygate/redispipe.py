"""Auto-pipelined, multiplexed Redis connection for the relay hot path.

Why this exists: every relayed HTTP request runs two EVALSHA calls.  Through
redis-py's pooled asyncio client each call checks a connection out of the pool,
writes, awaits its own reply and checks it back in; measured on the target box
that capped the relay at ~0.40x of a naive relay.  Funnelling the commands of
*all* concurrent coroutines through ONE connection per process, writing them
with a single ``transport.write`` per event-loop tick and parsing replies with
hiredis, reached 0.76-0.86x.  Redis answers strictly in request order, so a FIFO
of futures is all the bookkeeping needed.

Only the subset of behaviour the hot path needs is implemented: no pub/sub, no
MULTI/WATCH (they are connection-stateful and would leak between callers), no
blocking commands (they would stall every other caller), no response callbacks
(replies are raw RESP2: ``bytes``, ``int``, ``list``, ``None``).

URLs are read by redis-py itself (:func:`parse_redis_url`), so this connection and the pooled
client always agree: ``redis://``, ``unix://`` and ``rediss://`` (TLS, with redis-py's
``ssl_*`` query arguments and the ``SSLContext`` redis-py builds from them).

Policies (documented here because callers depend on them):

* **Disconnected:** a call made while the connection is down *waits* for the
  background reconnect for up to ``connect_timeout`` seconds and then fails
  with :class:`redis.exceptions.ConnectionError`.  A command is never buffered
  while disconnected, so a call that failed was never sent.
* **Dropped mid-flight:** every call already written (or buffered) on the lost
  socket fails immediately with ``ConnectionError``; it may or may not have been
  executed by Redis.  Reconnection retries with exponential backoff 0.05s -> 2s.
* **Saturation:** when ``max_pending`` calls are in flight (plus callers
  waiting for a reconnect), new calls *fail fast* with
  ``ConnectionError("redis pipeline saturated ...")`` rather than queueing,
  so overload sheds load instead of growing latency and memory without bound.
* **Cancellation:** a cancelled caller's command stays in the FIFO; its reply is
  read and discarded, so reply ordering for everybody else is preserved.
* **Deadline:** every call is answered or failed within ``command_timeout``. Redis
  answers in order, so one watchdog timer per connection (not one timer per call) checks
  the oldest unanswered command; when it is overdue, the server is stalled or gone: the
  connection is dropped, every call on it fails with :class:`redis.exceptions.TimeoutError`
  (it may or may not have run), and the reconnect starts. A reconnect's handshake includes a
  PING, so a server that accepts connections but does not answer is not taken back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import hiredis
from redis.exceptions import ConnectionError, InvalidResponse, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relaygate.redisproto import RedisTarget, pack, parse_redis_url, reply_error

__all__ = ["PipelinedRedis", "RedisTarget", "pack", "parse_redis_url", "reply_error"]

log = logging.getLogger(__name__)

_NOT_ENOUGH_DATA = object()
_pack_command = hiredis.pack_command
_BACKOFF_MIN = 0.05
_BACKOFF_MAX = 2.0


class _PipeProtocol(asyncio.Protocol):
    """One socket's state: write buffer, FIFO of reply futures, hiredis reader.

    Kept per connection so a reconnect starts from a clean slate and a stale
    reply can never be matched to a future of the next connection.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        # replyError turns "-ERR ..." into redis-py's own exception classes
        # (NoScriptError for NOSCRIPT, ResponseError otherwise, ...).
        self._reader = hiredis.Reader(
            protocolError=InvalidResponse,
            replyError=reply_error,
            notEnoughData=_NOT_ENOUGH_DATA,
        )
        self.pending: deque[asyncio.Future[Any]] = deque()
        self.sent_at: deque[float] = deque()  # loop time of each pending command, in order
        self.stalled: str | None = None  # why the watchdog dropped this connection
        self._buf: list[bytes] = []
        self._buffered = 0  # commands in _buf (the rest of ``pending`` is on the socket)
        self._flush_scheduled = False
        # Resolved when this tick's buffer has been handed to the socket (see ``written``).
        self._written: asyncio.Future[None] | None = None
        # What ``written`` returns when nothing is buffered: already on the socket.
        self._on_socket: asyncio.Future[None] = loop.create_future()
        self._on_socket.set_result(None)
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = loop.create_future()
        # Called synchronously from connection_lost so the owner stops routing
        # new calls to this dead socket in the same tick.
        self.on_lost: Callable[[], None] | None = None

    def submit(self, packed: list[bytes]) -> asyncio.Future[Any]:
        """Queue an already packed command; the flush happens once per tick."""
        if self.transport is None:
            raise ConnectionError("redis connection lost")
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._buf.extend(packed)
        self._buffered += 1
        self.pending.append(fut)
        self.sent_at.append(self._loop.time())
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)
        return fut

    def written(self) -> asyncio.Future[None]:
        """A future resolved once everything queued so far is written to the socket (or the
        socket is gone): at the flush that ends this loop tick, shared by all its callers.

        When no reply is outstanding (every pending command is still in the buffer: a quiet
        connection, e.g. one request at a time), the buffer is written now and the future
        returned is already resolved. Why: the caller (the relay, before it answers) would
        otherwise wait for the end of the loop pass and then for its own wake-up, two loop
        iterations on the request's path, to save a write syscall that nothing else shares.
        Under load replies are outstanding, so the tick's single write stays shared.
        """
        if not self._buf:
            return self._on_socket
        if self._buffered == len(self.pending):
            self._flush()
            return self._on_socket
        if self._written is None:
            self._written = self._loop.create_future()
            if not self._flush_scheduled:
                self._flush_scheduled = True
                self._loop.call_soon(self._flush)
        return self._written

    def quiet(self) -> bool:
        return self._buffered == len(self.pending)

    def _flush(self) -> None:
        self._flush_scheduled = False
        buf = self._buf
        if buf and self.transport is not None:
            self._buf = []
            self._buffered = 0
            self.transport.write(buf[0] if len(buf) == 1 else b"".join(buf))
        self._release_writers()

    def _release_writers(self) -> None:
        written, self._written = self._written, None
        if written is not None and not written.done():
            written.set_result(None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # cast, not isinstance: uvloop's transports do not subclass asyncio.Transport.
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        pending = self.pending
        while True:
            try:
                reply = reader.gets()
            except InvalidResponse as exc:
                log.error("redis protocol error, dropping connection: %s", exc)
                self._abort()
                return
            if reply is _NOT_ENOUGH_DATA:
                return
            if not pending:
                log.error("unsolicited redis reply, dropping connection: %r", reply)
                self._abort()
                return
            fut = pending.popleft()
            self.sent_at.popleft()
            if fut.done():  # caller was cancelled: reply consumed and discarded
                continue
            if isinstance(reply, RedisError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def stall(self, reason: str) -> None:
        """Drop the connection because the server stopped answering: pending calls fail with
        a timeout rather than wait for a reply that may never come."""
        self.stalled = reason
        self._abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._buf = []
        self._buffered = 0
        self._release_writers()
        pending, self.pending = self.pending, deque()
        self.sent_at = deque()
        reason = f"redis connection lost: {exc}" if exc else "redis connection closed"
        error: type[RedisError] = ConnectionError
        if self.stalled is not None:
            reason, error = self.stalled, RedisTimeoutError
        for fut in pending:
            if not fut.done():
                fut.set_exception(error(reason))
        if not self.lost.done():
            self.lost.set_result(None)
        if self.on_lost is not None:
            self.on_lost()


class PipelinedRedis:
    """One multiplexed, auto-pipelined Redis connection (see module docstring)."""

    def __init__(
        self, target: RedisTarget, max_pending: int, connect_timeout: float, command_timeout: float
    ) -> None:
        self._target = target
        self._max_pending = max_pending
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._watchdog: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._pack: Callable[..., list[bytes]] = pack
        self._proto: _PipeProtocol | None = None
        self._ready = asyncio.Event()
        self._waiting = 0
        self._closed = False
        self._reconnect_task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        max_pending: int = 100_000,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
    ) -> PipelinedRedis:
        """Connect (AUTH + SELECT + PING) now, so misconfiguration fails at startup."""
        self = cls(parse_redis_url(url), max_pending, connect_timeout, command_timeout)
        self._install(await self._open())
        self._arm_watchdog()
        return self

    def _arm_watchdog(self) -> None:
        period = max(0.01, min(self._command_timeout / 4, 0.25))
        self._watchdog = self._loop.call_later(period, self._check_deadline)

    def _check_deadline(self) -> None:
        """Fail the connection whose oldest unanswered command is past the deadline."""
        if self._closed:
            return
        proto = self._proto
        if proto is not None and proto.sent_at:
            late = self._loop.time() - proto.sent_at[0]
            if late > self._command_timeout:
                log.warning("redis did not answer within %.2fs; reconnecting", late)
                proto.stall(f"redis did not answer within {self._command_timeout}s")
        self._arm_watchdog()

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Send one command, return its raw reply; ``options`` are accepted and ignored."""
        cmd = args[0]
        if cmd.__class__ is str and " " not in cmd:
            # The hot path (EVALSHA with str/int/bytes arguments): hiredis packs the tuple in
            # C, skipping the per-argument Python pass. Same bytes as ``self._pack``, which is
            # hiredis.pack_command on the same arguments after converting bytearray/memoryview;
            # anything hiredis refuses goes the long way below.
            try:
                packed = [_pack_command(args)]
            except TypeError:
                packed = self._pack(*args)  # converts, or raises DataError
        else:
            packed = self._pack(*args)  # DataError before anything is queued
        proto = self._proto
        if proto is None:
            proto = await self._wait_connected()
        if len(proto.pending) + self._waiting >= self._max_pending:
            raise ConnectionError(f"redis pipeline saturated ({self._max_pending} calls in flight)")
        return await proto.submit(packed)

    def send(self, *args: Any) -> asyncio.Future[Any] | None:
        """Queue one command without a coroutine of its own; the future is its reply. None
        when the connection is down or saturated: the caller then takes the ordinary
        ``execute_command`` path, which waits for a reconnect. (A hot-path shortcut: the
        coroutine layers of ``execute_command`` cost more than the queueing itself.)
        """
        proto = self._proto
        if proto is None or len(proto.pending) + self._waiting >= self._max_pending:
            return None
        try:
            packed = [_pack_command(args)]
        except TypeError:
            packed = self._pack(*args)
        return proto.submit(packed)

    def written(self) -> asyncio.Future[None]:
        """Resolves once everything queued so far is on the socket: at the flush that ends
        this loop tick, together with every other caller's commands. For a caller that must
        not act before its command reached Redis (the relay answers its client only once the
        settle is written) without giving up the batching."""
        proto = self._proto
        if proto is None:
            done: asyncio.Future[None] = self._loop.create_future()
            done.set_result(None)
            return done
        return proto.written()

    def quiet(self) -> bool:
        """No reply outstanding but those of commands not yet written (see ``written``)."""
        proto = self._proto
        return proto is not None and proto.quiet()

    async def aclose(self) -> None:
        """Close for good; in-flight calls and reconnect waiters get ConnectionError."""
        self._closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect_task
            self._reconnect_task = None
        proto, self._proto = self._proto, None
        self._ready.set()  # wake waiters; they see _proto is None and fail
        if proto is not None and proto.transport is not None:
            proto.transport.close()
            await proto.lost

    async def _wait_connected(self) -> _PipeProtocol:
        if self._closed:
            raise ConnectionError("PipelinedRedis is closed")
        if self._waiting >= self._max_pending:
            raise ConnectionError("redis pipeline saturated (waiting for reconnect)")
        self._waiting += 1
        wait = min(self._connect_timeout, self._command_timeout)
        try:
            async with asyncio.timeout(wait):
                await self._ready.wait()
        except TimeoutError:
            raise ConnectionError(f"redis unavailable: no connection within {wait}s") from None
        finally:
            self._waiting -= 1
        if self._proto is None:
            raise ConnectionError("redis connection unavailable")
        return self._proto

    async def _open(self) -> _PipeProtocol:
        """Open a socket and run AUTH/SELECT on it before anyone else can use it."""
        t = self._target
        proto = _PipeProtocol(self._loop)
        handshake: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(self._connect_timeout):
                if t.path is not None:
                    await self._loop.create_unix_connection(lambda: proto, t.path)
                else:
                    # With ``ssl`` the handshake (and the certificate check) is part of the
                    # connect, inside the same deadline.
                    await self._loop.create_connection(lambda: proto, t.host, t.port, ssl=t.tls)
                if t.password is not None:
                    auth = (t.username, t.password) if t.username else (t.password,)
                    handshake.append(proto.submit(self._pack("AUTH", *auth)))
                if t.db:
                    handshake.append(proto.submit(self._pack("SELECT", t.db)))
                handshake.append(proto.submit(self._pack("PING")))
                for fut in handshake:
                    await fut
        except TimeoutError:
            self._discard(proto, handshake)
            raise ConnectionError(
                f"redis connect timed out after {self._connect_timeout}s"
            ) from None
        except OSError as exc:  # refused, unreachable, TLS refused: redis-py's ConnectionError
            self._discard(proto, handshake)
            raise ConnectionError(f"redis connect to {t.where} failed: {exc}") from exc
        except BaseException:
            self._discard(proto, handshake)
            raise
        return proto

    @staticmethod
    def _discard(proto: _PipeProtocol, handshake: list[asyncio.Future[Any]]) -> None:
        # Cancel rather than let connection_lost fail them: nobody awaits them
        # any more, and unretrieved exceptions would be logged as noise.
        for fut in handshake:
            fut.cancel()
        proto._abort()

    def _install(self, proto: _PipeProtocol) -> None:
        if proto.transport is None:  # died between handshake and install
            raise ConnectionError("redis connection lost during connect")
        self._proto = proto
        self._ready.set()
        proto.on_lost = lambda: self._on_lost(proto)

    def _on_lost(self, proto: _PipeProtocol) -> None:
        if self._proto is not proto or self._closed:
            return
        self._proto = None
        self._ready.clear()
        log.warning("redis connection lost; reconnecting")
        self._reconnect_task = self._loop.create_task(self._reconnect())

    async def _reconnect(self) -> None:
        """Retry forever (until aclose) with capped exponential backoff."""
        delay = _BACKOFF_MIN
        while not self._closed:
            try:
                proto = await self._open()
                if self._closed:
                    proto._abort()
                    return
                self._install(proto)
            except (OSError, RedisError) as exc:
                log.warning("redis reconnect failed (%s); retrying in %.2fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            log.info("redis reconnected")
            return
