"""Operational counters as plain numbers (ledger, upstream, overhead), one object per process.

Like ``relaygate.stats``: the hot path pays a dict update per figure, never a lock or a
``prometheus_client`` call; ``relaygate.metrics`` builds the Prometheus families at scrape
time. Everything here is also a plain, JSON-able snapshot (``export``), which is how the
processes of ``serve --workers N`` share their figures (``relaygate.metrics`` merges them).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

Labels = tuple[str, ...]

UPSTREAM_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class Tally:
    """Per process; the event loop is single-threaded, so no locks."""

    __slots__ = ("counters", "histograms", "latest")

    def __init__(self) -> None:
        self.counters: dict[str, dict[Labels, float]] = {}
        # name -> labels -> observations per bucket (not cumulative; last slot +Inf), then sum
        self.histograms: dict[str, dict[Labels, list[float]]] = {}
        # name -> labels -> a value merged across processes by max (timestamps)
        self.latest: dict[str, dict[Labels, float]] = {}

    def inc(self, name: str, labels: Labels = (), n: float = 1) -> None:
        series = self.counters.get(name)
        if series is None:
            series = self.counters[name] = {}
        series[labels] = series.get(labels, 0) + n

    def observe(
        self, name: str, buckets: tuple[float, ...], seconds: float, labels: Labels = ()
    ) -> None:
        series = self.histograms.get(name)
        if series is None:
            series = self.histograms[name] = {}
        slots = series.get(labels)
        if slots is None:
            slots = series[labels] = [0.0] * (len(buckets) + 2)
        slots[bisect_left(buckets, seconds)] += 1
        slots[-1] += seconds

    def mark(self, name: str, value: float, labels: Labels = ()) -> None:
        self.latest.setdefault(name, {})[labels] = value

    def export(self) -> dict[str, Any]:
        """A JSON-able copy: {"c"|"h"|"m": {name: [[labels, value], ...]}}."""
        return {
            "c": {n: [[list(k), v] for k, v in s.items()] for n, s in self.counters.items()},
            "h": {n: [[list(k), v] for k, v in s.items()] for n, s in self.histograms.items()},
            "m": {n: [[list(k), v] for k, v in s.items()] for n, s in self.latest.items()},
        }


def merge(snapshots: list[dict[str, Any]]) -> Tally:
    """Counters and histograms summed, marks by max, over several processes' ``export``."""
    out = Tally()
    for snap in snapshots:
        for name, rows in snap.get("c", {}).items():
            for labels, value in rows:
                out.inc(name, tuple(labels), value)
        for name, rows in snap.get("h", {}).items():
            series = out.histograms.setdefault(name, {})
            for labels, slots in rows:
                have = series.get(tuple(labels))
                if have is None or len(have) != len(slots):
                    series[tuple(labels)] = list(slots)
                else:
                    series[tuple(labels)] = [a + b for a, b in zip(have, slots, strict=True)]
        for name, rows in snap.get("m", {}).items():
            marks = out.latest.setdefault(name, {})
            for labels, value in rows:
                key = tuple(labels)
                marks[key] = max(marks.get(key, value), value)
    return out
