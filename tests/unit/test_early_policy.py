"""When the relay calls the upstream before the reserve's reply (relay.early): only one
request at a time, never for a token held back after a refusal, for its user's other tokens
not for a minute (a fresh token per request gains nothing more: red team, 2026-12-07), and
the memory of them stays bounded."""

from __future__ import annotations

import pytest

from relaygate.relay import early_policy
from relaygate.relay.early_policy import USER_HOLD_SECONDS, EarlyPolicy

pytestmark = pytest.mark.unit


def test_only_the_one_request_in_flight_is_called_early() -> None:
    policy = EarlyPolicy(enabled=True)
    policy.active = 1
    assert policy.allows(1, 7)
    policy.active = 2  # under load: never
    assert not policy.allows(1, 7)
    assert not EarlyPolicy(enabled=False).allows(1, 7)


def test_a_held_back_token_is_called_early_again_only_after_an_admission() -> None:
    now = [1000.0]
    policy = EarlyPolicy(enabled=True, clock=lambda: now[0])
    policy.active = 1
    policy.hold_back(1, 7)
    assert not policy.allows(1, 7) and policy.allows(2, 8)
    assert not policy.allows(1, 9), "a fresh token of the same user is held back too"
    policy.admitted(8)  # another token of the user admitted: the user stays held
    assert not policy.allows(1, 9)
    now[0] += USER_HOLD_SECONDS
    assert policy.allows(1, 9), "the user's hold lapses after a minute"
    assert not policy.allows(1, 7), "the refused token stays held until it is admitted"
    policy.admitted(7)
    assert policy.allows(1, 7)


def test_held_back_entries_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(early_policy, "MAX_HELD_BACK", 3)
    policy = EarlyPolicy(enabled=True)
    policy.active = 1
    for n in range(10):
        policy.hold_back(n, n)
    assert len(policy._held_tokens) <= 3 and len(policy._held_users) <= 3
    assert not policy.allows(9, 9)
