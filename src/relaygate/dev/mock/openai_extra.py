"""OpenAI routes beyond chat/completions/embeddings, in the real wire format: the Responses
API (body, and its named-event stream ending with ``response.completed``, which carries the
usage), moderations (no usage, as the real API), speech (audio bytes), transcriptions (multipart
upload) and rerank (Jina's
shape, usage ``total_tokens``)."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from relaygate.dev.mock.common import (
    ID,
    TS,
    Hooks,
    Reject,
    StreamTpl,
    Style,
    error,
    has_bearer,
    hooks_for,
    json_body,
    model_of,
    opt_int,
    sse_event,
    stream_tpl,
    want_stream,
)
from relaygate.dev.mock.core import MockCore

_NO_KEY = "You didn't provide an API key."
MODERATION_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/instructions",
    "self-harm/intent",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
AUDIO_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}


class OpenAIExtraRoutes:
    def __init__(self, core: MockCore) -> None:
        self.core = core

    async def _start(self, request: web.Request) -> tuple[dict[str, Any], str, Hooks]:
        if not has_bearer(request):
            raise Reject(401, _NO_KEY)
        body = await json_body(request)
        model = model_of(body)
        return body, model, hooks_for(model)

    # ---- Responses API

    async def responses(self, request: web.Request) -> web.StreamResponse:
        core = self.core
        try:
            body, model, hooks = await self._start(request)
            limit = opt_int(body, "max_output_tokens")
            stream = want_stream(body)
            early = await core.pre(request, Style.OPENAI, hooks, stream)
        except Reject as e:
            return error(Style.OPENAI, e.status, e.message, e.param)
        if early is not None:
            return early
        ct, clamped = core.completion_tokens(limit)
        rid = core.new_id("")
        if not stream:
            key = ("resp", model, ct, clamped, hooks.no_usage)
            tpl: bytes = core.cached(key, lambda: self._resp_body(model, ct, clamped, hooks))
            return core.reply(tpl, rid)
        skey = ("resp-stream", model, ct, clamped, hooks.no_usage)
        stpl: StreamTpl = core.cached(skey, lambda: self._resp_stream(model, ct, clamped, hooks))
        return await core.send_stream(request, stpl, rid, hooks)

    def _resp_usage(self, ct: int) -> dict[str, Any]:
        pt = self.core.cfg.prompt_tokens
        return {
            "input_tokens": pt,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": ct,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": pt + ct,
        }

    def _message(self, text: str, done: bool) -> dict[str, Any]:
        content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        return {
            "id": f"msg_{ID}",
            "type": "message",
            "status": "completed" if done else "in_progress",
            "role": "assistant",
            "content": content if done else [],
        }

    def _response(
        self,
        model: str,
        status: str,
        output: list[Any],
        usage: dict[str, Any] | None,
        clamped: bool,
    ) -> dict[str, Any]:
        return {
            "id": f"resp_{ID}",
            "object": "response",
            "created_at": TS,
            "status": status,
            "error": None,
            "incomplete_details": {"reason": "max_output_tokens"} if clamped else None,
            "instructions": None,
            "model": model,
            "output": output,
            "parallel_tool_calls": True,
            "temperature": 1.0,
            "tool_choice": "auto",
            "tools": [],
            "top_p": 1.0,
            "text": {"format": {"type": "text"}},
            "usage": usage,
            "metadata": {},
        }

    def _resp_body(self, model: str, ct: int, clamped: bool, hooks: Hooks) -> bytes:
        usage = None if hooks.no_usage else self._resp_usage(ct)
        status = "incomplete" if clamped else "completed"
        text = "".join(self.core.pieces(ct))
        return orjson.dumps(
            self._response(model, status, [self._message(text, True)], usage, clamped)
        )

    def _resp_stream(self, model: str, ct: int, clamped: bool, hooks: Hooks) -> StreamTpl:
        pieces = self.core.pieces(ct)
        text = "".join(pieces)
        seq = iter(range(1 << 30))
        item_id = f"msg_{ID}"

        def ev(kind: str, **fields: Any) -> bytes:
            return sse_event(kind, {"type": kind, "sequence_number": next(seq), **fields})

        start = self._response(model, "in_progress", [], None, False)
        part = {"type": "output_text", "text": "", "annotations": []}
        head = [
            ev("response.created", response=start),
            ev("response.in_progress", response=start),
            ev("response.output_item.added", output_index=0, item=self._message("", False)),
            ev(
                "response.content_part.added",
                item_id=item_id,
                output_index=0,
                content_index=0,
                part=part,
            ),
        ]
        content = [
            ev(
                "response.output_text.delta",
                item_id=item_id,
                output_index=0,
                content_index=0,
                delta=p,
                logprobs=[],
            )
            for p in pieces
        ]
        done_part = {**part, "text": text}
        usage = None if hooks.no_usage else self._resp_usage(ct)
        final_status = "incomplete" if clamped else "completed"
        final = self._response(model, final_status, [self._message(text, True)], usage, clamped)
        end = "response.incomplete" if clamped else "response.completed"
        tail = [
            ev(
                "response.output_text.done",
                item_id=item_id,
                output_index=0,
                content_index=0,
                text=text,
                logprobs=[],
            ),
            ev(
                "response.content_part.done",
                item_id=item_id,
                output_index=0,
                content_index=0,
                part=done_part,
            ),
            ev("response.output_item.done", output_index=0, item=self._message(text, True)),
            ev(end, response=final),
        ]
        return stream_tpl(head, content, tail)

    # ---- moderations, speech, rerank

    async def moderations(self, request: web.Request) -> web.StreamResponse:
        try:
            if not has_bearer(request):
                raise Reject(401, _NO_KEY)
            body = await json_body(request)
            model = body.get("model", "omni-moderation-latest")
            if not isinstance(model, str):
                raise Reject(400, "Invalid 'model'.", "model")
            inputs = body.get("input")
            count = len(inputs) if isinstance(inputs, list) else 1
            if not inputs:
                raise Reject(400, "'input' is required.", "input")
            early = await self.core.pre(request, Style.OPENAI, hooks_for(model), False)
        except Reject as e:
            return error(Style.OPENAI, e.status, e.message, e.param)
        if early is not None:
            return early
        result = {
            "flagged": False,
            "categories": dict.fromkeys(MODERATION_CATEGORIES, False),
            "category_scores": dict.fromkeys(MODERATION_CATEGORIES, 0.0001),
            "category_applied_input_types": {c: ["text"] for c in MODERATION_CATEGORIES},
        }
        obj = {"id": f"modr-{ID}", "model": model, "results": [result] * count}
        return self.core.reply(orjson.dumps(obj), self.core.new_id(""))

    async def speech(self, request: web.Request) -> web.StreamResponse:
        try:
            body, _, hooks = await self._start(request)
            text = body.get("input")
            if not isinstance(text, str) or not text:
                raise Reject(400, "'input' is required.", "input")
            fmt = body.get("response_format", "mp3")
            if fmt not in AUDIO_TYPES:
                raise Reject(400, f"Invalid 'response_format': {fmt!r}.", "response_format")
            early = await self.core.pre(request, Style.OPENAI, hooks, False)
        except Reject as e:
            return error(Style.OPENAI, e.status, e.message, e.param)
        if early is not None:
            return early
        # Not playable audio: a recognisable header and some bytes per input character.
        audio = b"ID3\x04\x00\x00\x00\x00\x00\x00" + b"\x00" * (16 * len(text))
        return web.Response(body=audio, content_type=AUDIO_TYPES[fmt])

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        """Transcriptions and translations. Multipart ``file`` + ``model``; answers ``json`` (default), ``verbose_json`` or
        ``text``, with whisper's duration usage (the file's size stands in for its length)."""
        try:
            if not has_bearer(request):
                raise Reject(401, _NO_KEY)
            if not request.content_type.startswith("multipart/"):
                raise Reject(400, "Expected multipart/form-data.")
            form = await request.post()
            upload, model = form.get("file"), form.get("model")
            if not isinstance(upload, web.FileField) or not isinstance(model, str) or not model:
                raise Reject(400, "'file' and 'model' are required.")
            size = len(upload.file.read())
            fmt = form.get("response_format", "json")
            early = await self.core.pre(request, Style.OPENAI, hooks_for(model), False)
        except Reject as e:
            return error(Style.OPENAI, e.status, e.message, e.param)
        if early is not None:
            return early
        text = "".join(self.core.pieces(self.core.cfg.completion_tokens)).strip()
        if fmt == "text":
            return web.Response(text=text, content_type="text/plain")
        seconds = max(1, size // 16000)
        obj: dict[str, Any] = {"text": text, "usage": {"type": "duration", "seconds": seconds}}
        if fmt == "verbose_json":
            task = "translate" if request.path.endswith("/translations") else "transcribe"
            obj.update(task=task, language="english", duration=float(seconds))
        return web.Response(body=orjson.dumps(obj), content_type="application/json")

    async def rerank(self, request: web.Request) -> web.StreamResponse:
        try:
            body, model, hooks = await self._start(request)
            docs = body.get("documents")
            if not isinstance(docs, list) or not docs or not isinstance(body.get("query"), str):
                raise Reject(400, "'query' and a non-empty 'documents' list are required.")
            top_n = opt_int(body, "top_n") or len(docs)
            early = await self.core.pre(request, Style.OPENAI, hooks, False)
        except Reject as e:
            return error(Style.OPENAI, e.status, e.message, e.param)
        if early is not None:
            return early
        results = []
        for i, doc in enumerate(docs[:top_n]):
            item: dict[str, Any] = {"index": i, "relevance_score": round(1.0 / (i + 1), 6)}
            if body.get("return_documents"):
                item["document"] = {"text": doc if isinstance(doc, str) else str(doc)}
            results.append(item)
        obj: dict[str, Any] = {"model": model, "results": results}
        if not hooks.no_usage:
            obj["usage"] = {"total_tokens": self.core.cfg.prompt_tokens}
        return self.core.reply(orjson.dumps(obj), self.core.new_id(""))
