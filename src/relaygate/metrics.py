"""Prometheus metrics at ``/metrics``, one registry per process (no global state).

Request counts and latencies are plain integers in a :class:`RequestStats` object that each
route's handler updates itself (the relay handler inline, the others through
:func:`counted`), and a custom collector turns them into Prometheus families at scrape time.
Why not ``prometheus_client.Counter`` in a middleware: an aiohttp middleware wraps every
request in two more coroutine layers and ``labels()``/``observe`` take a lock each time;
together that was ~5% of the relay's CPU per request. Paths that match no route are not
counted. With ``--workers N`` each process answers for itself.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from relaygate.appkeys import RUNTIME, STATS
from relaygate.runtime import Runtime
from relaygate.stats import RequestStats

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

__all__ = ["STATS", "RequestStats", "counted", "install"]


class StatsCollector(Collector):
    """Requests by route/status and the latency histogram, read from ``RequestStats``."""

    def __init__(self, stats: RequestStats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        stats = self.stats
        requests = CounterMetricFamily(
            "relaygate_http_requests",
            "HTTP requests by route and status",
            labels=("route", "status"),
        )
        for (route, status), n in sorted(stats.counts.items()):
            requests.add_metric([route, str(status)], n)
        yield requests
        latency = HistogramMetricFamily(
            "relaygate_http_request_seconds",
            "Time until the handler returned (relay streams: the whole stream)",
            labels=("route",),
        )
        for route, slots in sorted(stats.histograms.items()):
            cumulative, running = [], 0
            for bound, n in zip((*map(_bound, stats.buckets), "+Inf"), slots, strict=True):
                running += n
                cumulative.append((bound, running))
            latency.add_metric([route], cumulative, stats.sums[route])
        yield latency


def _bound(value: float) -> str:
    return repr(float(value))


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
        channels.add_metric([], len(rt.catalog.channels.channels))
        yield channels


REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("relaygate.registry", CollectorRegistry)


def counted(route: str, handler: Handler) -> Handler:
    """``handler`` with its requests recorded under ``route`` (for routes off the hot path)."""

    async def recorded(request: web.Request) -> web.StreamResponse:
        stats = request.app[STATS]
        started = time.perf_counter()
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            stats.record(route, exc.status, time.perf_counter() - started)
            raise
        stats.record(route, response.status, time.perf_counter() - started)
        return response

    recorded.__name__ = getattr(handler, "__name__", "recorded")
    return recorded


async def metrics_view(request: web.Request) -> web.Response:
    registry = request.app[REGISTRY]
    rt = request.app[RUNTIME]
    backlog = 0
    try:
        for stream in rt.keys.streams():
            backlog += int(await rt.redis.xlen(stream))
    except Exception:
        backlog = -1
    body = generate_latest(registry)
    extra = (
        "# HELP relaygate_usage_backlog Usage events waiting in Redis for the flusher (-1: Redis unreachable)\n"
        "# TYPE relaygate_usage_backlog gauge\n"
        f"relaygate_usage_backlog {backlog}\n"
    ).encode()
    return web.Response(body=body + extra, content_type="text/plain", charset="utf-8")


def install(app: web.Application) -> RequestStats:
    """Create the stats object and the registry; routes added later use ``counted``."""
    stats = RequestStats()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(StatsCollector(stats))
    registry.register(RuntimeCollector(app))
    app[STATS] = stats
    app[REGISTRY] = registry
    app.router.add_get("/metrics", counted("/metrics", metrics_view))
    return stats
