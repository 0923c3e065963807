"""Structured logs: with RELAYGATE_LOG_FORMAT=json every line the relay writes is one JSON
object, and RELAYGATE_REQUEST_LOG=true adds one record per relay request carrying the
request id, token id (never the key), status, model, channel, latency and overhead."""

from __future__ import annotations

import logging

import aiohttp
import orjson
import pytest

from relaygate.logfmt import FIELDS, JsonFormatter, TextFormatter

from ..conftest import free_port
from .books import seed

pytestmark = pytest.mark.e2e

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def test_json_request_records(env, stack):
    mock = await stack.mock(free_port())
    seeded = await seed(env, mock.url, tokens=1)
    relay = await stack.relay(
        free_port(),
        RELAYGATE_LOG_FORMAT="json",
        RELAYGATE_REQUEST_LOG="true",
        RELAYGATE_LOG_LEVEL="info",
    )
    key = seeded.keys[0]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{relay.url}/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": f"Bearer {key}"},
        ) as resp:
            assert resp.status == 200
            rid = resp.headers["X-Oneapi-Request-Id"]
        async with session.post(
            f"{relay.url}/v1/chat/completions",
            json=CHAT,
            headers={"Authorization": "Bearer sk-not-a-known-key-0000000000"},
        ) as resp:
            assert resp.status == 401
    relay.stop()
    text = relay.log.read_text()
    lines = [orjson.loads(line) for line in text.splitlines() if line.strip()]
    assert lines and all({"time", "level", "logger", "message"} <= set(e) for e in lines)
    records = [e for e in lines if e["logger"] == "relaygate.request"]
    (ok,) = [e for e in records if e["status"] == 200]
    assert ok["request_id"] == rid
    assert ok["token_id"] == seeded.token_ids[0]
    assert ok["model"] == "gpt-4o-mini"
    assert isinstance(ok["channel_id"], int)
    assert ok["latency_ms"] >= ok["overhead_ms"] >= 0
    (refused,) = [e for e in records if e["status"] == 401]
    assert refused["token_id"] is None and refused["model"] is None
    assert key[3:] not in text and "sk-not-a-known-key" not in text


def _record(fields: dict | None = None, msg: str = "hello %s") -> logging.LogRecord:
    record = logging.LogRecord("relaygate", logging.INFO, __file__, 1, msg, ("world",), None)
    if fields is not None:
        setattr(record, FIELDS, fields)
    return record


def test_formatters_carry_fields_and_redact():
    key = "sk-" + "a1B2" * 12
    record = _record({"token_id": 7, "note": f"key {key}", "channel_id": None})
    entry = orjson.loads(JsonFormatter().format(record))
    assert entry["message"] == "hello world" and entry["token_id"] == 7
    assert key not in entry["note"] and "[redacted]" in entry["note"]
    line = TextFormatter().format(record)
    assert "hello world token_id=7" in line and key not in line and "channel_id" not in line
    assert TextFormatter().format(_record()).endswith("hello world")
