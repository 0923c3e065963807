"""New API's quota formula, the default price table, and reservation sizing.

500,000 quota units = $1. A per-token model is charged
``(prompt + completion x completion_ratio) x model_ratio x group_ratio`` truncated (at least 1
when the ratios are not zero); a per-call model ``price_usd x 500000 x group_ratio``.
Computation uses Decimal so that the charge is exactly New API's, not a float approximation.

Operators override the tables through the ``options`` rows ``ModelRatio``, ``CompletionRatio``,
``ModelPrice`` and ``GroupRatio`` (New API's option names, JSON objects).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, Decimal

import orjson

QUOTA_PER_UNIT = 500_000  # quota units per USD
MICRO = 1_000_000

# model -> (model_ratio, completion_ratio, max output tokens)
DEFAULT_MODELS: dict[str, tuple[float, float, int]] = {
    "gpt-4o": (1.25, 4, 16384),
    "gpt-4o-2024-08-06": (1.25, 4, 16384),
    "gpt-4o-mini": (0.075, 4, 16384),
    "gpt-4.1": (1.0, 4, 32768),
    "gpt-4.1-mini": (0.2, 4, 32768),
    "gpt-4.1-nano": (0.05, 4, 32768),
    "gpt-4-turbo": (5, 3, 4096),
    "gpt-4": (15, 2, 8192),
    "gpt-3.5-turbo": (0.25, 3, 4096),
    "o1": (7.5, 4, 100000),
    "o1-mini": (0.55, 4, 65536),
    "o3-mini": (0.55, 4, 100000),
    "claude-3-5-sonnet-20241022": (1.5, 5, 8192),
    "claude-3-7-sonnet-20250219": (1.5, 5, 64000),
    "claude-3-5-haiku-20241022": (0.4, 5, 8192),
    "claude-sonnet-4-20250514": (1.5, 5, 64000),
    "gemini-2.0-flash": (0.05, 4, 8192),
    "gemini-1.5-pro": (0.625, 4, 8192),
    "gemini-2.5-pro": (0.625, 8, 65536),
    "deepseek-chat": (0.135, 4, 8192),
    "deepseek-reasoner": (0.275, 4, 65536),
    "text-embedding-3-small": (0.01, 1, 0),
    "text-embedding-3-large": (0.065, 1, 0),
    "text-embedding-ada-002": (0.05, 1, 0),
    # New API's defaults for the issue-12 routes (its ratio table, setting/ratio_setting):
    # speech is priced per input character (1k characters = $0.015 at 7.5), moderation is
    # free, Jina rerankers per token.
    "whisper-1": (3, 1, 0),  # per "duration token": 1,000 a minute (relay.transcribe)
    "tts-1": (7.5, 1, 0),
    "tts-1-1106": (7.5, 1, 0),
    "tts-1-hd": (15, 1, 0),
    "tts-1-hd-1106": (15, 1, 0),
    "omni-moderation-latest": (0, 1, 0),
    "omni-moderation-2024-09-26": (0, 1, 0),
    "text-moderation-latest": (0, 1, 0),
    "text-moderation-stable": (0, 1, 0),
    "jina-reranker-v2-base-multilingual": (0.025, 1, 0),
    "jina-reranker-m0": (0.025, 1, 0),
}
# model -> USD per call
DEFAULT_MODEL_PRICES: dict[str, float] = {"dall-e-3": 0.04, "gpt-image-1": 0.04}
DEFAULT_GROUP_RATIOS: dict[str, float] = {"default": 1, "vip": 1, "svip": 1}
# Groups any user may put on a token besides their own (New API's ``UserUsableGroups``
# option). New API's default also lists "vip"; relaygate's lists only "default", so that a
# paid group is never self-service unless the operator says so (docs/security.md).
DEFAULT_USABLE_GROUPS: frozenset[str] = frozenset({"default"})
DEFAULT_MAX_OUTPUT = 16384


def _dec(value: float | int | str) -> Decimal:
    return Decimal(str(value))


@dataclass(frozen=True, slots=True)
class ModelPricing:
    model_ratio: Decimal
    completion_ratio: Decimal
    per_call_usd: Decimal | None
    max_output: int

    @property
    def is_per_call(self) -> bool:
        return self.per_call_usd is not None


@dataclass(frozen=True, slots=True)
class ReservationPlan:
    """Integer inputs of the reserve script for one request."""

    base: int
    per_token_micro: int


class PriceBook:
    """Resolved price tables; immutable, replaced whole when options change."""

    def __init__(
        self,
        models: Mapping[str, tuple[float, float, int]] | None = None,
        prices: Mapping[str, float] | None = None,
        groups: Mapping[str, float] | None = None,
        usable_groups: frozenset[str] = DEFAULT_USABLE_GROUPS,
        group_descriptions: Mapping[str, str] | None = None,
    ) -> None:
        self.usable_groups = usable_groups
        # UserUsableGroups' descriptions, shown by /api/user/self/groups
        self.group_descriptions = dict(group_descriptions or {})
        self._models = {
            name: (_dec(r), _dec(c), int(m))
            for name, (r, c, m) in (models or DEFAULT_MODELS).items()
        }
        self._prices = {name: _dec(p) for name, p in (prices or DEFAULT_MODEL_PRICES).items()}
        self._groups = {name: _dec(g) for name, g in (groups or DEFAULT_GROUP_RATIOS).items()}
        self._cache: dict[str, ModelPricing | None] = {}
        self._rates: dict[tuple[str, str], Rates | None] = {}

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> PriceBook:
        """Defaults overlaid with New API option rows; a malformed row raises ValueError."""
        models = dict(DEFAULT_MODELS)
        ratios = _json_map(options, "ModelRatio")
        completions = _json_map(options, "CompletionRatio")
        for name, ratio in ratios.items():
            _, comp, max_out = models.get(name, (0, 1, DEFAULT_MAX_OUTPUT))
            models[name] = (ratio, comp, max_out)
        for name, comp in completions.items():
            ratio, _, max_out = models.get(name, (0, 1, DEFAULT_MAX_OUTPUT))
            if name in models or name in ratios:
                models[name] = (ratio, comp, max_out)
        prices = {**DEFAULT_MODEL_PRICES, **_json_map(options, "ModelPrice")}
        groups = _json_map(options, "GroupRatio") or dict(DEFAULT_GROUP_RATIOS)
        usable = _usable_groups(options)
        return cls(models, prices, groups, frozenset(usable), usable)

    def model(self, name: str) -> ModelPricing | None:
        try:
            return self._cache[name]
        except KeyError:
            pass
        found: ModelPricing | None = None
        if name in self._prices:
            found = ModelPricing(Decimal(0), Decimal(1), self._prices[name], 0)
        elif name in self._models:
            ratio, comp, max_out = self._models[name]
            found = ModelPricing(ratio, comp, None, max_out or DEFAULT_MAX_OUTPUT)
        self._cache[name] = found
        return found

    def rates(self, model: str, group: str) -> Rates | None:
        """The integer form of (model, group)'s prices, built once per pair (hot path)."""
        key = (model, group)
        try:
            return self._rates[key]
        except KeyError:
            pass
        pricing = self.model(model)
        found = Rates(pricing, self.group_ratio(group)) if pricing is not None else None
        if len(self._rates) < MAX_CACHED_RATES:
            self._rates[key] = found
        return found

    def group_ratio(self, group: str) -> Decimal:
        return self._groups.get(group, Decimal(1))

    def has_group(self, group: str) -> bool:
        return group in self._groups

    def group_refusal(self, user_group: str, token_group: str) -> str | None:
        """Why a token of a user in ``user_group`` may not use ``token_group`` (New API's
        relay checks #13 and #14), or None. Checked on token writes and on every request,
        so a group taken away stops working on the next request."""
        if not token_group or token_group == user_group:
            return None
        if token_group not in self.usable_groups:
            return "forbidden"
        if token_group not in self._groups:
            return "deprecated"
        return None

    def group_ratios(self) -> dict[str, float]:
        return {name: float(ratio) for name, ratio in self._groups.items()}

    def models(self) -> list[str]:
        return sorted({*self._models, *self._prices})


def _json_map(options: Mapping[str, str], key: str) -> dict[str, float]:
    raw = options.get(key)
    if not raw:
        return {}
    data = orjson.loads(raw)
    if not isinstance(data, dict) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in data.values()
    ):
        raise ValueError(f"option {key} must be a JSON object of non-negative numbers")
    return {str(k): float(v) for k, v in data.items()}


def _usable_groups(options: Mapping[str, str]) -> dict[str, str]:
    """``UserUsableGroups``: a JSON object of group name -> description (New API's shape)."""
    raw = options.get("UserUsableGroups")
    if not raw:
        return dict.fromkeys(DEFAULT_USABLE_GROUPS, "Default group")
    data = orjson.loads(raw)
    if not isinstance(data, dict) or not all(isinstance(k, str) and k for k in data):
        raise ValueError("option UserUsableGroups must be a JSON object of group -> description")
    return {k: v if isinstance(v, str) else str(v) for k, v in data.items()}


def _fraction(value: Decimal) -> tuple[int, int]:
    """An exact (numerator, denominator) for a finite non-negative decimal."""
    sign, digits, exponent = value.as_tuple()
    if sign or not isinstance(exponent, int):
        raise ValueError(f"price ratios must be finite and non-negative, got {value}")
    numerator = int("".join(map(str, digits)) or "0")
    if exponent >= 0:
        return numerator * 10**exponent, 1
    return numerator, 10**-exponent


class Rates:
    """``charge`` and ``plan`` for one (model, group) as integer arithmetic.

    Why: the Decimal formula costs a few microseconds per request and the hot path runs it
    twice; the ratios are exact decimals, so the same floor/ceil results follow from integer
    numerators over one common denominator. ``charge``/``plan`` stay the reference (a
    property test checks the two agree).
    """

    __slots__ = (
        "_den",
        "_num_completion",
        "_num_prompt",
        "_other_head",
        "_per_call",
        "_prompt_den",
        "_prompt_num",
        "event_ratios",
        "group_ratio",
        "nonzero",
        "per_token_micro",
        "pricing",
    )

    def __init__(self, pricing: ModelPricing, group_ratio: Decimal) -> None:
        self.pricing = pricing
        self.group_ratio = group_ratio
        # What the usage log's ``other`` field reports; fixed per (model, group).
        self.event_ratios = {
            "model_ratio": float(pricing.model_ratio),
            "completion_ratio": float(pricing.completion_ratio),
            "group_ratio": float(group_ratio),
            "model_price": float(pricing.per_call_usd) if pricing.per_call_usd else -1,
        }
        # The usage log's ``other`` JSON up to the per-request fields (see ``event_other``).
        self._other_head = orjson.dumps(self.event_ratios).decode()[:-1]
        self._per_call: int | None = None
        if pricing.per_call_usd is not None:
            self._per_call = charge(pricing, group_ratio, 0, 0)
        mn, md = _fraction(pricing.model_ratio)
        gn, gd = _fraction(group_ratio)
        cn, cd = _fraction(pricing.completion_ratio)
        self.nonzero = mn != 0 and gn != 0
        # charge = floor((p + c x cr) x mr x gr) = floor((p x cd + c x cn) x mn x gn / (cd x md x gd))
        self._num_prompt = cd * mn * gn
        self._num_completion = cn * mn * gn
        self._den = cd * md * gd
        # plan: base = ceil(p x mr x gr), per token = ceil(cr x mr x gr x 1e6)
        self._prompt_num = mn * gn
        self._prompt_den = md * gd
        self.per_token_micro = (
            0 if self._per_call is not None else -(-cn * mn * gn * MICRO // (cd * md * gd))
        )

    @property
    def is_per_call(self) -> bool:
        return self._per_call is not None

    def times(self, calls: int) -> Rates:
        """These rates for a request of ``calls`` per-call units (images ``n``): its plan and
        its charge are ``calls`` times one call's (New API multiplies the price by ``n``)."""
        if self._per_call is None or calls == 1:
            return self
        scaled = copy.copy(self)
        scaled._per_call = self._per_call * calls
        return scaled

    def event_other(self, estimated: bool, reserved: int) -> str:
        """The usage log's ``other`` field: the ratios, ``estimated`` and ``reserved``."""
        flag = "true" if estimated else "false"
        return f'{self._other_head},"estimated":{flag},"reserved":{int(reserved)}}}'

    def charge(self, prompt: int, completion: int) -> int:
        if self._per_call is not None:
            return self._per_call
        quota = (prompt * self._num_prompt + completion * self._num_completion) // self._den
        if self.nonzero and quota <= 0:
            return 1
        return quota

    def plan(self, prompt_estimate: int) -> ReservationPlan:
        if self._per_call is not None:
            return ReservationPlan(self._per_call, 0)
        base = -(-prompt_estimate * self._prompt_num // self._prompt_den)
        if self.nonzero and base < 1:
            base = 1
        return ReservationPlan(base, self.per_token_micro)


MAX_CACHED_RATES = 10_000  # (model, group) pairs; beyond that, computed per request


def charge(pricing: ModelPricing, group_ratio: Decimal, prompt: int, completion: int) -> int:
    """The final quota of one request, exactly as New API computes it."""
    if pricing.per_call_usd is not None:
        return int((pricing.per_call_usd * QUOTA_PER_UNIT * group_ratio).to_integral(ROUND_DOWN))
    factor = pricing.model_ratio * group_ratio
    quota = int(
        ((Decimal(prompt) + Decimal(completion) * pricing.completion_ratio) * factor).to_integral(
            ROUND_DOWN
        )
    )
    if factor != 0 and quota <= 0:
        return 1
    return quota


def plan(pricing: ModelPricing, group_ratio: Decimal, prompt_estimate: int) -> ReservationPlan:
    """Integer reservation inputs that bound ``charge`` from above for any answer length.

    base covers the prompt (rounded up), per_token_micro one completion token in millionths
    of a unit (rounded up), so base + ceil(n x per_token_micro / 1e6) >= charge(prompt, n).
    """
    if pricing.per_call_usd is not None:
        return ReservationPlan(charge(pricing, group_ratio, 0, 0), 0)
    factor = pricing.model_ratio * group_ratio
    base = int((Decimal(prompt_estimate) * factor).to_integral(ROUND_CEILING))
    if factor != 0:
        base = max(base, 1)
    per_token = (pricing.completion_ratio * factor * MICRO).to_integral(ROUND_CEILING)
    return ReservationPlan(base, int(per_token))


def reservation_cost(p: ReservationPlan, tokens: int) -> int:
    """What the reserve script charges for ``tokens`` completion tokens (same rounding)."""
    return p.base + math.ceil(tokens * p.per_token_micro / MICRO) if p.per_token_micro else p.base


def usd(quota: int) -> float:
    return quota / QUOTA_PER_UNIT
