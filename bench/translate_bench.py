"""Translation cost (issue 15), printed by `make bench` after the throughput tables.

CPU time in-process, no servers: what the relay does per request with the upstream's bytes
on the pass-through path (OpenAI caller -> OpenAI channel: usage read from the body, or the
SSE usage filter over the stream) beside the translated path (OpenAI caller -> Anthropic
channel: request translated, answer or every stream event translated back, usage read).
The bytes are the dev mock's (relaygate.dev.mock), 20 completion tokens in 5 content
chunks unless BENCH_TRANSLATE_CHUNKS says otherwise. Medians of BENCH_TRANSLATE_REPS runs
of BENCH_TRANSLATE_N requests each.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

import orjson

from relaygate import translate
from relaygate.channels import TYPE_ANTHROPIC
from relaygate.dev.mock.anthropic import AnthropicRoutes
from relaygate.dev.mock.common import Hooks, MockConfig
from relaygate.dev.mock.core import MockCore
from relaygate.dev.mock.openai import OpenAIRoutes
from relaygate.relay import dialects
from relaygate.relay.sse import SSEUsageFilter

N = int(os.environ.get("BENCH_TRANSLATE_N", "2000"))
REPS = int(os.environ.get("BENCH_TRANSLATE_REPS", "5"))
CHUNKS = int(os.environ.get("BENCH_TRANSLATE_CHUNKS", "5"))
NO_HOOKS = Hooks(None, False, False, False)
REQUEST = {
    "model": "claude-3-5-haiku-latest",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say something in twenty words."},
    ],
    "max_tokens": 64,
}


def _fill(tpl: bytes) -> bytes:
    return MockCore.fill(tpl, b"msg_0123456789", b"1700000000")


def _per_request_us(work: Callable[[], object]) -> float:
    runs = []
    for _ in range(REPS):
        t0 = time.perf_counter()
        for _ in range(N):
            work()
        runs.append((time.perf_counter() - t0) / N * 1e6)
    return statistics.median(runs)


def main() -> None:
    core = MockCore(MockConfig(stream_chunks=CHUNKS))
    oa, an = OpenAIRoutes(core), AnthropicRoutes(core)
    model = "claude-3-5-haiku-latest"
    oa_body = _fill(oa._chat_body(model, 20, "stop", True))
    oa_stream = _fill(oa._chat_stream(model, 20, "stop", True).full)
    an_body = _fill(an._msg_body(model, 20, "end_turn", NO_HOOKS))
    an_stream = _fill(an._msg_stream(model, 20, "end_turn", NO_HOOKS).full)
    plan = translate.plan_for(dialects.OPENAI, "/v1/chat/completions", TYPE_ANTHROPIC)
    assert plan is not None
    raw = orjson.dumps(REQUEST)
    events = an_stream.count(b"\n\n")

    def pass_body() -> object:
        return dialects.read_usage(orjson.loads(oa_body))

    def pass_stream() -> object:
        f = SSEUsageFilter(strip_usage_chunk=True)
        return f.feed(oa_stream) + f.flush(), f.usage

    def tr_body() -> object:
        translate.request(plan, orjson.loads(raw), model, False, 64)
        return translate.response(plan, an_body, model)

    def tr_stream() -> object:
        translate.request(plan, {**orjson.loads(raw), "stream": True}, model, True, 64)
        t = translate.StreamTranslator(plan, model, False)
        return t.feed(an_stream) + t.end(), t.usage

    rows = [
        ("non-stream", _per_request_us(pass_body), _per_request_us(tr_body), 1),
        ("stream", _per_request_us(pass_stream), _per_request_us(tr_stream), events),
    ]
    print()
    print("Translation overhead, OpenAI caller -> Anthropic channel (CPU µs per request,")
    print(f"median of {REPS} x {N}; stream = {CHUNKS} content chunks, {events} upstream events)")
    print(f"{'':<12}{'pass-through':>14}{'translated':>12}{'overhead':>10}{'per event':>11}")
    for name, base, tr, n in rows:
        per_event = f"{(tr - base) / n:.2f}" if n > 1 else "-"
        print(f"{name:<12}{base:>14.1f}{tr:>12.1f}{tr - base:>10.1f}{per_event:>11}")


if __name__ == "__main__":
    main()
