"""Naive pass-throughs like bench/naive_relay.py, but on other upstream HTTP clients.

Why: issue 16 asks which upstream client costs least per request. The server side here is
*identical* to bench/naive_relay.py (aiohttp web + uvloop, same handler shape, same answer
headers, no accounting); only the upstream side changes:

* ``--client fast`` — relaygate's own upstream client (relaygate.upstream_client.h1, what
  ``RELAYGATE_UPSTREAM_CLIENT=fast`` runs), imported from the installed package: the naive
  pass-through "on the same client" that issue 16 compares relaygate with;
* ``--client httptools`` — bench/h1client.py, the measurement prototype that client grew
  from (plain http, no timeouts);
* ``--client pyreqwest`` — pyreqwest (Rust reqwest/hyper, its own tokio runtime);
* ``--client aiosonic`` — aiosonic (pure-Python asyncio client).

    python bench/naive_relay_clients.py --client fast --port 3101 --upstream http://127.0.0.1:8000

pyreqwest and aiosonic are not relaygate dependencies: run this with an interpreter that
has them (bench/ab.py's ``BENCH_AB_CLIENTS_PYTHON``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))

from naive_relay import PATH, is_stream

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _bad_gateway() -> web.Response:
    return web.json_response(
        {"error": {"message": "upstream unavailable", "type": "upstream_error"}}, status=502
    )


def _headers(request: web.Request) -> dict[str, str]:
    headers = {"Content-Type": "application/json"}
    auth = request.headers.get("Authorization")
    if auth is not None:
        headers["Authorization"] = auth
    return headers


def httptools_app(url: str) -> tuple[Handler, Callable[[], Awaitable[None]]]:
    import h1client

    pool = h1client.Pool()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            up = await pool.request("POST", url, body, _headers(request))
        except (OSError, h1client.ResponseError):
            return _bad_gateway()
        try:
            ctype = up.headers.get("Content-Type", "application/json")
            if up.status != 200 or not is_stream(body):
                data = await up.read()
                return web.Response(status=up.status, body=data, headers={"Content-Type": ctype})
            resp = web.StreamResponse(
                status=up.status, headers={"Content-Type": ctype, "Cache-Control": "no-cache"}
            )
            await resp.prepare(request)
            try:
                async for chunk in up.iter_chunks():
                    await resp.write(chunk)
            except h1client.ResponseError:
                if request.transport is not None:
                    request.transport.close()
                return resp
            await resp.write_eof()
            return resp
        except h1client.ResponseError:
            return _bad_gateway()
        finally:
            up.close()

    return chat, pool.close


def fast_app(url: str) -> tuple[Handler, Callable[[], Awaitable[None]]]:
    from relaygate.upstream_client import ERRORS, h1

    pools: list[h1.Pool] = []  # made on the running loop, at the first request

    async def chat(request: web.Request) -> web.StreamResponse:
        if not pools:
            pools.append(h1.Pool())  # relaygate's defaults: 10 s connect, 600 s read timeout
        body = await request.read()
        try:
            up = await pools[0].post(url, data=body, headers=_headers(request))
        except ERRORS:
            return _bad_gateway()
        try:
            ctype = up.headers.get("Content-Type", "application/json")
            if up.status != 200 or not is_stream(body):
                data = await up.read()
                return web.Response(status=up.status, body=data, headers={"Content-Type": ctype})
            resp = web.StreamResponse(
                status=up.status, headers={"Content-Type": ctype, "Cache-Control": "no-cache"}
            )
            await resp.prepare(request)
            try:
                async for chunk in up.iter_any():
                    await resp.write(chunk)
            except ERRORS:
                if request.transport is not None:
                    request.transport.close()
                return resp
            await resp.write_eof()
            return resp
        except ERRORS:
            return _bad_gateway()
        finally:
            up.release()

    async def close() -> None:
        for pool in pools:
            await pool.close()

    return chat, close


def pyreqwest_app(url: str) -> tuple[Handler, Callable[[], Awaitable[None]]]:
    from pyreqwest.client import ClientBuilder

    client = ClientBuilder().http1_only().gzip(False).follow_redirects(False).build()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            req = client.post(url).headers(_headers(request)).body_bytes(body).build_streamed()
            async with req as up:
                ctype = up.get_header("content-type") or "application/json"
                if up.status != 200 or not is_stream(body):
                    data = bytes(await up.bytes())
                    return web.Response(
                        status=up.status, body=data, headers={"Content-Type": ctype}
                    )
                resp = web.StreamResponse(
                    status=up.status, headers={"Content-Type": ctype, "Cache-Control": "no-cache"}
                )
                await resp.prepare(request)
                reader = up.body_reader
                try:
                    while (chunk := await reader.read_chunk()) is not None:
                        await resp.write(bytes(chunk))
                except Exception:
                    if request.transport is not None:
                        request.transport.close()
                    return resp
                await resp.write_eof()
                return resp
        except Exception:
            return _bad_gateway()

    return chat, client.close


def aiosonic_app(url: str) -> tuple[Handler, Callable[[], Awaitable[None]]]:
    import aiosonic

    client = aiosonic.HTTPClient()

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            up: Any = await client.post(url, data=body, headers=_headers(request))
            ctype = up.headers.get("Content-Type", "application/json")
            if up.status_code != 200 or not is_stream(body):
                data = await up.content()
                return web.Response(
                    status=up.status_code, body=data, headers={"Content-Type": ctype}
                )
            resp = web.StreamResponse(
                status=up.status_code,
                headers={"Content-Type": ctype, "Cache-Control": "no-cache"},
            )
            await resp.prepare(request)
            async for chunk in up.read_chunks():
                await resp.write(chunk)
            await resp.write_eof()
            return resp
        except Exception:
            return _bad_gateway()

    async def close() -> None:
        await client.shutdown()

    return chat, close


CLIENTS = {
    "fast": fast_app,
    "httptools": httptools_app,
    "pyreqwest": pyreqwest_app,
    "aiosonic": aiosonic_app,
}


def build_app(client: str, upstream: str) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    handler, close = CLIENTS[client](upstream.rstrip("/") + PATH)

    async def ctx(_app: web.Application) -> AsyncIterator[None]:
        yield
        await close()

    app.cleanup_ctx.append(ctx)
    app.router.add_post(PATH, handler)
    return app


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--client", choices=sorted(CLIENTS), required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3100)
    p.add_argument("--upstream", default="http://127.0.0.1:8000", help="upstream base URL")
    a = p.parse_args()
    import uvloop

    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    print(f"naive relay ({a.client}) on http://{a.host}:{a.port}", flush=True)
    web.run_app(
        build_app(a.client, a.upstream),
        host=a.host,
        port=a.port,
        access_log=None,
        print=None,
        backlog=4096,
        loop=loop,
    )


if __name__ == "__main__":
    main()
