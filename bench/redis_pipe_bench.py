"""Compare EVALSHA throughput: redis-py asyncio pool vs relaygate PipelinedRedis.

Why: the relay's hot path is two EVALSHA calls per request; this isolates the
Redis client cost so the choice of client is backed by a number.

Usage (from the repo root):
    PYTHONPATH=src python bench/redis_pipe_bench.py [-n 20000] [-c 64] [--url redis://...]

Keys live under a random prefix in the chosen db and are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
import uvloop

from relaygate.redispipe import PipelinedRedis

SCRIPT = "local v = redis.call('INCR', KEYS[1]) return {v, ARGV[1]}"

Call = Callable[[], Awaitable[Any]]


async def run_load(call: Call, n: int, concurrency: int) -> float:
    """Run ``n`` calls spread over ``concurrency`` workers; return ops/s."""
    per_worker, extra = divmod(n, concurrency)

    async def worker(count: int) -> None:
        for _ in range(count):
            await call()

    counts = [per_worker + (1 if i < extra else 0) for i in range(concurrency)]
    start = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in counts))
    return n / (time.perf_counter() - start)


async def main(url: str, n: int, concurrency: int, rounds: int) -> None:
    prefix = f"bench:redispipe:{uuid.uuid4().hex}:"
    pool_client = aioredis.Redis.from_url(url)
    pipe = await PipelinedRedis.connect(url)
    try:
        sha = await pool_client.script_load(SCRIPT)
        key_a, key_b = f"{prefix}a", f"{prefix}b"

        async def via_pool() -> Any:
            return await pool_client.evalsha(sha, 1, key_a, "x")

        async def via_pipe() -> Any:
            return await pipe.execute_command("EVALSHA", sha, 1, key_b, "x")

        # Warm up: fills the pool to `concurrency` connections, JITs nothing but
        # gets allocator/socket buffers to steady state for both sides.
        await run_load(via_pool, min(n, 2000), concurrency)
        await run_load(via_pipe, min(n, 2000), concurrency)

        best_pool = best_pipe = 0.0
        for r in range(rounds):
            pool_ops = await run_load(via_pool, n, concurrency)
            pipe_ops = await run_load(via_pipe, n, concurrency)
            best_pool, best_pipe = max(best_pool, pool_ops), max(best_pipe, pipe_ops)
            print(
                f"round {r + 1}: redis-py pool {pool_ops:10.0f} ops/s   "
                f"PipelinedRedis {pipe_ops:10.0f} ops/s   ratio {pipe_ops / pool_ops:5.2f}x"
            )
        print(
            f"best of {rounds} (N={n}, C={concurrency}, uvloop): "
            f"pool {best_pool:.0f} ops/s, pipelined {best_pipe:.0f} ops/s, "
            f"ratio pipelined/pool = {best_pipe / best_pool:.2f}x"
        )
    finally:
        await pool_client.delete(f"{prefix}a", f"{prefix}b")
        await pool_client.aclose()
        await pipe.aclose()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20_000, help="EVALSHA calls per run")
    ap.add_argument("-c", "--concurrency", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--url", default="redis://127.0.0.1:6379/15")
    args = ap.parse_args()
    uvloop.run(main(args.url, args.n, args.concurrency, args.rounds))
