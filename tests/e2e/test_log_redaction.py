"""Issue 10 item 4 (red-team #10): no credential reaches the server log, whatever a client
sends. A real ``relaygate serve`` (two workers, so the forked children are covered too);
each malformed form carries a key; afterwards the log is grepped for it."""

from __future__ import annotations

import asyncio
from typing import Any

from ..conftest import free_port
from .procs import Stack

SECRET = "Zq8LmN3vRt6yWb9cXe2fGh5jKp7sTu4wZq8LmN3vRt6yWb9c"

# (raw request) — every one of these makes aiohttp log or answer an error; each holds the key
MALFORMED: list[bytes] = [
    # an invalid header character after the key
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-"
    + SECRET.encode()
    + b"\x01\r\nContent-Length: 2\r\n\r\n{}",
    # a header line over 8190 bytes
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-"
    + SECRET.encode()
    + b"\r\nX-Pad: "
    + b"a" * 9000
    + b"\r\n\r\n",
    # request smuggling shapes
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-api-key: "
    + SECRET.encode()
    + b"\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
    + SECRET.encode()
    + b"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    # NUL in a header, bare LF, obs-fold, a request line with the key in the query
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer sk-"
    + SECRET.encode()
    + b"\x00\r\n\r\n",
    b"GET /v1/models HTTP/1.1\nHost: x\nAuthorization: Bearer sk-" + SECRET.encode() + b"\n\n",
    b"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n sk-"
    + SECRET.encode()
    + b"\r\n\r\n",
    b"GET /v1beta/models/x:generateContent?key="
    + SECRET.encode()
    + b" HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"GET /v1/models?key=" + SECRET.encode() + b"\xff HTTP/9.9\r\n\r\n",
]


async def _send(port: int, raw: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await writer.drain()
    try:
        await asyncio.wait_for(reader.read(65536), 5)
    except TimeoutError:
        pass
    writer.close()


async def test_no_key_reaches_the_log_from_malformed_requests(env: Any, stack: Stack) -> None:
    port = free_port()
    relay = await stack.relay(port, RELAYGATE_WORKERS="2", RELAYGATE_LOG_LEVEL="debug")
    for raw in MALFORMED:
        await _send(port, raw)
    await asyncio.sleep(0.5)
    relay.stop()
    log = relay.log.read_bytes()
    assert b"[redacted]" in log, log[-2000:]  # aiohttp did log these requests, redacted
    for part in (SECRET, SECRET[:16], SECRET[16:32], SECRET[-16:]):
        assert part.encode() not in log, log.decode(errors="replace")[-3000:]
