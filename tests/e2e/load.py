"""A small load driver that records exactly which requests succeeded."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import aiohttp

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


@dataclass
class LoadResult:
    ok_rids: list[str] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0

    @property
    def ok(self) -> int:
        return len(self.ok_rids)


async def drive(
    urls: Callable[[], str],
    keys: Sequence[str],
    total: int,
    concurrency: int,
    stream_every: int = 3,
    on_progress: Callable[[int], None] | None = None,
) -> LoadResult:
    """Send ``total`` chat requests; a request counts as successful only if the whole answer
    (including the stream's [DONE]) arrived."""
    result = LoadResult()
    counter = itertools.count()
    done = 0

    async def one(session: aiohttp.ClientSession, i: int) -> None:
        nonlocal done
        key = keys[i % len(keys)]
        stream = stream_every > 0 and i % stream_every == 0
        body = {**CHAT, "stream": stream}
        try:
            async with session.post(
                f"{urls()}/v1/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {key}"},
            ) as resp:
                data = await resp.read()
                result.statuses[resp.status] = result.statuses.get(resp.status, 0) + 1
                complete = resp.status == 200 and (not stream or b"[DONE]" in data)
                if complete:
                    result.ok_rids.append(resp.headers["X-Oneapi-Request-Id"])
        except (TimeoutError, aiohttp.ClientError, OSError):
            result.errors += 1
        done += 1
        if on_progress is not None:
            on_progress(done)

    async def worker(session: aiohttp.ClientSession) -> None:
        while (i := next(counter)) < total:
            await one(session, i)

    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
    ) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return result
