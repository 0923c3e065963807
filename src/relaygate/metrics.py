"""Prometheus metrics at ``/metrics``, one registry per process (docs/operators.md "Metrics").

Request counts and latencies are plain integers in a :class:`RequestStats` object that each
route's handler updates itself (the relay handler inline, the others through
:func:`counted`); the ledger, upstream and overhead figures are plain numbers in the
runtime's :class:`relaygate.tally.Tally`. A custom collector turns them into Prometheus
families at scrape time. Why not ``prometheus_client.Counter`` in a middleware: an aiohttp
middleware wraps every request in two more coroutine layers and ``labels()``/``observe``
take a lock each time; together that was ~5% of the relay's CPU per request. Paths that
match no route are not counted.

``serve --workers N``: the processes share one port, so a scrape reaches any one of them.
Each process writes a snapshot of its figures (JSON, every ``SHARE_SECONDS``) into a
directory they share (``RELAYGATE_METRICS_DIR``, else one the supervisor creates), and the
process that answers a scrape adds its own live figures to the others' snapshots (those of
processes still alive). Why not ``prometheus_client``'s multiprocess mode: it keeps every
value in an mmap'd file written under a lock on each update, which is the cost the plain
integers avoid, and it cannot serve custom collectors. The figures read from Redis at
scrape time (stream lengths, pending entries, lag) are read once, by the answering process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from redis.asyncio import Redis

from relaygate.appkeys import RUNTIME, SETTINGS, STATS
from relaygate.flusher import Flusher
from relaygate.keys import STREAM_GROUP, KeyScheme
from relaygate.runtime import Runtime
from relaygate.stats import LATENCY_BUCKETS, RequestStats
from relaygate.tally import OVERHEAD_BUCKETS, UPSTREAM_BUCKETS, Tally, merge

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger(__name__)

__all__ = ["FLUSHER", "STATS", "RequestStats", "counted", "install", "worker_app"]

FLUSHER: web.AppKey[Flusher] = web.AppKey("relaygate.flusher", Flusher)
SHARE_SECONDS = 1.0

# tally name -> (Prometheus name, help, label names); a counter gets "_total" on exposure
COUNTERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "http_requests": (
        "relaygate_http_requests",
        "HTTP requests by route and status",
        ("route", "status"),
    ),
    "reserves": (
        "relaygate_ledger_reserves",
        "Reservations made (requests the ledger admitted)",
        (),
    ),
    "rejections": (
        "relaygate_ledger_rejections",
        "Requests the ledger refused, by reason",
        ("reason",),
    ),
    "settles": ("relaygate_ledger_settles", "Settles that charged an answered request", ()),
    "refunds": (
        "relaygate_ledger_refunds",
        "Settles that refunded a reservation in full (no answer)",
        (),
    ),
    "reaped": ("relaygate_ledger_reaped", "Reservations of dead relays refunded by the reaper", ()),
    "charged": (
        "relaygate_quota_charged",
        "Quota units charged, by model and group",
        ("model", "group"),
    ),
    "flusher_events": ("relaygate_flusher_events", "Usage events written to PostgreSQL", ()),
    "flusher_batches": ("relaygate_flusher_batches", "Batches committed to PostgreSQL", ()),
    "flusher_failures": ("relaygate_flusher_failures", "Flush rounds that failed (retried)", ()),
    "flusher_dead": ("relaygate_flusher_dead_lettered", "Events moved to a dead-letter stream", ()),
    "cache_hits": ("relaygate_token_cache_hits", "Token metadata cache hits", ()),
    "cache_loads": ("relaygate_token_cache_loads", "Token metadata loads from PostgreSQL", ()),
    "cache_invalidations": (
        "relaygate_token_cache_invalidations",
        "Invalidation messages applied to the token cache",
        (),
    ),
    "upstream_errors": (
        "relaygate_upstream_errors",
        "Upstream failures by channel and kind",
        ("channel", "kind"),
    ),
}
HISTOGRAMS: dict[str, tuple[str, str, tuple[str, ...], tuple[float, ...]]] = {
    "http_seconds": (
        "relaygate_http_request_seconds",
        "Time until the handler returned (relay streams: the whole stream)",
        ("route",),
        LATENCY_BUCKETS,
    ),
    "upstream_seconds": (
        "relaygate_upstream_seconds",
        "Time to the upstream's response head, by channel",
        ("channel",),
        UPSTREAM_BUCKETS,
    ),
    "overhead_seconds": (
        "relaygate_relay_overhead_seconds",
        "Time spent in relaygate per answered request, upstream excluded",
        (),
        OVERHEAD_BUCKETS,
    ),
}
GAUGES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "cache_entries": (
        "relaygate_token_cache_entries",
        "Tokens held in the caches (all processes)",
        (),
    ),
}


def process_tally(app: web.Application) -> Tally:
    """This process's figures, all in one ``Tally`` (a copy: the caller may keep it)."""
    rt: Runtime | None = app.get(RUNTIME)
    out = merge([rt.tally.export()]) if rt is not None else Tally()
    stats = app[STATS]
    for (route, status), n in stats.counts.items():
        out.inc("http_requests", (route, str(status)), n)
    hist = out.histograms.setdefault("http_seconds", {})
    for route, slots in stats.histograms.items():
        hist[(route,)] = [*map(float, slots), stats.sums[route]]
    if rt is not None:
        out.inc("cache_hits", (), rt.cache.hits)
        out.inc("cache_loads", (), rt.cache.misses)
        out.inc("cache_invalidations", (), rt.cache.invalidations)
        out.inc("cache_entries", (), len(rt.cache))
        out.mark("channels", len(rt.catalog.channels.channels))
    flusher = app.get(FLUSHER)
    if flusher is not None:
        add_flusher(out, flusher)
    return out


# The families a standalone ``relaygate worker`` exposes (plus the per-shard Redis figures).
WORKER_FAMILIES = frozenset(
    ("flusher_events", "flusher_batches", "flusher_failures", "flusher_dead", "reaped")
)


def add_flusher(out: Tally, flusher: Flusher) -> None:
    """The flusher's and its reaper's counters (``serve --with-worker`` and ``worker``)."""
    out.inc("flusher_events", (), flusher.flushed)
    out.inc("flusher_batches", (), flusher.batches)
    out.inc("flusher_failures", (), flusher.failures)
    out.inc("flusher_dead", (), flusher.dead_lettered)
    out.inc("reaped", (), flusher.reaper.reaped)


class TallyCollector(Collector):
    """The families of the merged figures of every process (``collect`` reads ``current``)."""

    def __init__(self, families: frozenset[str] | None = None) -> None:
        self.current = Tally()
        self.families = families  # None: every family (the relay); else only these counters

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        t = self.current
        if self.families is not None:
            yield from self._counters(t, self.families)
            return
        yield from self._counters(t, frozenset(COUNTERS))
        for key, (name, doc, labels, buckets) in HISTOGRAMS.items():
            yield _histogram(name, doc, labels, buckets, t.histograms.get(key, {}))
        for key, (name, doc, labels) in GAUGES.items():
            gauge = GaugeMetricFamily(name, doc, labels=labels)
            for values, n in sorted(t.counters.get(key, {}).items()):
                gauge.add_metric(list(values), n)
            yield gauge
        yield from _derived(t)

    @staticmethod
    def _counters(t: Tally, keys: frozenset[str]) -> Iterator[CounterMetricFamily]:
        for key, (name, doc, labels) in COUNTERS.items():
            if key not in keys:
                continue
            counter = CounterMetricFamily(name, doc, labels=labels)
            for values, n in sorted(t.counters.get(key, {}).items()):
                counter.add_metric(list(values), n)
            yield counter


def _histogram(
    name: str,
    doc: str,
    labels: tuple[str, ...],
    buckets: tuple[float, ...],
    series: dict[tuple[str, ...], list[float]],
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, slots in sorted(series.items()):
        cumulative, running = [], 0.0
        bounds = (*(repr(float(b)) for b in buckets), "+Inf")
        for bound, n in zip(bounds, slots[:-1], strict=True):
            running += n
            cumulative.append((bound, running))
        family.add_metric(list(values), cumulative, slots[-1])
    return family


def _derived(t: Tally) -> Iterator[GaugeMetricFamily]:
    hits = sum(t.counters.get("cache_hits", {}).values())
    loads = sum(t.counters.get("cache_loads", {}).values())
    ratio = GaugeMetricFamily(
        "relaygate_token_cache_hit_ratio", "Cache hits / (hits + loads) since start (0 before any)"
    )
    ratio.add_metric([], hits / (hits + loads) if hits + loads else 0.0)
    yield ratio
    channels = GaugeMetricFamily("relaygate_channels", "Enabled channels loaded")
    channels.add_metric([], max(t.latest.get("channels", {}).values(), default=0))
    yield channels
    healthy = GaugeMetricFamily(
        "relaygate_channel_healthy",
        "1 when the channel's latest upstream call succeeded, 0 when it failed",
        labels=("channel",),
    )
    ok, failed = t.latest.get("upstream_ok", {}), t.latest.get("upstream_failed", {})
    for channel in sorted(set(ok) | set(failed)):
        healthy.add_metric(list(channel), 1 if ok.get(channel, 0) >= failed.get(channel, 0) else 0)
    yield healthy


class Share:
    """The snapshot files of ``serve --workers N`` (one per process, named by pid)."""

    def __init__(self, directory: str) -> None:
        self.dir = Path(directory)
        self.own = self.dir / f"{os.getpid()}.json"

    def write(self, snapshot: dict[str, Any]) -> None:
        tmp = self.own.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(snapshot))
        tmp.replace(self.own)  # atomic: a reader never sees half a file

    def others(self) -> list[dict[str, Any]]:
        out = []
        for path in self.dir.glob("*.json"):
            if path == self.own:
                continue
            if not path.stem.isdigit() or not _alive(int(path.stem)):
                with contextlib.suppress(OSError):
                    path.unlink()  # a process that is gone: its figures go with it
                continue
            with contextlib.suppress(OSError, orjson.JSONDecodeError):
                out.append(orjson.loads(path.read_bytes()))
        return out

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.own.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("relaygate.registry", CollectorRegistry)
COLLECTOR: web.AppKey[TallyCollector] = web.AppKey("relaygate.collector", TallyCollector)
SHARE: web.AppKey[Share] = web.AppKey("relaygate.metrics_share", Share)


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
    app = request.app
    rt = app[RUNTIME]
    local = process_tally(app).export()
    share = app.get(SHARE)
    app[COLLECTOR].current = merge([local, *(share.others() if share else [])])
    body = generate_latest(app[REGISTRY]) + await redis_figures(rt)
    return web.Response(body=body, content_type="text/plain", charset="utf-8")


async def redis_figures(rt: Runtime) -> bytes:
    """The relay's per-shard stream figures (``shard_figures``)."""
    return await shard_figures(rt.redis, rt.keys)


async def shard_figures(redis: Redis, keys: KeyScheme) -> bytes:
    """Per shard: stream length, entries delivered but not acked, age of the oldest event
    not yet in PostgreSQL (the flusher's lag). -1 everywhere when Redis cannot answer."""
    streams = keys.streams()
    now = time.time()
    lines = {"length": [], "pending": [], "lag": []}  # type: dict[str, list[str]]
    backlog = 0
    try:
        pipe = redis.pipeline(transaction=False)
        for stream in streams:
            pipe.xlen(stream)
            pipe.xpending(stream, STREAM_GROUP)
            pipe.xrange(stream, count=1)
        replies = await pipe.execute(raise_on_error=False)
    except Exception as exc:
        log.warning("metrics: Redis figures unavailable (%s)", exc)
        replies = None
    for shard in range(len(streams)):
        if replies is None:
            length, pending, lag = -1, -1, -1.0
        else:
            xlen, xpend, first = replies[3 * shard : 3 * shard + 3]
            length = int(xlen) if isinstance(xlen, int) else 0
            pending = int(xpend.get("pending", 0)) if isinstance(xpend, dict) else 0
            lag = _age(first, now)
            backlog += length
        label = f'{{shard="{shard}"}}'
        lines["length"].append(f"relaygate_flusher_stream_length{label} {length}")
        lines["pending"].append(f"relaygate_flusher_pending{label} {pending}")
        lines["lag"].append(f"relaygate_flusher_lag_seconds{label} {lag:.3f}")
    text = [
        "# HELP relaygate_usage_backlog Usage events waiting in Redis for the flusher (-1: Redis unreachable)",
        "# TYPE relaygate_usage_backlog gauge",
        f"relaygate_usage_backlog {backlog if replies is not None else -1}",
        "# HELP relaygate_flusher_stream_length Usage events in the shard's stream (not yet in PostgreSQL)",
        "# TYPE relaygate_flusher_stream_length gauge",
        *lines["length"],
        "# HELP relaygate_flusher_pending Events of the shard's stream delivered to a flusher, not yet acknowledged",
        "# TYPE relaygate_flusher_pending gauge",
        *lines["pending"],
        "# HELP relaygate_flusher_lag_seconds Age of the shard's oldest event not yet in PostgreSQL (0: none)",
        "# TYPE relaygate_flusher_lag_seconds gauge",
        *lines["lag"],
    ]
    return ("\n".join(text) + "\n").encode()


def _age(first: Any, now: float) -> float:
    """Seconds since the entry id's time (``<ms>-<seq>``); 0 when the stream is empty."""
    if not isinstance(first, list) or not first:
        return 0.0
    entry_id = first[0][0]
    ms = int((entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)).split("-")[0])
    return max(0.0, now - ms / 1000)


async def _share_ctx(app: web.Application) -> AsyncIterator[None]:
    """With a shared directory: write this process's snapshot every ``SHARE_SECONDS``."""
    directory = app[SETTINGS].metrics_dir
    if not directory:
        yield
        return
    share = app[SHARE] = Share(directory)

    async def loop() -> None:
        while True:
            with contextlib.suppress(OSError):
                share.write(process_tally(app).export())
            await asyncio.sleep(SHARE_SECONDS)

    task = asyncio.create_task(loop(), name="metrics-share")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    share.remove()


def install(app: web.Application) -> RequestStats:
    """Create the stats object and the registry; routes added later use ``counted``."""
    stats = RequestStats()
    registry = CollectorRegistry(auto_describe=True)
    collector = TallyCollector()
    registry.register(collector)
    app[STATS] = stats
    app[REGISTRY] = registry
    app[COLLECTOR] = collector
    app.cleanup_ctx.append(_share_ctx)
    app.router.add_get("/metrics", counted("/metrics", metrics_view))
    return stats


def worker_app(flusher: Flusher, redis: Redis, keys: KeyScheme) -> web.Application:
    """``relaygate worker``'s own listener (RELAYGATE_WORKER_METRICS_PORT): ``/metrics`` with
    its flusher's and reaper's counters and the per-shard stream figures, ``/healthz``.

    Why a listener of its own: a standalone worker has no relay app to answer a scrape, and
    its counters live in its process only (the relays' snapshots never include them).
    """
    registry = CollectorRegistry(auto_describe=True)
    collector = TallyCollector(WORKER_FAMILIES)
    registry.register(collector)

    async def metrics(_: web.Request) -> web.Response:
        tally = Tally()
        add_flusher(tally, flusher)
        collector.current = tally
        body = generate_latest(registry) + await shard_figures(redis, keys)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app
