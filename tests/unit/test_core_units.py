"""Pricing, configuration, SSE filtering, key handling and the metadata cache."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relaygate.cache import TokenCache
from relaygate.config import ConfigError, from_env
from relaygate.credentials import hash_secret, mask_key, new_token_key, strip_key
from relaygate.pricing import ModelPricing, PriceBook, Rates, charge, plan, reservation_cost
from relaygate.relay.sse import SSEUsageFilter


def test_new_api_quota_formula():
    book = PriceBook()
    mini = book.model("gpt-4o-mini")
    assert mini is not None
    # (10 + 20 * 4) * 0.075 = 6.75 -> 6
    assert charge(mini, Decimal(1), 10, 20) == 6
    assert charge(mini, Decimal(1), 1, 0) == 1  # never 0 for a priced model
    assert book.model("nope") is None
    priced = PriceBook.from_options({"ModelPrice": '{"x": 0.002}'}).model("x")
    assert priced is not None and charge(priced, Decimal(2), 999, 999) == 2000


@pytest.mark.parametrize("prompt,completion", [(0, 0), (1, 1), (77, 3), (1000, 4096), (5, 100000)])
def test_reservation_bounds_the_charge(prompt, completion):
    for model in ("gpt-4o-mini", "gpt-4o", "gpt-3.5-turbo", "claude-3-5-sonnet-20241022"):
        pricing = PriceBook().model(model)
        assert pricing is not None
        p = plan(pricing, Decimal("1.5"), prompt)
        assert reservation_cost(p, completion) >= charge(
            pricing, Decimal("1.5"), prompt, completion
        )


_ratios = st.decimals(min_value=0, max_value=200, places=4, allow_nan=False, allow_infinity=False)


@settings(max_examples=400, deadline=None)
@given(
    model_ratio=_ratios,
    completion_ratio=_ratios,
    group_ratio=_ratios,
    per_call=st.one_of(st.none(), st.decimals(min_value=0, max_value=10, places=6)),
    prompt=st.integers(0, 10**7),
    completion=st.integers(0, 10**6),
)
def test_integer_rates_agree_with_the_decimal_formula(
    model_ratio, completion_ratio, group_ratio, per_call, prompt, completion
):
    """The hot path's integer arithmetic gives New API's Decimal result, to the unit."""
    pricing = ModelPricing(model_ratio, completion_ratio, per_call, 4096)
    rates = Rates(pricing, group_ratio)
    assert rates.charge(prompt, completion) == charge(pricing, group_ratio, prompt, completion)
    assert rates.plan(prompt) == plan(pricing, group_ratio, prompt)


def test_rates_are_cached_per_model_and_group():
    book = PriceBook()
    assert book.rates("gpt-4o", "default") is book.rates("gpt-4o", "default")
    assert book.rates("nope", "default") is None
    mini = book.rates("gpt-4o-mini", "default")
    assert mini is not None and mini.charge(10, 20) == 6


def test_bad_options_are_rejected():
    with pytest.raises(ValueError):
        PriceBook.from_options({"ModelRatio": '{"x": "cheap"}'})


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError, match="RELAYGATE_PORT"):
        from_env({"RELAYGATE_PORT": "http"})
    with pytest.raises(ConfigError, match="RELAYGATE_REDIS_URL"):
        from_env({"RELAYGATE_REDIS_URL": "localhost"})
    with pytest.raises(ConfigError, match="RELAYGATE_TRUSTED_PROXIES"):
        from_env({"RELAYGATE_TRUSTED_PROXIES": "10.0.0.0/8,nope"})
    with pytest.raises(ConfigError, match="RESERVATION_TTL"):
        from_env({"RELAYGATE_RESERVATION_TTL": "10", "RELAYGATE_UPSTREAM_TIMEOUT": "30"})
    s = from_env({"RELAYGATE_SHARDS": "8"}, overrides={"port": "4000"})
    assert s.shards == 8 and s.port == 4000


def test_keys():
    key = new_token_key()
    assert len(key) == 48 and key.isalnum()
    assert mask_key(key) == f"{key[:4]}{'*' * 10}{key[-4:]}"
    assert strip_key(f"Bearer sk-{key}") == key
    assert hash_secret(key) != key.encode()


def _event(obj: object) -> bytes:
    return b"data: " + orjson.dumps(obj) + b"\n\n"


def test_sse_filter_strips_injected_usage_chunk_across_splits():
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    stream = (
        _event({"choices": [{"delta": {"content": "a"}}]}) + _event(usage) + b"data: [DONE]\n\n"
    )
    f = SSEUsageFilter(strip_usage_chunk=True)
    out = b"".join(f.feed(stream[i : i + 7]) for i in range(0, len(stream), 7)) + f.flush()
    assert b'"usage"' not in out and out.endswith(b"data: [DONE]\n\n")
    assert f.usage == (3, 4) and f.done
    g = SSEUsageFilter(strip_usage_chunk=False)
    assert g.feed(stream) == stream


def test_sse_filter_per_dialect_usage_and_end():
    openai = (
        b'data: {"choices":[{"delta":{"content":"a"}}],"usage": null}\n\n'
        + _event({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 6}})
        + b"data: [DONE]\n\n"
    )
    f = SSEUsageFilter(strip_usage_chunk=False)
    assert f.feed(openai) == openai and f.usage == (5, 6) and f.done and f.has_content
    claude = (
        b"event: message_start\n"
        + _event({"type": "message_start", "message": {"usage": {"input_tokens": 7}}})
        + b"event: content_block_delta\n"
        + _event({"type": "content_block_delta", "delta": {"text": "hi"}})
        + b"event: message_delta\n"
        + _event({"type": "message_delta", "delta": {}, "usage": {"output_tokens": 9}})
        + b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    c = SSEUsageFilter(strip_usage_chunk=False, dialect="claude")
    out = b"".join(c.feed(claude[i : i + 50]) for i in range(0, len(claude), 50))
    assert out == claude and c.usage == (7, 9) and c.done
    gemini = _event({"candidates": [{"content": {}}]}) + _event(
        {
            "candidates": [{"finishReason": "STOP"}],
            "usageMetadata": {"promptTokenCount": 2, "candidatesTokenCount": 3},
        }
    )
    g = SSEUsageFilter(strip_usage_chunk=False, dialect="gemini")
    assert g.feed(gemini) == gemini and g.usage == (2, 3) and g.done and g.has_content
    quoted = _event({"choices": [{"delta": {"content": 'the "usage":{ field'}}]})
    q = SSEUsageFilter(strip_usage_chunk=True)
    assert q.feed(quoted) == quoted and q.usage is None and not q.done


def test_sse_filter_end_looked_for_in_the_tail_and_content_seen_late():
    """OpenAI's end is found in a long block's tail (whitespace allowed); a ``[DONE]`` that
    is not the block's last event, or sits in answer text, is no end; content that first
    appears in a later block is still seen."""
    long = _event({"id": "chatcmpl-1", "pad": "x" * 4000})
    f = SSEUsageFilter(strip_usage_chunk=False)
    assert f.feed(long) == long and not f.has_content and not f.done
    text = _event({"choices": [{"delta": {"content": "data: [DONE]"}}]})
    assert f.feed(text) == text and f.has_content and not f.done
    middle = b"data: [DONE]\n\n" + _event({"choices": [{"delta": {"content": "b"}}]})
    assert f.feed(middle) == middle and not f.done
    end = long + b"data: [DONE]   \n\n"
    assert f.feed(end) == end and f.done
    crlf = SSEUsageFilter(strip_usage_chunk=False)
    block = long.replace(b"\n\n", b"\r\n\r\n") + b"data: [DONE]\r\n\r\n"
    assert crlf.feed(block) == block and crlf.done and not crlf.has_content


def test_sse_filter_streams_crlf_events():
    """SSE allows CRLF line ends: events are still forwarded one by one, not at the end."""
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}
    events = [
        b"data: " + orjson.dumps({"choices": [{"delta": {"content": "a"}}], "usage": None}),
        b"data: " + orjson.dumps(usage),
        b"data: [DONE]",
    ]
    stream = b"".join(e + b"\r\n\r\n" for e in events)
    f = SSEUsageFilter(strip_usage_chunk=True)
    first = f.feed(stream[: len(events[0]) + 6])
    assert first == events[0] + b"\r\n\r\n", "the first event goes out before the rest arrives"
    rest = f.feed(stream[len(events[0]) + 6 :]) + f.flush()
    assert rest == b"data: [DONE]\r\n\r\n"
    assert f.usage == (3, 4) and f.done


async def test_cache_single_flight_and_negative_cache():
    calls = 0

    async def loader(h: bytes):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return None

    cache = TokenCache(loader, ttl=60, negative_ttl=60)
    results = await asyncio.gather(*(cache.get(b"k") for _ in range(50)))
    assert results == [None] * 50 and calls == 1
    assert await cache.get(b"k") is None and calls == 1


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model":"m","stream":true}',
        b'{ "model": "m", "stream": true, "messages": [{"content": "}"}] }\n  ',
    ],
)
def test_include_usage_is_spliced_into_the_clients_bytes(raw):
    from relaygate.relay.request import splice_include_usage

    spliced = orjson.loads(splice_include_usage(raw))
    assert spliced == {**orjson.loads(raw), "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("model", ["gpt-4o-mini", "dall-e-3"])
def test_event_other_is_the_json_the_log_had(model):
    rates = PriceBook().rates(model, "default")
    assert rates is not None
    for estimated in (True, False):
        expected = {**rates.event_ratios, "estimated": estimated, "reserved": 1234}
        assert orjson.loads(rates.event_other(estimated, 1234)) == expected
    assert '"estimated":true' in rates.event_other(True, 1)  # what the flusher looks for
