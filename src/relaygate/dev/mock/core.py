"""The mock's shared state and request flow, used by every provider's routes."""

from __future__ import annotations

import asyncio
import itertools
import secrets
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web

from relaygate.dev.mock.common import (
    CACHE_MAX,
    DROP_AFTER_CHUNKS,
    HOOK_MESSAGES,
    ID_B,
    JSON,
    SLOW_SECONDS,
    SSE_HEADERS,
    TS_B,
    WORDS,
    Hooks,
    MockConfig,
    StreamTpl,
    delay_header,
    error,
)


class MockCore:
    """State and the request flow every provider route shares: ids, the body cache, answer
    text, delays and failure hooks, and sending a cached answer (whole or as a stream)."""

    def __init__(self, cfg: MockConfig) -> None:
        if cfg.prompt_tokens < 0 or cfg.completion_tokens < 0:
            raise ValueError("token counts must be non-negative")
        if cfg.stream_chunks < 1:
            raise ValueError("stream_chunks must be at least 1")
        if cfg.chunk_delay < 0:
            raise ValueError("chunk_delay must be non-negative")
        self.cfg = cfg
        self._prefix = secrets.token_hex(4)
        self._seq = itertools.count(1)
        self._cache: dict[tuple[Any, ...], Any] = {}

    # ---- per-request values

    def new_id(self, prefix: str) -> bytes:
        return f"{prefix}{self._prefix}{next(self._seq):012x}".encode()

    @staticmethod
    def fill(tpl: bytes, rid: bytes, ts: bytes) -> bytes:
        return tpl.replace(TS_B, ts).replace(ID_B, rid)

    def cached(self, key: tuple[Any, ...], build: Callable[[], Any]) -> Any:
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            hit = self._cache[key] = build()
        return hit

    def pieces(self, ct: int) -> tuple[str, ...]:
        """``ct`` words spread over ``stream_chunks`` pieces (some empty if ct is small)."""

        def build() -> tuple[str, ...]:
            words = [WORDS[i % len(WORDS)] + " " for i in range(ct)]
            k = self.cfg.stream_chunks
            return tuple("".join(words[i * ct // k : (i + 1) * ct // k]) for i in range(k))

        pieces: tuple[str, ...] = self.cached(("pieces", ct), build)
        return pieces

    def completion_tokens(self, limit: int | None) -> tuple[int, bool]:
        full = self.cfg.completion_tokens
        if limit is not None and limit < full:
            return limit, True
        return full, False

    def usage(self, ct: int) -> dict[str, int]:
        pt = self.cfg.prompt_tokens
        return {"prompt_tokens": pt, "completion_tokens": ct, "total_tokens": pt + ct}

    # ---- common request flow

    async def pre(
        self, request: web.Request, style: str, hooks: Hooks, stream: bool
    ) -> web.Response | None:
        """Delays and failure hooks; returns an error response or ``None`` to go on."""
        delay = delay_header(request)
        if hooks.slow and (not stream or hooks.fail is not None):
            delay += SLOW_SECONDS
        if delay > 0:
            await asyncio.sleep(delay)
        if hooks.fail is not None:
            return error(style, hooks.fail, HOOK_MESSAGES[hooks.fail])
        return None

    async def send_stream(
        self, request: web.Request, tpl: StreamTpl, rid: bytes, hooks: Hooks
    ) -> web.StreamResponse:
        ts = str(int(time.time())).encode()
        resp = web.StreamResponse(headers=SSE_HEADERS)
        await resp.prepare(request)
        delay = self.cfg.chunk_delay + (SLOW_SECONDS if hooks.slow else 0.0)
        if delay <= 0 and not hooks.drop:
            await resp.write(self.fill(tpl.full, rid, ts))
            await resp.write_eof()
            return resp
        if tpl.head:
            await resp.write(self.fill(tpl.head, rid, ts))
        for n, event in enumerate(tpl.content, 1):
            if delay > 0:
                await asyncio.sleep(delay)
            await resp.write(self.fill(event, rid, ts))
            if hooks.drop and n >= DROP_AFTER_CHUNKS:
                # Abrupt close: the buffered chunks are flushed, the chunked body is never
                # terminated. aiohttp's own write_eof afterwards hits a ConnectionError,
                # which it swallows.
                if request.transport is not None:
                    request.transport.close()
                return resp
        if tpl.tail:
            await resp.write(self.fill(tpl.tail, rid, ts))
        await resp.write_eof()
        return resp

    def reply(self, tpl: bytes, rid: bytes) -> web.Response:
        body = self.fill(tpl, rid, str(int(time.time())).encode())
        return web.Response(body=body, content_type=JSON)
