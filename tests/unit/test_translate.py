"""relaygate.translate field by field (issue 15): what the SDK matrix does not look at."""

from __future__ import annotations

import orjson
import pytest

from relaygate import translate
from relaygate.channels import TYPE_ANTHROPIC, TYPE_AZURE, TYPE_CUSTOM, TYPE_GEMINI, TYPE_OPENAI
from relaygate.relay.dialects import CLAUDE, GEMINI, OPENAI
from relaygate.translate import anthropic, gemini
from relaygate.translate.common import EventReader, parse_data_url

pytestmark = pytest.mark.unit

PNG = "data:image/png;base64,iVBORw0KGgo="
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "w", "parameters": {"type": "object"}},
    }
]
CONVERSATION = [
    {"role": "system", "content": "Be terse."},
    {"role": "developer", "content": "Use metric."},
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Weather here?"},
            {"type": "image_url", "image_url": {"url": PNG}},
        ],
    },
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "21C"},
    {"role": "user", "content": "Thanks"},
]


def test_plan_only_when_dialects_differ_on_translatable_routes():
    assert translate.plan_for(OPENAI, "/v1/chat/completions", TYPE_OPENAI) is None
    assert translate.plan_for(OPENAI, "/v1/chat/completions", TYPE_CUSTOM) is None
    assert translate.plan_for(OPENAI, "/v1/chat/completions", TYPE_AZURE) is None
    assert translate.plan_for(CLAUDE, "/v1/messages", TYPE_ANTHROPIC) is None
    assert translate.plan_for(GEMINI, "/v1beta/models", TYPE_GEMINI) is None
    assert translate.plan_for(OPENAI, "/v1/embeddings", TYPE_ANTHROPIC) is None
    plan = translate.plan_for(CLAUDE, "/v1/messages", TYPE_GEMINI)
    assert plan == translate.Plan(CLAUDE, GEMINI)


def test_openai_to_claude_request():
    body = {
        "model": "x",
        "messages": CONVERSATION,
        "tools": TOOLS,
        "tool_choice": "required",
        "stop": "END",
        "temperature": 0.2,
        "top_p": 0.9,
    }
    out = anthropic.request_from_openai(body, "claude-up", 321)
    assert out["model"] == "claude-up" and out["max_tokens"] == 321
    assert out["system"] == "Be terse.\n\nUse metric."
    assert out["stop_sequences"] == ["END"]
    assert (out["temperature"], out["top_p"]) == (0.2, 0.9)
    assert out["tools"][0] == {
        "name": "get_weather",
        "description": "w",
        "input_schema": {"type": "object"},
    }
    assert out["tool_choice"] == {"type": "any"}
    roles = [m["role"] for m in out["messages"]]
    assert roles == ["user", "assistant", "user"], "tool result and next user turn merged"
    user, assistant, result = out["messages"]
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="},
    }
    assert assistant["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}}
    ]
    assert result["content"][0] == {
        "type": "tool_result",
        "tool_use_id": "call_1",
        "content": "21C",
    }
    assert result["content"][1] == {"type": "text", "text": "Thanks"}
    assert anthropic.request_from_openai({**body, "max_tokens": 7}, "c", 321)["max_tokens"] == 7


def test_claude_to_openai_request_round_trip_of_tools():
    claude = anthropic.request_from_openai({"messages": CONVERSATION, "tools": TOOLS}, "c", 100)
    back = anthropic.request_to_openai({**claude, "stream": True}, "gpt", 100)
    assert back["messages"][0] == {"role": "system", "content": "Be terse.\n\nUse metric."}
    assistant = next(m for m in back["messages"] if m["role"] == "assistant")
    assert orjson.loads(assistant["tool_calls"][0]["function"]["arguments"]) == {
        "location": "Paris"
    }
    tool = next(m for m in back["messages"] if m["role"] == "tool")
    assert tool == {"role": "tool", "tool_call_id": "call_1", "content": "21C"}
    assert back["stream_options"] == {"include_usage": True}
    assert back["tools"][0]["function"]["name"] == "get_weather"


def test_openai_to_gemini_request():
    body = {
        "messages": CONVERSATION,
        "tools": TOOLS,
        "tool_choice": "auto",
        "stop": ["a", "b"],
        "n": 2,
    }
    out = gemini.request_from_openai(body, 50)
    assert out["systemInstruction"] == {"parts": [{"text": "Be terse.\n\nUse metric."}]}
    assert out["generationConfig"] == {
        "maxOutputTokens": 50,
        "stopSequences": ["a", "b"],
        "candidateCount": 2,
    }
    assert out["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}
    assert [c["role"] for c in out["contents"]] == ["user", "model", "user"]
    assert out["contents"][0]["parts"][1] == {
        "inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}
    }
    call = out["contents"][1]["parts"][0]["functionCall"]
    assert call == {"name": "get_weather", "args": {"location": "Paris"}}
    response = out["contents"][2]["parts"][0]["functionResponse"]
    assert response == {"name": "get_weather", "response": {"content": "21C"}}


def test_gemini_to_openai_request_pairs_tool_results_with_their_calls():
    contents = gemini.request_from_openai({"messages": CONVERSATION}, 50)
    back = gemini.request_to_openai(
        {**contents, "tools": [{"functionDeclarations": [{"name": "f"}]}]}, "gpt", True, 9
    )
    assistant = next(m for m in back["messages"] if m.get("tool_calls"))
    tool = next(m for m in back["messages"] if m["role"] == "tool")
    assert tool["tool_call_id"] == assistant["tool_calls"][0]["id"]
    assert back["max_tokens"] == 50 and back["stream"] is True


def test_stop_reasons_and_cached_usage():
    msg = {
        "id": "m",
        "model": "c",
        "content": [{"type": "text", "text": "hi"}],
        "stop_reason": "max_tokens",
        "usage": {
            "input_tokens": 5,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 7,
            "output_tokens": 3,
        },
    }
    chat = anthropic.response_to_openai(msg)
    assert chat["choices"][0]["finish_reason"] == "length"
    assert chat["usage"]["prompt_tokens"] == 112 and chat["usage"]["completion_tokens"] == 3
    assert chat["usage"]["prompt_tokens_details"] == {"cached_tokens": 100}
    resp = {
        "candidates": [
            {"content": {"role": "model", "parts": [{"text": "x"}]}, "finishReason": "SAFETY"}
        ],
        "usageMetadata": {
            "promptTokenCount": 4,
            "candidatesTokenCount": 2,
            "thoughtsTokenCount": 5,
        },
    }
    chat = gemini.response_to_openai(resp, "g")
    assert chat["choices"][0]["finish_reason"] == "content_filter"
    assert (chat["usage"]["prompt_tokens"], chat["usage"]["completion_tokens"]) == (4, 7)


def test_gemini_safety_block_is_an_error():
    plan = translate.Plan(OPENAI, GEMINI)
    blocked = orjson.dumps({"promptFeedback": {"blockReason": "SAFETY"}})
    with pytest.raises(translate.SafetyBlock, match="SAFETY"):
        translate.response(plan, blocked, "g")
    with pytest.raises(ValueError):
        translate.response(plan, b"[1]", "g")


def test_claude_stream_to_openai_chunks_keep_usage():
    events = [
        {
            "type": "message_start",
            "message": {"id": "m", "model": "c", "usage": {"input_tokens": 9, "output_tokens": 1}},
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "t", "name": "f"},
        },
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
        },
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use"},
            "usage": {"output_tokens": 12},
        },
        {"type": "message_stop"},
    ]
    dec = anthropic.StreamToOpenAI()
    chunks = [c for e in events for c in dec.feed(e)]
    assert dec.done and dec.usage is not None
    assert (dec.usage.prompt, dec.usage.completion) == (9, 12)
    deltas = [c["choices"][0]["delta"] for c in chunks]
    assert deltas[1] == {"content": "Hel"}
    assert deltas[2]["tool_calls"][0]["function"] == {"name": "f", "arguments": ""}
    assert deltas[3]["tool_calls"][0]["function"] == {"arguments": '{"a":'}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


def test_stream_translator_openai_to_claude_events():
    plan = translate.Plan(CLAUDE, OPENAI)
    tr = translate.StreamTranslator(plan, "gpt", True)
    upstream = (
        b'data: {"id":"c","model":"gpt","choices":[{"index":0,"delta":{"content":"Hi"}}]}\r\n\r\n'
        b'data: {"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
        b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}\n\n'
    )
    out = tr.feed(upstream[:30]) + tr.feed(upstream[30:]) + tr.feed(b"data: [DONE]\n\n")
    assert tr.done and tr.usage is not None and tr.usage.prompt == 3
    out += tr.end()
    names = [line[7:] for line in out.split(b"\n") if line.startswith(b"event: ")]
    assert names == [
        b"message_start",
        b"content_block_start",
        b"content_block_delta",
        b"content_block_stop",
        b"message_delta",
        b"message_stop",
    ]
    assert b'"stop_reason":"end_turn"' in out and b'"output_tokens":1' in out


def test_openai_caller_gets_the_usage_chunk_only_if_asked():
    plan = translate.Plan(OPENAI, CLAUDE)
    stream = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","usage":{"input_tokens":2,"output_tokens":1}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    for asked in (True, False):
        tr = translate.StreamTranslator(plan, "c", asked)
        out = tr.feed(stream) + tr.end()
        assert out.endswith(b"data: [DONE]\n\n")
        assert (b'"usage":{' in out) is asked
        assert tr.usage is not None and (tr.usage.prompt, tr.usage.completion) == (2, 4)


def test_event_reader_and_data_urls():
    reader = EventReader()
    assert list(reader.feed(b'data: {"a":1}\n\ndata: [DO')) == [{"a": 1}]
    assert list(reader.feed(b"NE]\n\n")) == [] and reader.done
    assert parse_data_url("data:text/plain,hi") == ("text/plain", "aGk=")
    assert parse_data_url("https://x/y.png") is None
    assert parse_data_url("data:image/png;base64,***") is None
