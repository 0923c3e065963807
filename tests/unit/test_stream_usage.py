"""Issue 9 items 8 and 17: the end of a stream is a whole event, not text that looks like
one; usage an upstream reports is believed only when it is made of token counts."""

from __future__ import annotations

import orjson
import pytest

from relaygate.relay import dialects
from relaygate.relay.sse import SSEUsageFilter


def _chunk(text: str) -> bytes:
    delta = {"choices": [{"index": 0, "delta": {"content": text}}]}
    return b"data: " + orjson.dumps(delta) + b"\n\n"


def test_done_inside_the_answer_text_does_not_end_the_stream() -> None:
    sse = SSEUsageFilter(strip_usage_chunk=False)
    sse.feed(_chunk("the marker is data: [DONE] and"))
    assert not sse.done
    sse.feed(_chunk("[DONE]"))
    assert not sse.done
    sse.feed(b"data: [DONE]\n\n")
    assert sse.done


def test_message_stop_inside_claude_text_does_not_end_the_stream() -> None:
    sse = SSEUsageFilter(strip_usage_chunk=False, dialect=dialects.CLAUDE)
    text = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "message_stop"}}
    sse.feed(b"event: content_block_delta\ndata: " + orjson.dumps(text) + b"\n\n")
    assert not sse.done
    sse.feed(b'event: message_stop\ndata: {"type":"message_stop"}\n\n')
    assert sse.done


def test_crlf_end_marker_is_recognised() -> None:
    sse = SSEUsageFilter(strip_usage_chunk=False)
    sse.feed(_chunk("hi").replace(b"\n", b"\r\n") + b"data: [DONE]\r\n\r\n")
    assert sse.done


@pytest.mark.parametrize(
    "usage",
    [
        {"prompt_tokens": "abc", "completion_tokens": 5},
        {"prompt_tokens": 5, "completion_tokens": 1.5},
        {"prompt_tokens": -5, "completion_tokens": 5},
        {"prompt_tokens": 10**30, "completion_tokens": 5},
        {"prompt_tokens": True, "completion_tokens": 5},
        {"input_tokens": "12", "output_tokens": 5},
        {"input_tokens": 3, "cache_read_input_tokens": "x", "output_tokens": 5},
    ],
)
def test_malformed_usage_is_not_believed(usage: dict[str, object]) -> None:
    assert dialects.read_usage({"usage": usage}) is None


def test_malformed_gemini_usage_is_not_believed() -> None:
    meta = {"promptTokenCount": 3, "candidatesTokenCount": "abc"}
    assert dialects.read_usage({"usageMetadata": meta}) is None
    assert dialects.read_usage(
        {"usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 4}}
    ) == (3, 4)


def test_well_formed_usage_still_reads() -> None:
    assert dialects.read_usage({"usage": {"prompt_tokens": 3, "completion_tokens": 4}}) == (3, 4)
    claude = {"usage": {"input_tokens": 3, "cache_read_input_tokens": 2, "output_tokens": 4}}
    assert dialects.read_usage(claude) == (5, 4)
    assert dialects.read_usage({"usage": {"output_tokens": 7}}) == (-1, 7)
