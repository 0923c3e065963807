"""Wiring the provider routes into one aiohttp app, and serving it from the command line."""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import Sequence

from aiohttp import web

from relaygate.dev.mock.anthropic import AnthropicRoutes
from relaygate.dev.mock.common import MOCK_CONFIG, MockConfig
from relaygate.dev.mock.core import MockCore
from relaygate.dev.mock.gemini import GeminiRoutes
from relaygate.dev.mock.openai import OpenAIRoutes
from relaygate.dev.mock.openai_extra import OpenAIExtraRoutes

PROVIDERS = ("openai", "anthropic", "gemini")


def build_app(cfg: MockConfig, providers: tuple[str, ...] = PROVIDERS) -> web.Application:
    """The mock; ``providers`` limits it to some providers' routes (a mock that speaks one
    wire format only, to prove a translated request reached the route of its channel type)."""
    core = MockCore(cfg)
    openai, anthropic, gemini = OpenAIRoutes(core), AnthropicRoutes(core), GeminiRoutes(core)
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[MOCK_CONFIG] = cfg
    if "openai" in providers:
        app.router.add_post("/v1/chat/completions", openai.chat_completions)
        app.router.add_post("/v1/completions", openai.completions)
        app.router.add_post("/v1/embeddings", openai.embeddings)
        app.router.add_get("/v1/models", openai.models)
        extra = OpenAIExtraRoutes(core)
        app.router.add_post("/v1/responses", extra.responses)
        app.router.add_post("/v1/moderations", extra.moderations)
        app.router.add_post("/v1/audio/speech", extra.speech)
        app.router.add_post("/v1/audio/transcriptions", extra.transcriptions)
        app.router.add_post("/v1/audio/translations", extra.transcriptions)
        app.router.add_post("/v1/rerank", extra.rerank)
    if "anthropic" in providers:
        app.router.add_post("/v1/messages", anthropic.messages)
    if "gemini" in providers:
        app.router.add_post("/v1beta/models/{spec}", gemini.gemini)
    return app


def _loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def run(host: str, port: int, cfg: MockConfig) -> None:
    """Serve the mock until interrupted (blocking; uvloop when available, no access log)."""
    web.run_app(
        build_app(cfg),
        host=host,
        port=port,
        access_log=None,
        print=None,
        backlog=4096,
        loop=_loop(),
    )


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m relaygate.dev.mock --port 8000``."""
    p = argparse.ArgumentParser(
        prog="relaygate.dev.mock", description="Fake OpenAI/Anthropic/Gemini upstream."
    )
    p.add_argument("--host", default=os.environ.get("MOCK_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("MOCK_PORT", "8000")))
    p.add_argument("--prompt-tokens", type=int, default=MockConfig.prompt_tokens)
    p.add_argument("--completion-tokens", type=int, default=MockConfig.completion_tokens)
    p.add_argument("--stream-chunks", type=int, default=MockConfig.stream_chunks)
    p.add_argument("--chunk-delay", type=float, default=MockConfig.chunk_delay)
    a = p.parse_args(argv)
    cfg = MockConfig(a.prompt_tokens, a.completion_tokens, a.stream_chunks, a.chunk_delay)
    run(a.host, a.port, cfg)
