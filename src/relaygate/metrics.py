"""Prometheus metrics at ``/metrics``, one registry per process (no global state).

Counted in a middleware so the hot path itself stays untouched; figures that already live
on objects (cache hits, channel count, stream backlog) are read at scrape time by a custom
collector instead of being incremented per request. With ``--workers N`` each process
answers for itself: scrape each, or put them behind distinct ports.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from relaygate.relay.handlers import RUNTIME
from relaygate.runtime import Runtime

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "relaygate_http_requests",
            "HTTP requests by route and status",
            ("route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "relaygate_http_request_seconds",
            "Time to produce the response headers (streams: until the first byte)",
            ("route",),
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )

    def middleware(self) -> Middleware:
        requests = self.requests
        latency = self.latency
        # labels() takes a lock and builds a tuple on every call: bind each child once.
        counters: dict[tuple[str, int], Any] = {}
        timers: dict[str, Any] = {}

        def counter(name: str, status: int) -> Any:
            child = counters.get((name, status))
            if child is None:
                child = counters[(name, status)] = requests.labels(name, str(status))
            return child

        @web.middleware
        async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
            started = time.perf_counter()
            route = request.match_info.route.resource
            name = route.canonical if route is not None else "unmatched"
            try:
                response = await handler(request)
            except web.HTTPException as exc:
                counter(name, exc.status).inc()
                raise
            counter(name, response.status).inc()
            timer = timers.get(name)
            if timer is None:
                timer = timers[name] = latency.labels(name)
            timer.observe(time.perf_counter() - started)
            return response

        return count


class RuntimeCollector(Collector):
    """Figures read from the runtime at scrape time."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        rt: Runtime | None = self.app.get(RUNTIME)
        if rt is None:
            return
        hits = CounterMetricFamily("relaygate_token_cache_hits", "Token metadata cache hits")
        hits.add_metric([], rt.cache.hits)
        yield hits
        misses = CounterMetricFamily(
            "relaygate_token_cache_loads", "Token metadata loads from PostgreSQL"
        )
        misses.add_metric([], rt.cache.misses)
        yield misses
        size = GaugeMetricFamily("relaygate_token_cache_entries", "Tokens held in the cache")
        size.add_metric([], len(rt.cache))
        yield size
        channels = GaugeMetricFamily("relaygate_channels", "Enabled channels loaded")
        channels.add_metric([], len(rt.channels.channels))
        yield channels


METRICS: web.AppKey[Metrics] = web.AppKey("relaygate.metrics", Metrics)


async def metrics_view(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    rt = request.app[RUNTIME]
    backlog = 0
    try:
        for stream in rt.keys.streams():
            backlog += int(await rt.redis.xlen(stream))
    except Exception:
        backlog = -1
    body = generate_latest(metrics.registry)
    extra = (
        "# HELP relaygate_usage_backlog Usage events waiting in Redis for the flusher (-1: Redis unreachable)\n"
        "# TYPE relaygate_usage_backlog gauge\n"
        f"relaygate_usage_backlog {backlog}\n"
    ).encode()
    return web.Response(body=body + extra, content_type="text/plain", charset="utf-8")


def install(app: web.Application) -> None:
    metrics = Metrics()
    metrics.registry.register(RuntimeCollector(app))
    app[METRICS] = metrics
    app.middlewares.append(metrics.middleware())
    app.router.add_get("/metrics", metrics_view)
