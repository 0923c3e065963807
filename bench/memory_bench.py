"""Memory: RSS of one relay process with BENCH_MEM_TOKENS (100,000) tokens in its cache.

Creates the tokens straight in PostgreSQL (COPY, hashes from relaygate.credentials, spread
over 100 users, some with model and IP allowlists), starts ``relaygate serve`` (one
process), then presents every key once (``GET /v1/models``: the same cache lookup and
single-flight load as the chat route, without the upstream), and prints the relay's RSS
before and after, and how long the warm-up (every key's first load) took. Targets: < 200 MB
for 100,000 tokens, < 1 GB for 1,000,000 (``BENCH_MEM_TOKENS=1000000``, issue 16; the
warm-up then takes several minutes). Own database and Redis prefix; cleaned up.

Run: ``.venv/bin/python bench/memory_bench.py``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import aiohttp
import asyncpg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common as c

from relaygate.credentials import hash_secret, mask_key, new_token_key

N = int(os.environ.get("BENCH_MEM_TOKENS", "100000"))
USERS = 100
TARGET_MB = 200 if N <= 100_000 else 1000


async def create_tokens() -> list[str]:
    conn = await asyncpg.connect(c.DATABASE_URL)
    try:
        await conn.execute(
            "INSERT INTO users (username, quota_limit) SELECT 'memuser' || g, 1000000000 "
            f"FROM generate_series(1, {USERS}) g"
        )
        uids = [r["id"] for r in await conn.fetch("SELECT id FROM users ORDER BY id")]
        keys = [new_token_key() for _ in range(N)]
        records = []
        for i, key in enumerate(keys):
            models = "gpt-4o-mini,gpt-4o" if i % 10 == 0 else ""
            ips = "10.0.0.0/8\n127.0.0.1" if i % 20 == 0 else ""
            records.append(
                (
                    uids[i % USERS],
                    hash_secret(key),
                    mask_key(key),
                    f"mem-{i}",
                    10**9,
                    bool(models),
                    models,
                    ips,
                )
            )
        await conn.copy_records_to_table(
            "tokens",
            records=records,
            columns=[
                "user_id",
                "key_hash",
                "key_mask",
                "name",
                "quota_limit",
                "model_limits_enabled",
                "model_limits",
                "allow_ips",
            ],
        )
        return keys
    finally:
        await conn.close()


async def warm(url: str, keys: list[str], concurrency: int = 32) -> tuple[int, int]:
    ok = bad = 0
    queue = iter(keys)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok, bad
        for key in queue:
            async with session.get(url, headers={"Authorization": f"Bearer sk-{key}"}) as resp:
                await resp.read()
                if resp.status == 200:
                    ok += 1
                else:
                    bad += 1

    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return ok, bad


def main() -> None:
    procs: list[c.Proc] = []
    with c.bench_space():
        try:
            t0 = time.perf_counter()
            keys = asyncio.run(create_tokens())
            c.log(f"created {N:,} tokens in PostgreSQL in {time.perf_counter() - t0:.1f} s")
            port = c.free_port()
            relay = c.Proc(
                "memory-relay", [c.RELAYGATE, "serve", "--port", str(port)], c.relay_env()
            ).start()
            procs.append(relay)
            c.wait_http(f"http://127.0.0.1:{port}/healthz", relay)
            before = c.rss_mb(relay.pid)
            t0 = time.perf_counter()
            ok, bad = asyncio.run(warm(f"http://127.0.0.1:{port}/v1/models", keys))
            took = time.perf_counter() - t0
            after = c.rss_mb(relay.pid)
            # A second pass is all cache hits: RSS must not grow further.
            asyncio.run(warm(f"http://127.0.0.1:{port}/v1/models", keys[: N // 10]))
            again = c.rss_mb(relay.pid)
            print(
                f"\nmemory: relay RSS {before:.1f} MB at start, {after:.1f} MB with {ok:,} tokens cached "
                f"({bad} refused; warm-up {took:.1f} s, {ok / max(took, 1e-9):,.0f} loads/s), "
                f"{again:.1f} MB after a hit pass; "
                f"{(after - before) * 1024 * 1024 / max(ok, 1):,.0f} bytes per cached token"
            )
            print(
                f"target < {TARGET_MB} MB RSS: {'met' if after < TARGET_MB and again < TARGET_MB else 'MISSED'}"
            )
            c.write_json(
                "memory",
                {
                    "tokens": ok,
                    "refused": bad,
                    "rss_start_mb": before,
                    "rss_cached_mb": after,
                    "rss_after_hits_mb": again,
                    "warmup_s": took,
                },
            )
        finally:
            for p in procs:
                p.stop()


if __name__ == "__main__":
    main()
