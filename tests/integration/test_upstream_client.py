"""The fast upstream client (relaygate.upstream_client.h1) against real local servers:
keep-alive reuse, connections the upstream closes while pooled, which requests are re-sent
when a kept-alive connection dies (never a POST: it could be answered, and billed, twice),
TLS with a trusted and an untrusted self-signed certificate, the address policy, the
per-host limit, timeouts and cancellation. Both clients are also checked to behave alike
through the narrow interface the relay uses. (The byte-level framing cases are in
tests/unit/test_upstream_client.py.)
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web

from relaygate import upstream_client, upstreams
from relaygate.config import Settings
from relaygate.upstream_client import UpstreamDisconnected, UpstreamProtocolError, h1

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


class RawServer:
    """A TCP server answering from a script: ``handler(reader, writer, n)`` gets each request
    (n counts them over all connections) and returns False to stop the connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self, ssl_context: ssl.SSLContext | None = None) -> RawServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=ssl_context)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                self.requests.append(head + await reader.readexactly(length))
                if not await self.handler(reader, writer, len(self.requests)):
                    return
        finally:
            writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def _answer_ok(_r: asyncio.StreamReader, w: asyncio.StreamWriter, _n: int) -> bool:
    w.write(OK)
    await w.drain()
    return True


@pytest.fixture
async def raw() -> AsyncIterator[Callable[..., Awaitable[RawServer]]]:
    servers: list[RawServer] = []

    async def make(
        handler: Handler = _answer_ok, ssl_context: ssl.SSLContext | None = None
    ) -> RawServer:
        server = await RawServer(handler).start(ssl_context)
        servers.append(server)
        return server

    yield make
    for server in servers:
        await server.stop()


@pytest.fixture
async def pool() -> AsyncIterator[h1.Pool]:
    p = h1.Pool(read_timeout=5)
    yield p
    await p.close()


@pytest.fixture
async def web_upstream() -> AsyncIterator[tuple[str, list[Any]]]:
    """An aiohttp server: /json answers whole, /sse streams three events one write each;
    every request's client address is recorded."""
    peers: list[Any] = []

    async def whole(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        body = await request.read()
        return web.Response(body=b'{"echo":%d}' % len(body), content_type="application/json")

    async def sse(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(3):
            await resp.write(b"data: %d\n\n" % i)
            await asyncio.sleep(0.01)
        await resp.write_eof()
        return resp

    async def slow(request: web.Request) -> web.StreamResponse:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        await asyncio.sleep(0.05)
        return web.Response(body=b"{}", content_type="application/json")

    app = web.Application()
    app.router.add_post("/json", whole)
    app.router.add_post("/sse", sse)
    app.router.add_post("/slow", slow)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", peers
    await runner.cleanup()


async def test_keep_alive_reuses_one_connection(pool, web_upstream) -> None:
    base, peers = web_upstream
    for _ in range(3):
        resp = await pool.post(base + "/json", data=b"12345", headers={"X-A": "1"})
        assert resp.status == 200 and await resp.read() == b'{"echo":5}'
        resp.release()
    resp = await pool.post(base + "/sse", data=b"{}", headers={})
    chunks = [c async for c in resp.iter_any()]
    resp.release()
    assert b"".join(chunks) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert len(chunks) >= 2  # arrived as written, not only at the end
    assert len(set(peers)) == 1, peers


async def test_both_clients_behave_alike(settings, web_upstream) -> None:
    base, _ = web_upstream
    for kind in ("aiohttp", "fast"):
        client = upstream_client.build(settings.replace(upstream_client=kind))
        try:
            resp = await client.post(base + "/json", data=b"{}", headers={})
            assert resp.status == 200
            assert resp.headers.get("content-type", "").startswith("application/json")
            assert await resp.read() == b'{"echo":2}'
            resp.release()
            resp = await client.post(base + "/sse", data=b"{}", headers={})
            assert not resp.is_eof()
            body = b"".join([c async for c in resp.iter_any()])
            assert body.endswith(b"data: 2\n\n") and resp.is_eof()
            resp.release()
        finally:
            await client.close()


async def test_a_pooled_connection_the_upstream_closed_is_discarded(pool, raw) -> None:
    async def answer_then_close(_r: Any, w: asyncio.StreamWriter, _n: int) -> bool:
        w.write(OK)  # keep-alive by default, then closed anyway (an idle timeout)
        await w.drain()
        return False

    server = await raw(answer_then_close)
    url = f"http://127.0.0.1:{server.port}/"
    for _ in range(2):
        resp = await pool.post(url, data=b"{}", headers={})
        assert await resp.read() == b"{}"
        resp.release()
        for _ in range(50):  # until the FIN is seen: the pool drops the connection
            await asyncio.sleep(0.01)
            if not pool.idle.get(("http", "127.0.0.1", server.port)):
                break
    assert server.connections == 2 and len(server.requests) == 2


async def _silent_on_second(r: Any, w: asyncio.StreamWriter, n: int) -> bool:
    """The second request (on the kept-alive connection) is read, then the connection closed
    without an answer: the upstream may have acted on it."""
    if n == 2:
        return False
    w.write(OK)
    await w.drain()
    return True


async def test_a_post_is_never_resent_on_a_dead_kept_alive_connection(pool, raw) -> None:
    server = await raw(_silent_on_second)
    url = f"http://127.0.0.1:{server.port}/"
    resp = await pool.post(url, data=b'{"n":1}', headers={})
    await resp.read()
    resp.release()
    with pytest.raises(UpstreamDisconnected):
        await pool.post(url, data=b'{"n":2}', headers={})
    await asyncio.sleep(0.05)
    assert len(server.requests) == 2  # not re-sent


async def test_an_idempotent_request_is_resent_once(pool, raw) -> None:
    server = await raw(_silent_on_second)
    url = f"http://127.0.0.1:{server.port}/"
    resp = await pool.request("GET", url)
    await resp.read()
    resp.release()
    resp = await pool.request("GET", url)
    assert resp.status == 200 and await resp.read() == b"{}"
    resp.release()
    assert len(server.requests) == 3 and server.connections == 2


async def test_upstream_closing_mid_body_raises(pool, raw) -> None:
    async def short(_r: Any, w: asyncio.StreamWriter, _n: int) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
        await w.drain()
        return False

    server = await raw(short)
    resp = await pool.post(f"http://127.0.0.1:{server.port}/", data=b"{}", headers={})
    got = b""
    with pytest.raises(UpstreamProtocolError):
        async for chunk in resp.iter_any():
            got += chunk
    assert got == b"0123456789"
    resp.release()


async def test_per_host_limit_queues_requests(raw, web_upstream) -> None:
    base, peers = web_upstream
    pool = h1.Pool(limit_per_host=1)
    try:

        async def one() -> bytes:
            resp = await pool.post(base + "/slow", data=b"{}", headers={})
            try:
                return await resp.read()
            finally:
                resp.release()

        assert await asyncio.gather(*(one() for _ in range(4))) == [b"{}"] * 4
        assert len(set(peers)) == 1
    finally:
        await pool.close()


async def test_read_timeout(raw) -> None:
    async def stall(_r: Any, w: asyncio.StreamWriter, _n: int) -> bool:
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n01")
        await w.drain()
        await asyncio.sleep(2)
        return False

    server = await raw(stall)
    pool = h1.Pool(read_timeout=0.1)
    try:
        resp = await pool.post(f"http://127.0.0.1:{server.port}/", data=b"{}", headers={})
        with pytest.raises(TimeoutError):
            await resp.read()
        resp.release()
    finally:
        await pool.close()


async def test_cancelled_request_closes_its_connection(raw) -> None:
    async def never(_r: Any, _w: asyncio.StreamWriter, _n: int) -> bool:
        await asyncio.sleep(2)
        return False

    server = await raw(never)
    pool = h1.Pool()
    task = asyncio.ensure_future(
        pool.post(f"http://127.0.0.1:{server.port}/", data=b"{}", headers={})
    )
    while not server.requests:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.02)
    assert pool.count[("http", "127.0.0.1", server.port)] == 0 and not pool.conns
    await pool.close()


async def test_refused_addresses_are_never_connected(raw) -> None:
    server = await raw()
    pool = h1.Pool(socket_factory=upstreams.guarded_socket_factory(allow_loopback=False))
    try:
        for host in ("127.0.0.1", "localhost"):
            with pytest.raises(upstreams.AddressRefused) as caught:
                await pool.post(f"http://{host}:{server.port}/", data=b"{}", headers={})
            assert upstreams.refusal_of(caught.value) is not None
        assert server.connections == 0
    finally:
        await pool.close()


async def test_tls_with_a_trusted_and_an_untrusted_certificate(raw, self_signed) -> None:
    cert, key = self_signed
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server = await raw(ssl_context=server_context)
    url = f"https://127.0.0.1:{server.port}/"
    trusted = Settings(upstream_ca_file=str(cert))
    pool = h1.Pool(ssl_context=upstream_client.tls_context(trusted))
    untrusted = h1.Pool(ssl_context=upstream_client.tls_context(Settings()))
    try:
        for _ in range(2):
            resp = await pool.post(url, data=b"{}", headers={})
            assert resp.status == 200 and await resp.read() == b"{}"
            resp.release()
        assert server.connections == 1
        with pytest.raises(ssl.SSLCertVerificationError):
            await untrusted.post(url, data=b"{}", headers={})
        assert len(server.requests) == 2  # nothing sent over the unverified connection
    finally:
        await pool.close()
        await untrusted.close()


async def test_connect_timeout_covers_the_tls_handshake(raw) -> None:
    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(2)
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    pool = h1.Pool(ssl_context=ssl.create_default_context(), connect_timeout=0.1)
    try:
        with pytest.raises(TimeoutError):
            await pool.post(f"https://127.0.0.1:{port}/", data=b"{}", headers={})
        assert pool.count[("https", "127.0.0.1", port)] == 0
    finally:
        await pool.close()
        server.close()
