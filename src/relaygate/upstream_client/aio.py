"""aiohttp's ``ClientSession`` behind the relay's narrow client interface
(relaygate.upstream_client.base): ``RELAYGATE_UPSTREAM_CLIENT=aiohttp``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

import aiohttp

from relaygate import upstreams
from relaygate.config import Settings


class AiohttpResponse:
    __slots__ = ("_resp", "headers", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    def is_eof(self) -> bool:
        return self._resp.content.is_eof()

    async def read(self) -> bytes:
        return await self._resp.read()

    def iter_any(self) -> AsyncIterator[bytes]:
        return self._resp.content.iter_any()

    def release(self) -> None:
        self._resp.release()


class AiohttpClient:
    def __init__(self, settings: Settings) -> None:
        self.session = aiohttp.ClientSession(
            # TLS verified, and every address checked as it is connected (SSRF guard).
            connector=upstreams.connector(settings),
            # A read timeout, not a total one: a total timeout arms a timer per request, and a
            # long stream that keeps producing is legitimate. Exactness does not depend on it
            # (a reservation reaped under a very long request is charged from zero at settle).
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=settings.upstream_connect_timeout,
                sock_read=settings.upstream_timeout,
            ),
            skip_auto_headers=("User-Agent",),
            auto_decompress=False,
        )

    async def post(self, url: str, *, data: bytes, headers: Mapping[str, str]) -> AiohttpResponse:
        return AiohttpResponse(await self.session.post(url, data=data, headers=headers))

    async def close(self) -> None:
        await self.session.close()
