"""Credentials never survive ``redact`` in any of the forms they reach logs or error bodies."""

from __future__ import annotations

import pytest

from relaygate.redact import MASK, redact

KEY = "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7dEf0hIj3kLm6n"


@pytest.mark.parametrize(
    "text",
    [
        f"Incorrect API key provided: sk-{KEY}. You can find your API key at ...",
        f"Authorization: Bearer {KEY}",
        f"b'Authorization: Bearer sk-{KEY}\\r\\nHost: x'",
        f"authorization=Bearer%20{KEY}",
        f'{{"headers": {{"x-api-key": "{KEY}"}}}}',
        f"X-Goog-Api-Key: {KEY}",
        f"GET /v1beta/models/x:generateContent?alt=sse&key={KEY} HTTP/1.1",
        f"Authorization: {KEY}",
        f"api key AIza{KEY[:35]} is invalid",
    ],
)
def test_credential_shapes_are_masked(text: str) -> None:
    out = redact(text)
    assert KEY not in out and KEY[:20] not in out and KEY[-20:] not in out, out
    assert MASK in out


def test_given_secrets_are_masked_whatever_their_shape() -> None:
    assert redact("upstream said: bad credential pw-7f3a9c2e1b", ["pw-7f3a9c2e1b"]) == (
        f"upstream said: bad credential {MASK}"
    )


def test_ordinary_text_is_left_alone() -> None:
    text = "model gpt-4o-mini, task-1234, 'sk-' alone, skipping, Bearer"
    assert redact(text) == text
