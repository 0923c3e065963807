"""Issue 12 pieces that need no services: origin settings, the Responses stream's end and
usage, rerank usage, and the meters of speech and moderation."""

from __future__ import annotations

import orjson
import pytest

from relaygate.config import ConfigError, from_env
from relaygate.relay.compat import moderation_meter, speech_meter
from relaygate.relay.dialects import RESPONSES, read_usage
from relaygate.relay.errors import RelayError
from relaygate.relay.sse import SSEUsageFilter


def test_origin_settings():
    s = from_env({})
    assert s.cors_origins == ("*",) and s.api_cors_origins == ()
    s = from_env(
        {
            "RELAYGATE_CORS_ORIGINS": "https://a.example, http://b.example:8080/",
            "RELAYGATE_API_CORS_ORIGINS": "https://console.example",
        }
    )
    assert s.cors_origins == ("https://a.example", "http://b.example:8080")
    assert s.api_cors_origins == ("https://console.example",)
    assert from_env({"RELAYGATE_CORS_ORIGINS": ""}).cors_origins == ()
    with pytest.raises(ConfigError, match="RELAYGATE_API_CORS_ORIGINS"):
        from_env({"RELAYGATE_API_CORS_ORIGINS": "*"})
    with pytest.raises(ConfigError, match="not an origin"):
        from_env({"RELAYGATE_CORS_ORIGINS": "app.example"})
    with pytest.raises(ConfigError, match="not an origin"):
        from_env({"RELAYGATE_CORS_ORIGINS": "https://app.example/path"})


def _event(kind: str, **fields: object) -> bytes:
    return (
        b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **fields}) + b"\n\n"
    )


def test_responses_stream_usage_and_end():
    usage = {"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}
    sse = SSEUsageFilter(strip_usage_chunk=False, dialect=RESPONSES)
    first = _event("response.created", response={"usage": None})
    delta = _event("response.output_text.delta", delta="hi")
    out = sse.feed(first + delta)
    assert out == first + delta and not sse.done and sse.usage is None
    last = _event("response.completed", response={"status": "completed", "usage": usage})
    assert sse.feed(last) == last  # passed on untouched
    assert sse.done and sse.usage == (7, 3)


def test_responses_incomplete_also_ends():
    sse = SSEUsageFilter(strip_usage_chunk=False, dialect=RESPONSES)
    sse.feed(
        _event("response.incomplete", response={"usage": {"input_tokens": 1, "output_tokens": 2}})
    )
    assert sse.done and sse.usage == (1, 2)


def test_rerank_and_responses_usage():
    assert read_usage({"usage": {"total_tokens": 12}}) == (12, 0)
    assert read_usage({"usage": {"total_tokens": "x"}}) is None
    assert read_usage({"usage": {"input_tokens": 4, "output_tokens": 5, "total_tokens": 9}}) == (
        4,
        5,
    )
    # Unchanged: an OpenAI usage, a Claude output-only delta.
    assert read_usage(
        {"usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}}
    ) == (1, 2)
    assert read_usage({"usage": {"output_tokens": 5}}) == (-1, 5)


def test_meters():
    assert speech_meter({"input": "héllo"}) == (5, 0, False)
    assert moderation_meter({"input": "abcdefgh"}) == (2, 0, True)
    assert moderation_meter(
        {"input": ["abcd", {"type": "text", "text": "efgh"}, {"type": "image_url"}]}
    ) == (2, 0, True)
    for bad in ({}, {"input": ""}, {"input": 3}):
        with pytest.raises(RelayError):
            speech_meter(bad)
    for bad in ({}, {"input": []}, {"input": [1]}, {"input": [{"text": 2}]}):
        with pytest.raises(RelayError):
            moderation_meter(bad)


def test_end_event_names_are_whole_names():
    sse = SSEUsageFilter(strip_usage_chunk=False, dialect=RESPONSES)
    sse.feed(_event("response.completed_not", response={}))
    assert not sse.done
    sse.feed(b'data: {"type":"response.completedX"}\n\n')
    assert not sse.done
    sse.feed(b'data: {"type":"response.completed","response":{}}\n\n')
    assert sse.done
