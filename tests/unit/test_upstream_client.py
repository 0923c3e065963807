"""The fast upstream client's protocol handling (relaygate.upstream_client.h1), byte by byte.

A connection is driven through a fake transport, so every way an answer can be cut into
reads is tried exactly (a real socket decides its own cuts): chunked bodies with extensions
and trailers and Content-Length bodies split at every byte boundary, answers that end
early (which must raise after the bytes that did arrive, never end cleanly: a truncated
stream is billed as what was delivered), bytes after the answer, interim 1xx answers,
bodiless answers, back-pressure and the read timeout. tests/integration/test_upstream_client.py
does the same against real servers (keep-alive, TLS, address policy, retries).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from relaygate.upstream_client import UpstreamDisconnected, UpstreamProtocolError, h1

pytestmark = pytest.mark.unit

KEY = ("http", "upstream.test", 80)

CHUNKED = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream\r\n"
    b"Transfer-Encoding: chunked\r\n"
    b"Trailer: X-Checksum\r\n"
    b"\r\n"
    b'7;ext=1;name="quoted value"\r\ndata: a\r\n'
    b"10\r\n\ndata: [DONE]\n\n\n\r\n"
    b"0;last\r\n"
    b"X-Checksum: abc\r\n"
    b"\r\n"
)
CHUNKED_BODY = b"data: a\ndata: [DONE]\n\n\n"
LENGTH = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
)
LENGTH_BODY = b'{"ok":true}'


class FakeTransport:
    """What _Conn uses of a transport; closing it reports the end like a real one."""

    def __init__(self, conn: h1._Conn) -> None:
        self.conn = conn
        self.written: list[bytes] = []
        self.closing = False
        self.paused = 0
        self.resumed = 0

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def writelines(self, parts: Any) -> None:
        self.written.extend(parts)

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            asyncio.get_running_loop().call_soon(self.conn.connection_lost, None)

    def pause_reading(self) -> None:
        self.paused += 1

    def resume_reading(self) -> None:
        self.resumed += 1


async def _conn(pool: h1.Pool | None = None) -> tuple[h1.Pool, h1._Conn, FakeTransport]:
    pool = pool or h1.Pool(read_timeout=None)
    conn = h1._Conn(pool, KEY)
    transport = FakeTransport(conn)
    conn.connection_made(transport)  # type: ignore[arg-type]
    pool.conns.add(conn)
    pool.count[KEY] = pool.count.get(KEY, 0) + 1
    return pool, conn, transport


async def _answer(
    pieces: list[bytes], method: str = "POST", pool: h1.Pool | None = None
) -> tuple[h1.Response, h1._Conn, FakeTransport, h1.Pool]:
    pool, conn, transport = await _conn(pool)
    head = conn.send(b"%s / HTTP/1.1\r\n\r\n" % method.encode(), b"", method == "HEAD")
    for piece in pieces:
        if piece:
            conn.data_received(piece)
    return await head, conn, transport, pool


async def _body(resp: h1.Response) -> bytes:
    return b"".join([chunk async for chunk in resp.iter_any()])


def _splits(raw: bytes) -> list[list[bytes]]:
    return [[raw[:i], raw[i:]] for i in range(1, len(raw))]


async def test_chunked_with_extensions_and_trailers_split_at_every_byte() -> None:
    for pieces in [*_splits(CHUNKED), [CHUNKED[i : i + 1] for i in range(len(CHUNKED))]]:
        resp, conn, transport, pool = await _answer(pieces)
        assert resp.status == 200
        assert resp.headers["content-type"] == "text/event-stream"
        assert resp.headers.get("Content-Type") == "text/event-stream"
        assert await _body(resp) == CHUNKED_BODY
        assert resp.is_eof()
        resp.release()
        assert pool.idle[KEY] == [conn] and not transport.closing  # kept for reuse


async def test_content_length_split_at_every_byte() -> None:
    for pieces in _splits(LENGTH):
        resp, conn, _transport, pool = await _answer(pieces)
        assert await resp.read() == LENGTH_BODY
        assert resp.content_type == "application/json"
        resp.release()
        assert pool.idle[KEY] == [conn]


async def test_whole_answer_in_one_read_is_eof_at_once() -> None:
    resp, *_ = await _answer([LENGTH])
    assert resp.is_eof()  # the relay's whole-answer shortcut relies on this
    assert await resp.read() == LENGTH_BODY


async def test_connection_close_is_not_reused() -> None:
    raw = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi"
    resp, _conn, transport, pool = await _answer([raw])
    assert await resp.read() == b"hi"
    resp.release()
    assert transport.closing and not pool.idle.get(KEY)


async def test_http10_is_not_reused() -> None:
    resp, _conn, transport, _pool = await _answer(
        [b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi"]
    )
    assert await resp.read() == b"hi"
    resp.release()
    assert transport.closing


@pytest.mark.parametrize(
    ("raw", "delivered"),
    [
        (LENGTH[:-3], LENGTH_BODY[:-3]),  # Content-Length not reached
        (CHUNKED[: CHUNKED.index(b"0;last")], CHUNKED_BODY),  # no last chunk
        (CHUNKED[: CHUNKED.index(b"X-Checksum: abc")], CHUNKED_BODY),  # trailers cut
        (CHUNKED[: CHUNKED.index(b"a\r\n") + 1], b"data: a"),  # inside a chunk
    ],
)
async def test_upstream_closing_mid_body_raises_after_what_arrived(
    raw: bytes, delivered: bytes
) -> None:
    resp, conn, _transport, pool = await _answer([raw])
    got = b""
    conn.connection_lost(None)  # a clean FIN, early
    with pytest.raises(UpstreamProtocolError, match="mid-answer"):
        async for chunk in resp.iter_any():
            got += chunk
    assert got == delivered and not resp.is_eof()
    resp.release()
    assert not pool.idle.get(KEY) and pool.count[KEY] == 0


async def test_upstream_closing_mid_body_fails_read() -> None:
    resp, conn, *_ = await _answer([LENGTH[:-1]])
    conn.connection_lost(None)
    with pytest.raises(UpstreamProtocolError):
        await resp.read()


async def test_read_until_close_body_ends_at_a_clean_close_only() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it"
    resp, conn, *_ = await _answer([raw])
    conn.connection_lost(None)
    assert await resp.read() == b"all of it"
    resp, conn, *_ = await _answer([raw])
    conn.connection_lost(ConnectionResetError())
    with pytest.raises(UpstreamProtocolError):
        await resp.read()


async def test_head_closed_before_any_answer_raises() -> None:
    _pool, conn, _t = await _conn()
    head = conn.send(b"POST / HTTP/1.1\r\n\r\n", b"{}", False)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Le")
    conn.connection_lost(None)
    with pytest.raises(UpstreamProtocolError):
        await head


async def test_reused_connection_closed_before_answering_is_disconnected() -> None:
    _pool, conn, _t = await _conn()
    conn.reused = True
    head = conn.send(b"POST / HTTP/1.1\r\n\r\n", b"{}", False)
    conn.connection_lost(None)
    with pytest.raises(UpstreamDisconnected):
        await head


async def test_bytes_after_the_answer_keep_it_but_close_the_connection() -> None:
    pipelined = LENGTH + b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nbad"
    for pieces in ([pipelined], [LENGTH + b"H", b"TTP/1.1 200 OK\r\n"], [LENGTH, b"garbage"]):
        resp, _conn, transport, pool = await _answer(list(pieces))
        assert await resp.read() == LENGTH_BODY
        resp.release()
        assert transport.closing and not pool.idle.get(KEY)


async def test_bytes_while_idle_close_the_connection() -> None:
    resp, conn, transport, pool = await _answer([LENGTH])
    await resp.read()
    resp.release()
    assert pool.idle[KEY] == [conn]
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    assert transport.closing
    await asyncio.sleep(0)
    assert not pool.idle.get(KEY) and pool.count[KEY] == 0


async def test_interim_answers_come_before_the_answer() -> None:
    raw = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + LENGTH
    for pieces in _splits(raw):
        resp, conn, _t, pool = await _answer(pieces)
        assert resp.status == 200 and "link" not in resp.headers
        assert await resp.read() == LENGTH_BODY
        resp.release()
        assert pool.idle[KEY] == [conn]


async def test_switching_protocols_is_refused() -> None:
    _pool, conn, transport = await _conn()
    head = conn.send(b"POST / HTTP/1.1\r\n\r\n", b"", False)
    conn.data_received(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")
    with pytest.raises(UpstreamProtocolError):
        await head
    assert transport.closing


@pytest.mark.parametrize("status", [204, 304])
async def test_bodiless_statuses_end_at_their_head(status: int) -> None:
    raw = b"HTTP/1.1 %d X\r\nContent-Length: 5\r\n\r\n" % status if status == 304 else b""
    raw = raw or b"HTTP/1.1 204 No Content\r\n\r\n"
    resp, conn, _t, pool = await _answer([raw])
    assert resp.status == status and await resp.read() == b"" and resp.is_eof()
    resp.release()
    assert pool.idle[KEY] == [conn]


async def test_head_answer_has_no_body_and_is_not_reused() -> None:
    raw = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"
    resp, _conn, transport, _pool = await _answer([raw], method="HEAD")
    assert resp.headers["content-length"] == "100"
    assert await resp.read() == b"" and resp.is_eof()
    resp.release()
    assert transport.closing


async def test_malformed_answer_raises() -> None:
    _pool, conn, transport = await _conn()
    head = conn.send(b"POST / HTTP/1.1\r\n\r\n", b"", False)
    conn.data_received(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhi")
    with pytest.raises(UpstreamProtocolError, match="bad upstream response"):
        await head
    assert transport.closing


async def test_bad_chunk_size_mid_body_raises_after_what_arrived() -> None:
    raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\nzz\r\n"
    resp, *_ = await _answer([raw])
    got = []
    with pytest.raises(UpstreamProtocolError):
        async for chunk in resp.iter_any():
            got.append(chunk)
    assert got == [b"hi"]


async def test_slow_reader_pauses_the_upstream() -> None:
    resp, conn, transport, _pool = await _answer(
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    )
    piece = b"%x\r\n%s\r\n" % (h1.HIGH_WATER, b"x" * h1.HIGH_WATER)
    conn.data_received(piece)
    assert transport.paused == 1 and conn.paused
    chunk = await resp.iter_any().__anext__()
    assert len(chunk) == h1.HIGH_WATER
    assert transport.resumed == 1 and not conn.paused
    conn.data_received(b"0\r\n\r\n")
    assert await resp.read() == b""


async def test_headers_are_case_insensitive_and_repeated_ones_joined() -> None:
    raw = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 0\r\n\r\n"
    resp, *_ = await _answer([raw])
    assert resp.headers["X-A"] == "1, 2" and "x-A" in resp.headers and len(resp.headers) == 2
    assert resp.headers.get("missing", "d") == "d"


async def test_read_timeout_fails_a_silent_upstream() -> None:
    pool = h1.Pool(read_timeout=0.05)
    _pool, conn, transport = await _conn(pool)
    head = conn.send(b"POST / HTTP/1.1\r\n\r\n", b"", False)
    with pytest.raises(TimeoutError):
        await head
    assert transport.closing


async def test_read_timeout_mid_body() -> None:
    pool = h1.Pool(read_timeout=0.05)
    resp, _conn, transport, _pool = await _answer([LENGTH[:-2]], pool=pool)
    with pytest.raises(TimeoutError):
        await resp.read()
    assert transport.closing


async def test_request_head_is_checked_for_line_breaks() -> None:
    pool = h1.Pool()
    with pytest.raises(ValueError, match="line break"):
        await pool.request("POST", "http://upstream.test/", b"{}", {"X-A": "1\r\nX-Evil: 2"})
    with pytest.raises(ValueError):
        await pool.request("POST", "ftp://upstream.test/", b"{}", {})
    await pool.close()


async def test_request_bytes() -> None:
    pool, conn, transport = await _conn()
    conn.idle_since = asyncio.get_running_loop().time()
    pool.idle[KEY] = [conn]
    task = asyncio.ensure_future(
        pool.request(
            "POST", "http://upstream.test/v1/chat?x=1", b"{}", {"Authorization": "Bearer k"}
        )
    )
    await asyncio.sleep(0)
    assert transport.written == [
        b"POST /v1/chat?x=1 HTTP/1.1\r\nHost: upstream.test\r\nContent-Length: 2\r\n"
        b"Authorization: Bearer k\r\n\r\n{}"
    ]
    conn.data_received(LENGTH)
    resp = await task
    assert await resp.read() == LENGTH_BODY


class Sink:
    """What ``stream_to`` pushes: the pieces, the end, and a switch to ask for a pause."""

    def __init__(self, take: bool = True) -> None:
        self.pieces: list[bytes] = []
        self.ends: list[BaseException | None] = []
        self.take = take

    def data(self, piece: bytes) -> bool:
        self.pieces.append(piece)
        return self.take

    def end(self, error: BaseException | None) -> None:
        self.ends.append(error)


async def test_pushed_body_split_at_every_byte_arrives_whole_and_in_order() -> None:
    for pieces in [*_splits(CHUNKED), [CHUNKED[i : i + 1] for i in range(len(CHUNKED))]]:
        pool, conn, transport = await _conn()
        head = conn.send(b"POST / HTTP/1.1\r\n\r\n", b"", False)
        rest = list(pieces)
        while not head.done():
            conn.data_received(rest.pop(0))
        resp = await head
        sink = Sink()
        resp.stream_to(sink.data, sink.end)  # what was buffered first, at once
        for piece in rest:
            conn.data_received(piece)
        assert b"".join(sink.pieces) == CHUNKED_BODY and sink.ends == [None]
        resp.release()
        assert pool.idle[KEY] == [conn] and not transport.closing


async def test_pushed_answer_that_had_ended_ends_at_once() -> None:
    resp, *_ = await _answer([CHUNKED])
    sink = Sink()
    resp.stream_to(sink.data, sink.end)
    assert sink.pieces == [CHUNKED_BODY] and sink.ends == [None]


async def test_pushed_answer_cut_off_ends_with_the_error_after_what_arrived() -> None:
    raw = CHUNKED[: CHUNKED.index(b"a\r\n") + 1]
    resp, conn, _transport, pool = await _answer([raw])
    sink = Sink()
    resp.stream_to(sink.data, sink.end)
    conn.connection_lost(None)
    assert sink.pieces == [b"data: a"]
    assert len(sink.ends) == 1 and isinstance(sink.ends[0], UpstreamProtocolError)
    resp.release()
    assert not pool.idle.get(KEY)


async def test_pushed_answer_read_timeout_ends_with_timeout() -> None:
    pool = h1.Pool(read_timeout=0.05)
    resp, _conn, transport, _pool = await _answer([LENGTH[:-2]], pool=pool)
    sink = Sink()
    resp.stream_to(sink.data, sink.end)
    for _ in range(100):
        if sink.ends:
            break
        await asyncio.sleep(0.01)
    assert len(sink.ends) == 1 and isinstance(sink.ends[0], TimeoutError)
    assert transport.closing


async def test_pushed_sink_that_asks_for_a_pause_pauses_the_upstream_until_resumed() -> None:
    resp, conn, transport, _pool = await _answer(
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    )
    sink = Sink(take=False)
    resp.stream_to(sink.data, sink.end)
    conn.data_received(b"2\r\nhi\r\n")
    assert sink.pieces == [b"hi"] and transport.paused == 1 and conn.paused
    sink.take = True
    resp.resume()
    assert transport.resumed == 1 and not conn.paused
    conn.data_received(b"0\r\n\r\n")
    assert sink.ends == [None]


async def test_pushed_after_a_buffered_pause_resumes_reading() -> None:
    resp, conn, transport, _pool = await _answer(
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    )
    conn.data_received(b"%x\r\n%s\r\n" % (h1.HIGH_WATER, b"x" * h1.HIGH_WATER))
    assert conn.paused  # nobody was reading yet
    sink = Sink()
    resp.stream_to(sink.data, sink.end)
    assert len(sink.pieces[0]) == h1.HIGH_WATER and not conn.paused and transport.resumed == 1


async def test_released_pushed_answer_pushes_nothing_more() -> None:
    resp, conn, transport, _pool = await _answer(
        [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"]
    )
    sink = Sink()
    resp.stream_to(sink.data, sink.end)
    resp.release()  # the client went away
    conn.data_received(b"2\r\nhi\r\n")
    assert sink.pieces == [] and sink.ends == [] and transport.closing
