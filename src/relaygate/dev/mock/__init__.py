"""A fast fake LLM upstream (OpenAI, Anthropic Messages, Gemini) for dev, tests and benchmarks.

One process serves many tests: behaviour is chosen per request, never by restarting it.

Test hooks (substrings of the requested model name, combinable, e.g. ``gpt-slow-no-usage``):

* ``fail-500`` -> HTTP 500 with the provider's error body.
* ``fail-429`` -> HTTP 429 with the provider's error body.
* ``no-usage`` -> no usage anywhere (non-stream body and every stream event).
* ``slow``     -> sleep 0.5 s before answering; when streaming, before every content chunk
  instead (on top of ``MockConfig.chunk_delay``).
* ``drop``     -> streams only: the connection is closed abruptly right after the second
  content chunk (no finish chunk, no usage, no ``[DONE]``; the chunked body is left
  unterminated so the client sees a payload error).

Tool calls: a request that declares tools and ends with a user turn (not a tool result) is
answered with a call of its first tool (arguments ``tools.TOOL_ARGS``) in the provider's
wire format, streamed or not; after a tool result the answer is text again.

Request header ``x-mock-delay-ms: N`` sleeps N milliseconds before answering (before the
response headers, also for the failure hooks).

Authentication: OpenAI routes need ``Authorization: Bearer <anything>``; the Anthropic route
also accepts ``x-api-key``; the Gemini routes also accept ``x-goog-api-key`` or ``?key=``.
The key is never looked at beyond "present", never stored and never logged (``run`` turns the
access log off because a Gemini ``?key=`` would otherwise appear in the request line).

Token accounting is deterministic: ``prompt_tokens`` is always ``MockConfig.prompt_tokens``;
completion tokens are ``min(MockConfig.completion_tokens, <the request's max tokens>)`` where
the request's max is ``max_tokens``/``max_completion_tokens`` (OpenAI), ``max_tokens``
(Anthropic) or ``generationConfig.maxOutputTokens`` (Gemini). The answer text has exactly that
many words, split over ``stream_chunks`` content chunks when streamed (stream and non-stream
texts are identical). A clamped answer reports ``length``/``max_tokens``/``MAX_TOKENS``.

Speed: every body is built once per distinct (route, model, tokens, flags) and cached as bytes
with placeholders for the response id and the timestamp, which are substituted per request.

Modules: ``common`` (config, hooks, error bodies, parsing), ``core`` (shared state and request
flow), ``openai``, ``openai_extra`` (responses, moderations, speech, rerank), ``anthropic``,
``gemini`` (the routes) and ``app`` (wiring, ``run``).
"""

from __future__ import annotations

from relaygate.dev.mock.app import build_app, main, run
from relaygate.dev.mock.common import MOCK_CONFIG, MockConfig

__all__ = ["MOCK_CONFIG", "MockConfig", "build_app", "main", "run"]
