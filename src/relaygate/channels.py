"""Channels in memory: chosen per request by (group, model), priority tier, then weight.

Mirrors New API's selection: the highest priority tier first, weighted random within the
tier (uniform when every weight is 0); a retry moves to the next tier down. The table is
rebuilt whole from PostgreSQL on start, on a ``chan:*`` invalidation, and periodically.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from relaygate.upstreams import normalize_base_url

TYPE_OPENAI = 1
TYPE_AZURE = 3
TYPE_CUSTOM = 8
TYPE_ANTHROPIC = 14
TYPE_GEMINI = 24


@dataclass(frozen=True, slots=True)
class Channel:
    id: int
    type: int
    name: str
    key: str  # the upstream credential: never logged, never returned by the API
    base_url: str
    models: frozenset[str]
    groups: frozenset[str]
    priority: int
    weight: int
    model_mapping: dict[str, str]
    other: str = ""  # New API's free field: an Azure channel's api-version
    # What an OpenAI-dialect call sends (built once: aiohttp copies headers, never mutates).
    bearer_headers: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        headers = {"Content-Type": "application/json", "Accept-Encoding": "identity"}
        if self.type == TYPE_AZURE:
            headers["api-key"] = self.key  # Azure OpenAI's key header
        else:
            headers["Authorization"] = f"Bearer {self.key}"
        object.__setattr__(self, "bearer_headers", headers)

    def __repr__(self) -> str:  # keep the key out of any accidental log line
        return f"Channel(id={self.id}, name={self.name!r}, base_url={self.base_url!r})"

    def upstream_model(self, model: str) -> str:
        return self.model_mapping.get(model, model)


def channel_from_row(row: Any) -> Channel:
    mapping: dict[str, str] = {}
    raw_mapping = (row["model_mapping"] or "").strip()
    if raw_mapping:
        try:
            loaded = orjson.loads(raw_mapping)
            if isinstance(loaded, dict):
                mapping = {str(k): str(v) for k, v in loaded.items()}
        except orjson.JSONDecodeError:
            mapping = {}
    return Channel(
        id=int(row["id"]),
        type=int(row["type"]),
        name=row["name"],
        key=row["key"],
        # Normalized again here for rows written before writes were (a trailing /v1).
        base_url=normalize_base_url(row["base_url"] or "https://api.openai.com"),
        models=frozenset(m for m in row["models"].split(",") if m),
        groups=frozenset(g.strip() for g in row["group"].split(",") if g.strip()),
        priority=int(row["priority"]),
        weight=int(row["weight"]),
        model_mapping=mapping,
        other=row.get("other") or "",
    )


class ChannelTable:
    """Immutable lookup structure; build a new one to change it."""

    def __init__(self, channels: Iterable[Channel]) -> None:
        self.channels = {c.id: c for c in channels}
        tiers: dict[tuple[str, str], dict[int, list[Channel]]] = {}
        for ch in self.channels.values():
            for group in ch.groups:
                for model in ch.models:
                    tiers.setdefault((group, model), {}).setdefault(ch.priority, []).append(ch)
        self._tiers: dict[tuple[str, str], list[list[Channel]]] = {
            k: [v[p] for p in sorted(v, reverse=True)] for k, v in tiers.items()
        }
        self._models_by_group: dict[str, frozenset[str]] = {}
        for group, model in self._tiers:
            self._models_by_group[group] = self._models_by_group.get(group, frozenset()) | {model}

    def has(self, group: str, model: str) -> bool:
        return (group, model) in self._tiers

    def pick(
        self, group: str, model: str, attempt: int = 0, exclude: frozenset[int] = frozenset()
    ) -> Channel | None:
        tiers = self._tiers.get((group, model))
        if not tiers:
            return None
        if not attempt and not exclude:  # the common case: the top tier, nothing to skip
            return _weighted(tiers[0])
        start = min(attempt, len(tiers) - 1)
        for tier in tiers[start:] + tiers[:start]:
            candidates = [c for c in tier if c.id not in exclude] if exclude else tier
            if candidates:
                return _weighted(candidates)
        return None

    def without(self, channel_id: int) -> ChannelTable:
        """This table minus one channel (an auto-disabled one, until the reload that the
        invalidation triggers drops it too)."""
        if channel_id not in self.channels:
            return self
        return ChannelTable(c for c in self.channels.values() if c.id != channel_id)

    def models_for(self, group: str) -> frozenset[str]:
        return self._models_by_group.get(group, frozenset())


def _weighted(candidates: list[Channel]) -> Channel:
    if len(candidates) == 1:
        return candidates[0]
    total = sum(c.weight for c in candidates)
    if total <= 0:
        return random.choice(candidates)
    point = random.uniform(0, total)
    for c in candidates:
        point -= c.weight
        if point <= 0:
            return c
    return candidates[-1]
