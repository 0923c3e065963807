"""store.logs.event_row decodes settle.lua's entries inline (the flusher's fast path): the
row, and every refusal, must be what the general path (events.decode_entry) gives."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from relaygate.events import MalformedEvent
from relaygate.store.logs import ESTIMATED_NOTE, event_row

FULL = {
    "rid": "r1",
    "ts": 1765000000,
    "user": 3,
    "token": 7,
    "tname": "t",
    "uname": "u",
    "model": "m",
    "chan": 2,
    "group": "g",
    "pt": 10,
    "ct": 20,
    "stream": 1,
    "lat": 4,
    "ip": "1.2.3.4",
    "other": '{"estimated":true}',
}


def _both(event: Any, quota: bytes = b"33") -> tuple[Any, Any]:
    """(fast path: the raw reply's flat list, general path: the same fields as a dict)."""
    raw = event if isinstance(event, bytes) else orjson.dumps(event)
    out = []
    for fields in ([b"quota", quota, b"event", raw], {b"quota": quota, b"event": raw}):
        try:
            out.append(event_row(fields))
        except (MalformedEvent, TypeError, ValueError) as exc:
            out.append((type(exc), str(exc)))
    return out[0], out[1]


def test_a_full_event_gives_the_same_row_both_ways() -> None:
    fast, general = _both(FULL)
    assert fast == general
    assert fast[10] == 33 and fast[14] is True and fast[16] == ESTIMATED_NOTE


def test_a_minimal_event_gets_the_same_defaults_both_ways() -> None:
    fast, general = _both({"rid": "r", "ts": 1765000000, "user": 1, "token": 2})
    assert fast == general
    assert fast[4] == "" and fast[8] == 0 and fast[14] is False and fast[17] == ""


@pytest.mark.parametrize(
    "event",
    [
        {k: v for k, v in FULL.items() if k != "rid"},
        {k: v for k, v in FULL.items() if k not in ("ts", "token")},
        [1, 2],
        b"{not json",
        {**FULL, "user": "x"},
        {**FULL, "ts": None},
        {**FULL, "ts": 10**15},
    ],
)
def test_a_bad_event_is_refused_alike_both_ways(event: Any) -> None:
    fast, general = _both(event)
    assert fast == general
    assert isinstance(fast, tuple) and issubclass(fast[0], Exception)


@pytest.mark.parametrize("event", [FULL, [1, 2]])
def test_a_bad_quota_is_refused_alike_both_ways(event: Any) -> None:
    fast, general = _both(event, quota=b"lots")
    assert fast == general
    assert isinstance(fast, tuple) and fast[0] is MalformedEvent
