"""Request counts and latencies as plain integers, updated by the handlers themselves.

The hot path pays two dict updates and a ``bisect`` per request; ``relaygate.metrics`` turns
the figures into Prometheus families only when ``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class RequestStats:
    """Per process; single-threaded (the event loop), so no locks."""

    __slots__ = ("buckets", "counts", "histograms", "sums")

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.counts: dict[tuple[str, int], int] = {}
        # route -> observations per bucket (not cumulative), the last slot is +Inf
        self.histograms: dict[str, list[int]] = {}
        self.sums: dict[str, float] = {}

    def record(self, route: str, status: int, seconds: float) -> None:
        key = (route, status)
        counts = self.counts
        counts[key] = counts.get(key, 0) + 1
        slots = self.histograms.get(route)
        if slots is None:
            slots = self.histograms[route] = [0] * (len(self.buckets) + 1)
            self.sums[route] = 0.0
        slots[bisect_left(self.buckets, seconds)] += 1
        self.sums[route] += seconds
