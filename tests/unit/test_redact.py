"""relaygate.redact: known secrets and credential shapes are masked in every form they reach
logs or error bodies, ordinary text is not, JSON stays JSON, and redacting twice changes
nothing."""

from __future__ import annotations

import logging

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from relaygate.redact import MASK, RedactingFormatter, redact, redact_bytes

KEY = "sk-EVIL-CHANNEL-SECRET-abcdef123456"
PLAIN_KEY = "upstreamQ7x9Zk2mW4pL"  # a key without any recognisable shape


def test_openai_echo_of_the_presented_key():
    body = '{"error": {"message": "Incorrect API key provided: Bearer sk-EVIL-CHANNEL-SECRET-abcdef123456", "code": "invalid_api_key"}}'
    out = redact(body, [KEY])
    assert "EVIL" not in out and "abcdef" not in out
    assert orjson.loads(out)["error"]["message"] == f"Incorrect API key provided: Bearer {MASK}"


def test_exact_value_of_a_key_without_shape():
    out = redact(f"key {PLAIN_KEY} was refused", [PLAIN_KEY])
    assert out == f"key {MASK} was refused"
    assert PLAIN_KEY not in redact(f"x{PLAIN_KEY}y", [PLAIN_KEY])


def test_prefix_and_suffix_runs_of_eight_or_more():
    assert redact("given: upstreamQ7x9", [PLAIN_KEY]) == f"given: {MASK}"
    assert redact("ends in ...Zk2mW4pL.", [PLAIN_KEY]) == f"ends in ...{MASK}."
    assert redact("truncated upstreamQ7x9Zk2m!", [PLAIN_KEY]) == f"truncated {MASK}!"
    # Seven characters of a key are not enough to be told from text.
    assert redact("upstrea", [PLAIN_KEY]) == "upstrea"


def test_key_without_its_sk_prefix():
    out = redact("token EVIL-CHANNEL-SECRET-abcdef123456 invalid", [KEY])
    assert out == f"token {MASK} invalid"


def test_masked_forms_showing_head_and_tail():
    for masked in (
        "upst...W4pL",
        "upstr****W4pL",
        "upstreamQ7...4pL",
        "upst…W4pL",
    ):
        out = redact(f"Incorrect API key provided: {masked}.", [PLAIN_KEY])
        assert out == f"Incorrect API key provided: {MASK}.", masked
    # A masked form of another key is left alone (no shape, not this key's head and tail).
    assert redact("provided: abcd...wxyz", [PLAIN_KEY]) == "provided: abcd...wxyz"


def test_openai_style_masks_of_any_sk_key():
    for masked in ("sk-proj-********************************************abcd", "sk-abc...xyz1"):
        assert redact(f"provided: {masked}.") == f"provided: sk-{MASK}."


def test_credential_shapes_without_known_secrets():
    assert redact("Authorization: Bearer abcdefgh12345678") == f"Authorization: Bearer {MASK}"
    assert redact("bearer eyJhbGciOi.eyJzdWIi.sig") == f"bearer {MASK}"
    assert redact("auth Basic dXNlcjpwYXNz") == f"auth Basic {MASK}"
    assert redact("use sk-ant-api03-abcdefghij here") == f"use sk-{MASK} here"
    google = "AIzaSyA1234567890abcdefghijklmnopqrstu"
    assert redact(f"API key not valid: {google}") == f"API key not valid: AIza{MASK}"
    assert redact('{"x-api-key": "abcdefgh1234"}') == f'{{"x-api-key": "{MASK}"}}'
    assert redact("api_key=abcdefgh1234&x=1") == f"api_key={MASK}&x=1"
    url = "/v1beta/models/m:generateContent?alt=sse&key=AIzaSomething"
    assert redact(url) == f"/v1beta/models/m:generateContent?alt=sse&key={MASK}"


def test_ordinary_text_is_untouched():
    for text in (
        "The server had an error while processing your request.",
        "Basic authentication is not supported; a Bearer token is required",
        "task-abcdefghijk finished",  # 'sk-' inside a word
        "Rate limit reached for gpt-4o-mini in organization org-abc on tokens per min",
        '{"error": {"message": "Pass it as \'Authorization: Bearer sk-...\'", "code": null}}',
        "Loading...done",
    ):
        assert redact(text, [PLAIN_KEY, KEY]) == text, text


def test_short_and_empty_secrets():
    assert redact("key abcd refused; abcdef kept", ["abcd"]) == f"key {MASK} refused; abcdef kept"
    assert redact("a b c", ["", "a", "ab"]) == "a b c"
    assert redact("", [KEY]) == ""


def test_json_stays_json():
    body = orjson.dumps(
        {"error": {"message": f"bad key {KEY} / {PLAIN_KEY}", "param": None, "type": "x"}}
    ).decode()
    out = orjson.loads(redact(body, [KEY, PLAIN_KEY]))
    assert out["error"]["message"] == f"bad key {MASK} / {MASK}"
    assert out["error"]["param"] is None and out["error"]["type"] == "x"


def test_bytes_that_are_not_utf8_survive():
    data = b"\xff\xfe key=" + PLAIN_KEY.encode() + b" \x80"
    assert redact_bytes(data, [PLAIN_KEY]) == b"\xff\xfe key=" + MASK.encode() + b" \x80"
    assert redact_bytes(b"", [PLAIN_KEY]) == b""


@given(st.text(), st.lists(st.text(min_size=0, max_size=40), max_size=3))
def test_idempotent_and_never_leaks_long_secrets(text, secrets):
    once = redact(text, secrets)
    assert redact(once, secrets) == once
    for secret in secrets:
        secret = secret.strip()
        if len(secret) >= 8 and MASK not in secret and secret not in MASK:
            assert secret not in once


@given(st.text(alphabet="abcXYZ019-_.*… ", max_size=60))
def test_embedded_key_never_survives(noise):
    assert KEY not in redact(noise + KEY + noise, [KEY])


# --- log-record shapes (red-team #10) ---

OTHER_KEY = "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7dEf0hIj3kLm6n"


@pytest.mark.parametrize(
    "text",
    [
        f"Incorrect API key provided: sk-{OTHER_KEY}. You can find your API key at ...",
        f"Authorization: Bearer {OTHER_KEY}",
        f"b'Authorization: Bearer sk-{OTHER_KEY}\\r\\nHost: x'",
        f"authorization=Bearer%20{OTHER_KEY}",
        f'{{"headers": {{"x-api-key": "{OTHER_KEY}"}}}}',
        f"X-Goog-Api-Key: {OTHER_KEY}",
        f"GET /v1beta/models/x:generateContent?alt=sse&key={OTHER_KEY} HTTP/1.1",
        f"Authorization: {OTHER_KEY}",
        f"api key AIza{OTHER_KEY[:35]} is invalid",
    ],
)
def test_credential_shapes_are_masked(text: str) -> None:
    out = redact(text)
    assert OTHER_KEY not in out and OTHER_KEY[:20] not in out and OTHER_KEY[-20:] not in out, out
    assert MASK in out


def test_given_secrets_are_masked_whatever_their_shape() -> None:
    assert redact("upstream said: bad credential pw-7f3a9c2e1b", ["pw-7f3a9c2e1b"]) == (
        f"upstream said: bad credential {MASK}"
    )


def test_ordinary_text_is_left_alone() -> None:
    text = "model gpt-4o-mini, task-1234, 'sk-' alone, skipping, Bearer"
    assert redact(text) == text


def test_formatter_redacts_messages_and_tracebacks() -> None:
    formatter = RedactingFormatter("%(message)s")
    try:
        raise ValueError(f"Authorization: Bearer sk-{OTHER_KEY}")
    except ValueError:
        import sys

        record = logging.LogRecord(
            "x", logging.ERROR, "f", 1, "key %s", (OTHER_KEY,), sys.exc_info()
        )
    record.args = (f"sk-{OTHER_KEY}",)
    out = formatter.format(record)
    assert OTHER_KEY[:20] not in out and "Traceback" in out
