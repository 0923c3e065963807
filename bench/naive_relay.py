"""The "Python ceiling": a naive aiohttp + uvloop pass-through relay with no accounting at all.

It forwards ``POST /v1/chat/completions`` (body and ``Authorization`` untouched) to
``<upstream>/v1/chat/completions`` over one pooled ``aiohttp.ClientSession`` and sends the
answer back: as-is for ordinary requests, chunk by chunk for ``"stream": true``. Whatever a
real relay costs on top of this (auth, quota, usage parsing, logging) is its overhead.

    python bench/naive_relay.py --port 3100 --upstream http://127.0.0.1:8000

``--upstream`` is a base URL and may carry a path prefix, e.g. the nginx mock's stream
variant: ``--upstream http://127.0.0.1:8001/stream`` (see bench/nginx_mock.conf.tmpl).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
from aiohttp import web

PATH = "/v1/chat/completions"
SESSION = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM = web.AppKey("upstream", str)


def is_stream(body: bytes) -> bool:
    # Fast path: compact or ", "-separated JSON. Inside JSON strings quotes are escaped, so
    # these byte patterns cannot come from message content.
    if b'"stream":true' in body or b'"stream": true' in body:
        return True
    if b'"stream"' not in body:
        return False
    try:  # unusual spacing: parse once
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(obj, dict) and obj.get("stream") is True


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    headers = {"Content-Type": "application/json"}
    auth = request.headers.get("Authorization")
    if auth is not None:
        headers["Authorization"] = auth
    session = request.app[SESSION]
    try:
        async with session.post(request.app[UPSTREAM], data=body, headers=headers) as up:
            ctype = up.headers.get("Content-Type", "application/json")
            if up.status != 200 or not is_stream(body):
                data = await up.read()
                return web.Response(status=up.status, body=data, headers={"Content-Type": ctype})
            resp = web.StreamResponse(
                status=up.status, headers={"Content-Type": ctype, "Cache-Control": "no-cache"}
            )
            await resp.prepare(request)
            try:
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
            except aiohttp.ClientError:
                # Upstream died mid-stream: cut the client off the same way.
                if request.transport is not None:
                    request.transport.close()
                return resp
            await resp.write_eof()
            return resp
    except (aiohttp.ClientError, TimeoutError):
        return web.json_response(
            {"error": {"message": "upstream unavailable", "type": "upstream_error"}}, status=502
        )


async def _session_ctx(app: web.Application) -> AsyncIterator[None]:
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=0, ttl_dns_cache=None, keepalive_timeout=60
    )
    session = aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
        auto_decompress=False,
    )
    app[SESSION] = session
    yield
    await session.close()


def build_app(upstream: str) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[UPSTREAM] = upstream.rstrip("/") + PATH
    app.cleanup_ctx.append(_session_ctx)
    app.router.add_post(PATH, chat)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3100)
    p.add_argument("--upstream", default="http://127.0.0.1:8000", help="upstream base URL")
    a = p.parse_args()
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    print(f"naive relay on http://{a.host}:{a.port} -> {a.upstream.rstrip('/')}{PATH}", flush=True)
    web.run_app(
        build_app(a.upstream),
        host=a.host,
        port=a.port,
        access_log=None,
        print=None,
        backlog=4096,
        loop=loop,
    )


if __name__ == "__main__":
    main()
