"""Issue 14 item 3: every ledger, cache, upstream and flusher-stream metric after known
traffic, scraped from the in-process relay (real Redis and PostgreSQL)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from relaygate.appkeys import RUNTIME
from tests.conftest import free_port

from .helpers import CHAT, bearer, refresh


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, tuple(sorted(labels.items()))), 0.0)


def total(text: str, name: str) -> float:
    return sum(v for (n, _), v in samples(text).items() if n == name)


async def scrape(relay: TestClient) -> str:
    resp = await relay.get("/metrics")
    assert resp.status == 200
    return await resp.text()


async def test_ledger_upstream_cache_and_stream_metrics(
    env: Any, relay: TestClient, mock_upstream: str
) -> None:
    uid, _ = await env.root_user()
    good = await env.admin.create_channel("mock", mock_upstream, "k", "gpt-4o-mini")
    dead = await env.admin.create_channel("dead", f"http://127.0.0.1:{free_port()}", "k", "m-dead")
    await env.admin.set_option("ModelRatio", '{"m-dead": 1}')
    await refresh(relay)
    rich = await env.admin.create_token(uid, "rich", remain_quota=10**8)
    poor = await env.admin.create_token(uid, "poor", remain_quota=1)
    for _ in range(3):
        resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(rich.key))
        assert resp.status == 200
    resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(poor.key))
    assert resp.status == 429
    dead_body = {**CHAT, "model": "m-dead"}
    resp = await relay.post("/v1/chat/completions", json=dead_body, headers=bearer(rich.key))
    assert resp.status >= 500

    text = await scrape(relay)
    # ledger
    assert value(text, "relaygate_ledger_reserves_total") == 4  # 3 answered + the dead channel
    assert value(text, "relaygate_ledger_settles_total") == 3
    assert value(text, "relaygate_ledger_refunds_total") == 1
    assert value(text, "relaygate_ledger_rejections_total", reason="token_quota") == 1
    used = int(await env.redis.hget(env.keys.token(uid, rich.id), "used"))
    rt = relay.app[RUNTIME]
    group = next(iter(rt.cache._by_hash.values())).group
    assert value(text, "relaygate_quota_charged_total", model="gpt-4o-mini", group=group) == used
    # upstream: latency per channel, errors per channel, health
    gid, did = str(good), str(dead)
    assert value(text, "relaygate_upstream_seconds_count", channel=gid) == 3
    assert value(text, "relaygate_upstream_errors_total", channel=did, kind="unreachable") == 1
    assert value(text, "relaygate_upstream_errors_total", channel=gid, kind="unreachable") == 0
    assert value(text, "relaygate_channel_healthy", channel=gid) == 1
    assert value(text, "relaygate_channel_healthy", channel=did) == 0
    assert value(text, "relaygate_relay_overhead_seconds_count") == 3
    assert value(text, "relaygate_channels") == 2
    # cache: two tokens loaded once each, every other authentication a hit
    hits = value(text, "relaygate_token_cache_hits_total")
    loads = value(text, "relaygate_token_cache_loads_total")
    assert (hits, loads) == (3, 2)
    assert value(text, "relaygate_token_cache_hit_ratio") == hits / (hits + loads)
    assert value(text, "relaygate_token_cache_entries") == 2
    # requests: every one of the five chats counted by status and timed
    route = "/v1/chat/completions"
    assert value(text, "relaygate_http_requests_total", route=route, status="200") == 3
    assert value(text, "relaygate_http_requests_total", route=route, status="429") == 1
    assert value(text, "relaygate_http_request_seconds_count", route=route) == 5
    assert value(text, "relaygate_http_request_seconds_bucket", route=route, le="+Inf") == 5
    # streams (no flusher here): the three usage events wait, none delivered
    assert total(text, "relaygate_flusher_stream_length") == 3
    assert total(text, "relaygate_flusher_pending") == 0
    shard = str(env.keys.shard_of(uid))
    assert value(text, "relaygate_flusher_stream_length", shard=shard) == 3
    assert value(text, "relaygate_flusher_lag_seconds", shard=shard) >= 0
    assert value(text, "relaygate_usage_backlog") == 3
    # invalidations: a management write reaches the cache through pub/sub
    before = value(text, "relaygate_token_cache_invalidations_total")
    await env.admin.update_token(rich.id, {"name": "renamed"})
    for _ in range(100):  # a polling deadline
        text = await scrape(relay)
        if value(text, "relaygate_token_cache_invalidations_total") > before:
            break
        await asyncio.sleep(0.05)
    assert value(text, "relaygate_token_cache_invalidations_total") == before + 1
