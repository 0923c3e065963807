"""Issue 15: the official openai, anthropic and google-genai SDKs, stream and non-stream,
each reach each of three mock upstreams (an OpenAI-, an Anthropic- and a Gemini-type
channel; relaygate.dev.mock speaks each provider's wire format): the answer's text, its
tool calls and its usage come through, and the charge is the upstream's usage priced by the
model's ratios. The three same-dialect pairs take the pass-through path, the six others
are translated (relaygate.translate)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import orjson
import pytest
from aiohttp.test_utils import TestServer
from google import genai
from google.genai import types as gtypes

from relaygate.appkeys import RUNTIME
from relaygate.channels import TYPE_ANTHROPIC, TYPE_GEMINI, TYPE_OPENAI
from relaygate.dev.mock import build_app
from relaygate.dev.mock.common import WORDS, MockConfig
from relaygate.dev.mock.tools import TOOL_ARGS

from .helpers import ledger, refresh

# google-genai subclasses aiohttp.ClientSession, which aiohttp warns about.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Inheritance class AiohttpClientSession:DeprecationWarning"
)

PROMPT, COMPLETION = 10, 20  # what the mock reports (MockConfig defaults)
TEXT = "".join(WORDS[i % len(WORDS)] + " " for i in range(COMPLETION))
MODELS = {"openai": "up-openai", "claude": "up-claude", "gemini": "up-gemini"}
TYPES = {"openai": TYPE_OPENAI, "claude": TYPE_ANTHROPIC, "gemini": TYPE_GEMINI}
SCHEMA = {"type": "object", "properties": {"location": {"type": "string"}}}
TOOL = "get_weather"
QUESTION = "What is the weather in Paris?"


@dataclass
class Answer:
    text: str
    tool: tuple[str, dict[str, Any]] | None
    usage: tuple[int, int]


async def _openai(base: str, key: str, model: str, stream: bool, tools: bool) -> Answer:
    client = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0)
    extra: dict[str, Any] = {}
    if tools:
        fn = {"name": TOOL, "description": "weather", "parameters": SCHEMA}
        extra["tools"] = [{"type": "function", "function": fn}]
    messages: Any = [{"role": "user", "content": QUESTION}]
    try:
        if not stream:
            r = await client.chat.completions.create(
                model=model, messages=messages, max_tokens=64, **extra
            )
            msg = r.choices[0].message
            tool = None
            if msg.tool_calls:
                call = msg.tool_calls[0]
                tool = (call.function.name, orjson.loads(call.function.arguments))
            assert r.usage is not None
            return Answer(
                msg.content or "", tool, (r.usage.prompt_tokens, r.usage.completion_tokens)
            )
        text, name, args, usage = "", "", "", (0, 0)
        chunks = await client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=64,
            stream=True,
            stream_options={"include_usage": True},
            **extra,
        )
        async for c in chunks:
            if c.usage is not None:
                usage = (c.usage.prompt_tokens, c.usage.completion_tokens)
            for choice in c.choices:
                text += choice.delta.content or ""
                for call in choice.delta.tool_calls or []:
                    if call.function is not None:
                        name += call.function.name or ""
                        args += call.function.arguments or ""
        return Answer(text, (name, orjson.loads(args)) if name else None, usage)
    finally:
        await client.close()


async def _anthropic(base: str, key: str, model: str, stream: bool, tools: bool) -> Answer:
    client = anthropic.AsyncAnthropic(base_url=base, api_key=key, max_retries=0)
    extra: dict[str, Any] = {}
    if tools:
        extra["tools"] = [{"name": TOOL, "description": "weather", "input_schema": SCHEMA}]
    messages: Any = [{"role": "user", "content": QUESTION}]
    try:
        if stream:
            async with client.messages.stream(
                model=model, max_tokens=64, messages=messages, **extra
            ) as s:
                async for _ in s.text_stream:
                    pass
                msg = await s.get_final_message()
        else:
            msg = await client.messages.create(
                model=model, max_tokens=64, messages=messages, **extra
            )
        text = "".join(b.text for b in msg.content if b.type == "text")
        tool = next(((b.name, dict(b.input)) for b in msg.content if b.type == "tool_use"), None)
        return Answer(text, tool, (msg.usage.input_tokens, msg.usage.output_tokens))
    finally:
        await client.close()


async def _gemini(base: str, key: str, model: str, stream: bool, tools: bool) -> Answer:
    client = genai.Client(
        api_key=key, http_options=gtypes.HttpOptions(base_url=base, api_version="v1beta")
    )
    config = gtypes.GenerateContentConfig(max_output_tokens=64)
    if tools:
        decl = gtypes.FunctionDeclaration(name=TOOL, description="weather", parameters=SCHEMA)  # type: ignore[arg-type]
        config.tools = [gtypes.Tool(function_declarations=[decl])]
    text, tool, usage = "", None, (0, 0)
    if stream:
        responses = [
            r
            async for r in await client.aio.models.generate_content_stream(
                model=model, contents=QUESTION, config=config
            )
        ]
    else:
        responses = [
            await client.aio.models.generate_content(model=model, contents=QUESTION, config=config)
        ]
    for r in responses:
        for cand in r.candidates or []:
            for part in (cand.content.parts if cand.content else None) or []:
                if part.text:
                    text += part.text
                if part.function_call is not None:
                    tool = (part.function_call.name or "", dict(part.function_call.args or {}))
        meta = r.usage_metadata
        if meta is not None and meta.candidates_token_count is not None:
            usage = (meta.prompt_token_count or 0, meta.candidates_token_count)
    return Answer(text, tool, usage)


SDKS = {"openai": _openai, "anthropic": _anthropic, "gemini": _gemini}


PROVIDER = {"openai": "openai", "claude": "anthropic", "gemini": "gemini"}


@pytest.fixture
async def mocks() -> AsyncIterator[dict[str, str]]:
    """One mock per channel type, each speaking only its provider's format: an untranslated
    request to the wrong route would get a 404."""
    servers = {
        kind: TestServer(build_app(MockConfig(), (PROVIDER[kind],)), host="127.0.0.1")
        for kind in MODELS
    }
    for server in servers.values():
        await server.start_server()
    yield {kind: str(s.make_url("")).rstrip("/") for kind, s in servers.items()}
    for server in servers.values():
        await server.close()


@pytest.fixture
async def world(env, relay, mocks):
    uid, _ = await env.root_user()
    for kind, model in MODELS.items():
        await env.admin.create_channel(kind, mocks[kind], "upstream-key", model, type_=TYPES[kind])
    ratios = {m: 1.5 for m in MODELS.values()}
    await env.admin.set_option("ModelRatio", orjson.dumps(ratios).decode())
    await env.admin.set_option("CompletionRatio", orjson.dumps(dict.fromkeys(ratios, 4)).decode())
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**9)
    return uid, tok


@pytest.mark.parametrize("tools", [False, True], ids=["text", "tools"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("upstream", list(MODELS))
@pytest.mark.parametrize("sdk", list(SDKS))
async def test_every_sdk_reaches_every_upstream(env, relay, world, sdk, upstream, stream, tools):
    uid, tok = world
    model = MODELS[upstream]
    base = str(relay.make_url("")).rstrip("/")
    _, before = await ledger(env, uid, tok.id)
    answer = await SDKS[sdk](base, f"sk-{tok.key}", model, stream, tools)
    if tools:
        assert answer.tool == (TOOL, TOOL_ARGS)
    else:
        assert answer.tool is None
        assert answer.text == TEXT
    assert answer.usage == (PROMPT, COMPLETION)
    _, after = await ledger(env, uid, tok.id)
    rates = relay.app[RUNTIME].catalog.prices.rates(model, "default")
    assert after - before == rates.charge(PROMPT, COMPLETION)
