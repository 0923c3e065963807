"""The usage event: what settle.lua appends to a shard's stream and the flusher records.

A stream entry has two fields: ``quota`` (what settle actually charged, written by the
script) and ``event``, one JSON object made by the relay::

    {"rid": ..., "ts": ..., "user": ..., "token": ..., "tname": ..., "uname": ..., "model": ...,
     "chan": ..., "group": ..., "pt": ..., "ct": ..., "stream": 0|1, "lat": ..., "ip": ...,
     "other": "<JSON text>"}

Why one JSON field rather than one stream field per attribute: every field is a separate
argument for the relay to pack, for Lua to copy into ARGV and XADD, for Redis to store and
for the flusher to parse; one field made the settle cheaper for all three. Entries written
by earlier versions (one field per attribute) are still read.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["MalformedEvent", "decode", "decode_entry", "encode"]

_INT_FIELDS = ("ts", "user", "token", "chan", "pt", "ct", "stream", "lat")
_TEXT_FIELDS = ("rid", "tname", "uname", "model", "group", "ip", "other")


class MalformedEvent(ValueError):
    """An entry the flusher cannot record (it goes to the dead-letter stream)."""


def encode(event: dict[str, Any]) -> bytes:
    return orjson.dumps(event)


def decode(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """The event with ``quota``; raises MalformedEvent when a required part is missing."""
    raw = fields.get(b"event")
    if raw is not None:
        return _decode_json(fields.get(b"quota"), raw)
    try:
        event = _decode_flat(fields)
        event["quota"] = int(fields[b"quota"])
    except (KeyError, ValueError) as exc:
        raise MalformedEvent(str(exc)) from None
    return _checked(event)


def decode_entry(fields: dict[bytes, bytes] | list[bytes]) -> dict[str, Any]:
    """``decode`` of an entry's fields as a dict, or as the flat list of a raw XREADGROUP
    reply (name, value, name, value...), which the flusher reads: settle.lua's two fields
    are then taken without building a dict per entry."""
    if isinstance(fields, dict):
        return decode(fields)
    if len(fields) == 4 and fields[0] == b"quota" and fields[2] == b"event":
        return _decode_json(fields[1], fields[3])
    it = iter(fields)
    return decode(dict(zip(it, it, strict=False)))


def _decode_json(quota: bytes | None, raw: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(raw)
        if not isinstance(event, dict):
            raise MalformedEvent("event is not a JSON object")
        if quota is None:
            raise MalformedEvent("entry has no 'quota'")
        event["quota"] = int(quota)
    except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
        if isinstance(exc, MalformedEvent):
            raise
        raise MalformedEvent(str(exc)) from None
    return _checked(event)


def _checked(event: dict[str, Any]) -> dict[str, Any]:
    for name in ("rid", "ts", "user", "token"):
        if name not in event:
            raise MalformedEvent(f"event has no {name!r}")
    return event


def _decode_flat(fields: dict[bytes, bytes]) -> dict[str, Any]:
    """An entry of the earlier format: one stream field per attribute."""
    event: dict[str, Any] = {}
    for name in _INT_FIELDS:
        value = fields.get(name.encode())
        if value is not None:
            event[name] = int(value)
    for name in _TEXT_FIELDS:
        value = fields.get(name.encode())
        if value is not None:
            event[name] = value.decode()
    return event
