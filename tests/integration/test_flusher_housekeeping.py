"""Item 7 of issue 9: claiming abandoned entries and reaping run on their schedule even
while every batch is full (the flusher always has a prefetched batch)."""

from __future__ import annotations

import time
from typing import Any

import relaygate.flusher as fl
from relaygate import events
from relaygate.flusher import Flusher
from relaygate.ledger import Scripts


async def test_reaper_and_claim_run_while_batches_stay_full(env: Any, monkeypatch: Any) -> None:
    s = env.settings.replace(flush_batch=10, flush_linger_ms=0)
    f = Flusher(s, env.pool, env.redis, Scripts.load())
    await f.setup()
    for i in range(200):
        ev = events.encode({"rid": f"r{i}", "ts": int(time.time()), "user": 1, "token": 1})
        await env.redis.xadd(env.keys.stream(0), {"quota": 1, "event": ev})
    calls = {"reap": 0, "claim": 0}
    real_reap, real_claim = f.reap, f.claim_abandoned

    async def reap() -> int:
        calls["reap"] += 1
        return await real_reap()

    async def claim() -> bool:
        calls["claim"] += 1
        return await real_claim()

    monkeypatch.setattr(f, "reap", reap)
    monkeypatch.setattr(f, "claim_abandoned", claim)
    monkeypatch.setattr(fl, "REAP_INTERVAL", 0.0)
    rounds = 0
    while await f.round():
        rounds += 1
        f._last_reap = f._last_claim = -1e9  # due again on every round
    assert rounds >= 20
    assert calls["reap"] >= rounds
    assert calls["claim"] >= rounds
    assert f.flushed == 200
