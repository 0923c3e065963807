"""deploy/grafana/relaygate.json loads as a Grafana dashboard and every panel's query names a
metric /metrics exposes (issue 14 item 3)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import fakeredis
import jsonschema
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from relaygate.keys import KeyScheme
from relaygate.metrics import TallyCollector, redis_figures, worker_app

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "relaygate.json"

GRID = {
    "type": "object",
    "required": ["h", "w", "x", "y"],
    "properties": {k: {"type": "integer", "minimum": 0} for k in ("h", "w", "x", "y")},
}
TARGET = {
    "type": "object",
    "required": ["refId", "expr", "datasource"],
    "properties": {"refId": {"type": "string"}, "expr": {"type": "string", "minLength": 1}},
}
PANEL = {
    "type": "object",
    "required": ["type", "title", "gridPos", "id"],
    "properties": {
        "type": {"enum": ["row", "timeseries", "stat", "gauge", "table"]},
        "title": {"type": "string", "minLength": 1},
        "gridPos": GRID,
        "id": {"type": "integer"},
        "targets": {"type": "array", "items": TARGET},
    },
    "if": {"properties": {"type": {"not": {"const": "row"}}}},
    "then": {"required": ["targets", "datasource"], "properties": {"targets": {"minItems": 1}}},
}
SCHEMA = {
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating", "time"],
    "properties": {
        "uid": {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 30},
        "panels": {"type": "array", "minItems": 1, "items": PANEL},
    },
}


async def exposed_names() -> set[str]:
    """Every sample name /metrics can show (counters with _total, histograms' series)."""
    registry = CollectorRegistry()
    registry.register(TallyCollector())
    rt = SimpleNamespace(keys=KeyScheme("gd", 2), redis=fakeredis.FakeAsyncRedis())
    text = generate_latest(registry).decode() + (await redis_figures(rt)).decode()  # type: ignore[arg-type]
    return names_in(text)


async def worker_names() -> set[str]:
    """Every sample name a standalone ``relaygate worker``'s /metrics shows."""
    flusher = SimpleNamespace(
        flushed=0, batches=0, failures=0, dead_lettered=0, reaper=SimpleNamespace(reaped=0)
    )
    app = worker_app(flusher, fakeredis.FakeAsyncRedis(), KeyScheme("gd", 2))  # type: ignore[arg-type]
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        return names_in(await resp.text())


def names_in(text: str) -> set[str]:
    names = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names


def test_dashboard_loads_and_matches_the_schema() -> None:
    dash = json.loads(DASHBOARD.read_text())
    jsonschema.validate(dash, SCHEMA)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for p in dash["panels"]:
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24


async def test_every_query_names_an_existing_metric() -> None:
    names = await exposed_names()
    dash = json.loads(DASHBOARD.read_text())
    used = set()
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            found = set(re.findall(r"\brelaygate_[a-z_]+\b", target["expr"]))
            assert found, f"{panel['title']}: no relaygate metric in {target['expr']!r}"
            unknown = found - names
            assert not unknown, f"{panel['title']}: unknown metrics {unknown}"
            used |= found
    # and the dashboard covers every family of the issue (ledger, flusher, cache, upstream)
    for needed in (
        "relaygate_ledger_rejections_total",
        "relaygate_quota_charged_total",
        "relaygate_flusher_lag_seconds",
        "relaygate_flusher_pending",
        "relaygate_token_cache_invalidations_total",
        "relaygate_upstream_seconds_bucket",
        "relaygate_channel_healthy",
        "relaygate_relay_overhead_seconds_bucket",
    ):
        assert needed in used
    # the flusher panels have data when the flusher runs as `relaygate worker` (its own
    # scrape target) as well as inside `serve --with-worker`
    flusher_used = {
        m
        for m in used
        if "flusher" in m or m in ("relaygate_ledger_reaped_total", "relaygate_usage_backlog")
    }
    assert {
        "relaygate_flusher_events_total",
        "relaygate_flusher_batches_total",
        "relaygate_flusher_failures_total",
        "relaygate_flusher_dead_lettered_total",
        "relaygate_ledger_reaped_total",
    } <= flusher_used
    missing = flusher_used - await worker_names()
    assert not missing, f"not served by relaygate worker: {missing}"
