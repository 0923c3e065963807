"""When the relay calls the upstream before the reserve's reply (relay.early): only one
request at a time, never for a token held back after a refusal, and the memory of held-back
tokens stays bounded."""

from __future__ import annotations

import pytest

from relaygate.relay import early_policy
from relaygate.relay.early_policy import EarlyPolicy

pytestmark = pytest.mark.unit


def test_only_the_one_request_in_flight_is_called_early() -> None:
    policy = EarlyPolicy(enabled=True)
    policy.active = 1
    assert policy.allows(7)
    policy.active = 2  # under load: never
    assert not policy.allows(7)
    assert not EarlyPolicy(enabled=False).allows(7)


def test_a_held_back_token_is_called_early_again_only_after_an_admission() -> None:
    policy = EarlyPolicy(enabled=True)
    policy.active = 1
    policy.hold_back(7)
    assert not policy.allows(7) and policy.allows(8)
    policy.admitted(7)
    assert policy.allows(7)


def test_held_back_tokens_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(early_policy, "MAX_HELD_BACK", 3)
    policy = EarlyPolicy(enabled=True)
    for token in range(10):
        policy.hold_back(token)
    assert len(policy._held_back) <= 3 and not policy.allows(9)
