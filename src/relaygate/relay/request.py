"""One relay request as it arrives: which route, which model, how much output it may
produce (what is reserved), and the body as it will be sent upstream. Pure functions of
the request: no I/O, so the fuzz tests drive them directly."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from random import getrandbits
from typing import Any

import orjson
from aiohttp import web

from relaygate.cache import TokenMeta
from relaygate.pricing import ModelPricing, Rates
from relaygate.relay import dialects, errors

IMAGE_TOKEN_BOUND = 1500  # prompt tokens one image may cost (gpt-4o high detail, 2048 px)

# (prompt, completion, estimated): what a route bills from the request alone, whatever the
# upstream answers (speech: characters of the input; moderation: its input text).
Metered = tuple[int, int, bool]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """How one route is priced, sized and spoken."""

    path: str
    max_field: str | None  # the request field that bounds the output, if any
    default_output: int | None  # None = the settings' allowance; 0 = no output tokens
    streams: bool
    dialect: str = dialects.OPENAI
    route: str = ""  # the aiohttp route, also the metrics label; the path unless set
    default_model: str | None = None  # the model when the body names none (moderations)
    # Usage from the request, for routes whose answer reports none (relay.compat); raises
    # a RelayError (400) on a body it cannot meter, before anything is reserved.
    meter: Callable[[dict[str, Any]], Metered] | None = None
    # A body that is not JSON (multipart uploads): parsed by this from (raw, Content-Type),
    # and sent upstream as received, with the client's Content-Type.
    parse: Callable[[bytes, str], dict[str, Any]] | None = None

    def __post_init__(self) -> None:
        if not self.route:
            object.__setattr__(self, "route", self.path)


CHAT = Endpoint("/v1/chat/completions", "max_tokens", None, True)
COMPLETIONS = Endpoint("/v1/completions", "max_tokens", 16, True)
EMBEDDINGS = Endpoint("/v1/embeddings", None, 0, False)
IMAGES = Endpoint("/v1/images/generations", None, 0, False)
CLAUDE_MESSAGES = Endpoint("/v1/messages", "max_tokens", None, True, dialects.CLAUDE)
GEMINI_GENERATE = Endpoint(
    "/v1beta/models", "maxOutputTokens", None, True, dialects.GEMINI, "/v1beta/models/{target}"
)


def new_request_id() -> str:
    """Unique and time-ordered: nanosecond clock then 32 random bits, in hex.

    ``random`` rather than ``os.urandom`` (a syscall per request): the id needs uniqueness,
    not secrecy, and ``random`` is reseeded in every forked worker."""
    return f"{time.time_ns():016x}{getrandbits(32):08x}"


@dataclass(slots=True)
class Job:
    """One admitted request: what was reserved, and everything the usage event needs."""

    rid: str
    meta: TokenMeta
    model: str
    rates: Rates
    body_bytes: int
    reserved: int
    ledger_keys: tuple[str, str, str, str]
    member: str
    ip: str
    t0: float
    channel_id: int | None = None  # the channel last called (forward sets it)
    # Channels called, in order (failover); logged as other.admin_info.use_channel when
    # more than one was.
    attempts: list[int] = field(default_factory=list)
    metered: Metered | None = None  # usage known from the request (Endpoint.meter)


def parse_body(raw: bytes) -> dict[str, Any]:
    if not raw:
        raise errors.bad_request("The request body is empty; send a JSON object.", "invalid_json")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise errors.bad_request(
            f"The request body is not valid JSON: {exc}", "invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise errors.bad_request("The request body must be a JSON object.", "invalid_json")
    return body


def requested_model(body: dict[str, Any], request: web.Request, ep: Endpoint) -> tuple[str, bool]:
    """(model, stream). Gemini names both in the path: ``/v1beta/models/{model}:{action}``."""
    if ep.dialect == dialects.GEMINI:
        model, _, action = request.match_info.get("target", "").partition(":")
        if not model or action not in ("generateContent", "streamGenerateContent"):
            raise errors.bad_request(
                "Expected /v1beta/models/{model}:generateContent or :streamGenerateContent.",
                "invalid_path",
            )
        return model, action == "streamGenerateContent"
    named = body.get("model", ep.default_model)
    if not isinstance(named, str) or not named.strip():
        raise errors.bad_request(
            "'model' is required and must be a non-empty string.", "missing_model"
        )
    return named, bool(body.get("stream")) and ep.streams


@dataclass(frozen=True, slots=True)
class OutputBound:
    """How much output one request may produce, all of which is reserved."""

    full: int  # completion tokens of the whole answer (every choice): what is reserved
    field: str | None  # the request field carrying the output bound, if the route has one
    choices: int  # n / candidateCount: the answer's choices share ``full``
    send: int  # per-choice bound relaygate must send upstream (0: the client's own stands)
    calls: int = 1  # per-call priced units (images n)


MAX_CHOICES = 128
MAX_PROMPTS = 2048  # OpenAI's limit on a legacy completion's prompt list
MAX_IMAGES = 10


def _count(body: dict[str, Any], name: str, value: Any, maximum: int) -> int:
    if value is None:
        return 1
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= maximum:
        raise errors.bad_request(
            f"'{name}' must be an integer between 1 and {maximum}.", f"invalid_{name}"
        )
    return value


def choices_of(body: dict[str, Any], dialect: str) -> int:
    """How many answers one request asks for: OpenAI ``n``, Gemini ``candidateCount``."""
    if dialect == dialects.OPENAI:
        return _count(body, "n", body.get("n"), MAX_CHOICES)
    if dialect == dialects.GEMINI:
        cfg = body.get("generationConfig")
        count = cfg.get("candidateCount") if isinstance(cfg, dict) else None
        return _count(body, "candidateCount", count, MAX_CHOICES)
    return 1


def _completion_choices(body: dict[str, Any], n: int) -> int:
    """Legacy completions generate ``best_of`` answers (billed, ``n`` returned) for each
    prompt of a ``prompt`` list: what the upstream may bill is their product, not ``n``."""
    best_of = _count(body, "best_of", body.get("best_of"), MAX_CHOICES)
    if best_of < n:
        raise errors.bad_request("'best_of' must be at least 'n'.", "invalid_best_of")
    prompt = body.get("prompt")
    prompts = 1
    # A list of strings, or of token arrays, is one prompt each; one token array is one.
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int):
        prompts = len(prompt)
        if prompts > MAX_PROMPTS:
            raise errors.bad_request(
                f"'prompt' may hold at most {MAX_PROMPTS} prompts.", "invalid_prompt"
            )
    return max(n, best_of) * prompts


def output_bounds(
    body: dict[str, Any], ep: Endpoint, pricing: ModelPricing, cap: int
) -> OutputBound:
    """The worst case the request may produce. No allowance smaller than that: reserving
    less than the upstream may deliver is what let concurrent requests overspend, each
    seeing room for a full answer and each reserving a little.

    With no client bound the model's maximum output is reserved (a route with a documented
    default, legacy completions' 16, sends that default explicitly, so that an upstream with
    another default cannot exceed it). ``cap`` (tokens per choice, 0 = none) lowers the bound
    sent upstream."""
    if pricing.is_per_call:
        calls = _count(body, "n", body.get("n"), MAX_IMAGES) if ep is IMAGES else 1
        return OutputBound(0, None, 1, 0, calls)
    if ep.max_field is None:
        return OutputBound(0, None, 1, 0)
    if ep.dialect == dialects.RESPONSES and body.get("background") not in (None, False):
        # A background answer comes back queued, with no usage; what it then generates
        # would be billed to the channel and never to the token (docs/compat-relay.md).
        raise errors.bad_request(
            "'background' is not supported: send the request without it.", "unsupported_background"
        )
    given, field = dialects.max_output(body, ep.dialect, ep.max_field)
    choices = choices_of(body, ep.dialect)
    if ep is COMPLETIONS:
        choices = _completion_choices(body, choices)
    send = 0
    if given is not None:
        if not isinstance(given, int) or isinstance(given, bool) or given < 1:
            raise errors.bad_request(f"'{field}' must be a positive integer.", f"invalid_{field}")
        per_choice = given
    elif ep.default_output is not None:
        per_choice = send = ep.default_output
    else:
        per_choice = pricing.max_output
    if cap and per_choice > cap:
        per_choice = send = cap
    return OutputBound(per_choice * choices, field, choices, send)


def within_quota_cap(bound: OutputBound, base: int, per_token_micro: int, cap: int) -> OutputBound:
    """Lower the output bound so that one reservation costs at most ``cap`` quota units
    (``RELAYGATE_MAX_RESERVE_QUOTA``): one request with a huge ``max_tokens`` on an
    unlimited token must not hold its user's whole balance while it runs. The lowered
    bound is sent upstream, so the answer stays within what was reserved. The prompt part
    is never cut (one output token per choice stays possible)."""
    if per_token_micro <= 0 or not bound.full:
        return bound
    affordable = (cap - base) * 1_000_000 // per_token_micro
    if bound.full <= affordable:
        return bound
    per_choice = max(1, affordable // bound.choices)
    return replace(bound, full=per_choice * bound.choices, send=per_choice)


def splice_include_usage(raw: bytes) -> bytes:
    """``raw`` (a JSON object without ``stream_options``) with include_usage added."""
    end = raw.rindex(b"}")
    return raw[:end] + b',"stream_options":{"include_usage":true}' + raw[end:]


def estimate_tokens(nbytes: int) -> int:
    """Fair estimate for billing when the upstream reports nothing: ~4 bytes per token."""
    return (nbytes + 3) // 4


@dataclass(slots=True)
class UpstreamBody:
    """What is sent upstream: the client's bytes when nothing had to change, else ``body``
    re-serialized (``modified``)."""

    body: dict[str, Any]
    raw: bytes
    modified: bool
    inject_usage: bool  # include_usage added by us: its chunk is not passed to the client
    # Output bound per choice a translation sends when the client gave none (Anthropic
    # requires max_tokens): what was reserved for.
    max_output: int = 0


def fit_body(
    body: dict[str, Any],
    raw: bytes,
    ep: Endpoint,
    bound: OutputBound,
    per_choice: int,
    stream: bool,
) -> UpstreamBody:
    """The upstream is never allowed more output than was reserved (``per_choice``, 0: the
    client's own bound stands), and an OpenAI stream always reports its usage."""
    modified = False
    if per_choice and bound.field is not None:
        dialects.set_max_output(body, ep.dialect, bound.field, per_choice)
        modified = True
    inject_usage = False
    if stream and ep.dialect == dialects.OPENAI:
        had_opts = "stream_options" in body
        opts = body.get("stream_options")
        if not (isinstance(opts, dict) and opts.get("include_usage") is True):
            body["stream_options"] = {
                **(opts if isinstance(opts, dict) else {}),
                "include_usage": True,
            }
            inject_usage = True
            if not had_opts and not modified:
                # The common case: splice the option into the client's bytes rather than
                # re-serialize the whole body (the last byte of an object is "}").
                raw = splice_include_usage(raw)
            else:
                modified = True
    return UpstreamBody(body, raw, modified, inject_usage)
