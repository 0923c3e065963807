"""docs/redis.md documents every key the scheme builds (issue 14 item 2).

Each public method or property of ``KeyScheme`` that returns a key is called with sample
arguments; the result must match one pattern of the doc's key table. A new key added to
keys.py without a line in the doc fails here.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from relaygate.keys import KeyScheme

DOC = Path(__file__).resolve().parents[2] / "docs" / "redis.md"
NOT_KEYS = {"shard_of", "pattern", "streams", "reaped_of_resv", "base"}  # no single key


def documented_patterns() -> list[re.Pattern[str]]:
    out = []
    for line in DOC.read_text().splitlines():
        m = re.match(r"\| `([^`]+)` \|", line)
        if not m:
            continue
        rx = re.escape(m.group(1))
        rx = rx.replace(re.escape("{s}"), r"\{\d+\}")
        rx = re.sub(r"<[^>]+>", "[^:]+", rx)
        out.append(re.compile(f"^{rx}$"))
    return out


def built_keys(scheme: KeyScheme) -> dict[str, str]:
    args = {"user_id": 21, "token_id": 7, "shard": 5, "day": "20261207", "month": "202612"}
    args["instance"] = "host-1-abc"
    args["digest"] = "9f86d081884c7d65"
    built = {}
    for name, member in inspect.getmembers(KeyScheme):
        if name.startswith("_") or name in NOT_KEYS:
            continue
        if isinstance(member, property):
            built[name] = getattr(scheme, name)
        elif inspect.isfunction(member):
            params = list(inspect.signature(member).parameters)[1:]
            built[name] = member(scheme, *(args[p] for p in params))
    return built


def test_every_key_of_the_scheme_is_documented() -> None:
    patterns = documented_patterns()
    assert len(patterns) >= 12
    built = built_keys(KeyScheme("rg", 16))
    assert {"token", "user", "refusals", "heartbeat", "key_index", "dead_letter"} <= set(built)
    missing = {n: k for n, k in built.items() if not any(p.match(k) for p in patterns)}
    assert not missing, f"keys not in docs/redis.md: {missing}"


def test_every_documented_pattern_is_a_key_the_scheme_builds() -> None:
    built = set(built_keys(KeyScheme("rg", 16)).values())
    stale = [p.pattern for p in documented_patterns() if not any(p.match(k) for k in built)]
    assert not stale, f"documented but never built: {stale}"
