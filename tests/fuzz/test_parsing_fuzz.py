"""Issue 10: a fuzzing target over request parsing (hypothesis). Headers and key
extraction, client addresses, IP allowlists, bodies and output bounds, SSE streams and
usage, redaction: for any input each either answers or refuses with its own error type;
nothing else escapes (an escape is a 500 on the relay).

``make test`` draws RELAYGATE_FUZZ_EXAMPLES (default 150) examples per target; ``make fuzz``
draws many more.
"""

from __future__ import annotations

import ipaddress
import json
import os
from decimal import Decimal
from typing import Any
from unittest import mock

from aiohttp.test_utils import make_mocked_request
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from relaygate.admin import AdminError, normalize_allow_ips
from relaygate.cache import parse_allow_ips
from relaygate.credentials import hash_secret, strip_key
from relaygate.pricing import ModelPricing
from relaygate.redact import redact
from relaygate.relay import dialects
from relaygate.relay.auth import client_ip, extract_key
from relaygate.relay.errors import RelayError
from relaygate.relay.request import (
    CHAT,
    CLAUDE_MESSAGES,
    GEMINI_GENERATE,
    output_bounds,
    parse_body,
)
from relaygate.relay.sse import SSEUsageFilter

EXAMPLES = int(os.environ.get("RELAYGATE_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Header values as aiohttp hands them over: any text, non-UTF-8 bytes as surrogate escapes.
HEADER_TEXT = st.one_of(
    st.text(max_size=80),
    st.binary(max_size=80).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.sampled_from(["Bearer ", "Bearer sk-", "sk-", "bearer  sk-abc", "Basic xx", "\x00"]),
)
JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "model",
                    "max_tokens",
                    "max_completion_tokens",
                    "n",
                    "stream",
                    "messages",
                    "generationConfig",
                    "maxOutputTokens",
                    "candidateCount",
                    "x",
                ]
            )
            | st.text(max_size=8),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)
# make_mocked_request encodes headers strictly; surrogate escapes are fed to the key
# functions directly (and reach a real server in tests/integration/test_security_edge.py).
MOCKABLE_TEXT = HEADER_TEXT.filter(lambda t: not any(0xD800 <= ord(c) <= 0xDFFF for c in t))
TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))
PRICING = ModelPricing(Decimal(1), Decimal(1), None, 16384)


def _request(headers: CIMultiDict[str], peer: str = "10.0.0.1") -> Any:
    transport = mock.Mock()
    transport.get_extra_info.return_value = (peer, 1234)
    return make_mocked_request("POST", "/v1/chat/completions", headers=headers, transport=transport)


@FUZZ
@given(auth=MOCKABLE_TEXT, api_key=MOCKABLE_TEXT, goog=MOCKABLE_TEXT, raw=HEADER_TEXT)
def test_key_extraction_never_raises(auth: str, api_key: str, goog: str, raw: str) -> None:
    headers = CIMultiDict[str]()
    for name, value in (("Authorization", auth), ("x-api-key", api_key), ("x-goog-api-key", goog)):
        if value:
            headers[name] = value
    key = extract_key(_request(headers))
    assert isinstance(key, str)
    assert len(hash_secret(key)) == 32
    assert len(hash_secret(strip_key(raw))) == 32


@FUZZ
@given(
    lines=st.lists(MOCKABLE_TEXT, max_size=4), peer=st.sampled_from(["10.0.0.1", "1.2.3.4", "::1"])
)
def test_client_address_is_always_the_peer_or_a_listed_hop(lines: list[str], peer: str) -> None:
    headers = CIMultiDict[str]()
    for line in lines:
        headers.add("X-Forwarded-For", line)
    ip = client_ip(_request(headers, peer), TRUSTED)
    assert ip is not None
    if str(ip) != peer:
        assert any(str(ip) in line or ip.exploded in line for line in lines)


@FUZZ
@given(text=st.one_of(st.text(max_size=200), st.lists(st.text(max_size=50), max_size=5)))
def test_allowlists_parse_or_refuse_cleanly(text: Any) -> None:
    try:
        stored = normalize_allow_ips(text)
    except AdminError:
        return
    nets = parse_allow_ips(stored)  # what was stored always parses
    assert all(isinstance(n, ipaddress.IPv4Network | ipaddress.IPv6Network) for n in nets)


@FUZZ
@given(
    raw=st.one_of(
        st.binary(max_size=200),
        JSON.map(lambda v: json.dumps(v).encode()),  # big ints, NaN and Infinity included
    )
)
def test_bodies_and_output_bounds_answer_or_refuse(raw: bytes) -> None:
    try:
        body = parse_body(raw)
    except RelayError as err:
        assert 400 <= err.status < 500
        return
    for ep in (CHAT, CLAUDE_MESSAGES, GEMINI_GENERATE):
        try:
            bound = output_bounds(dict(body), ep, PRICING, 0)
        except RelayError as err:
            assert err.status == 400
            continue
        assert bound.full >= 0 and bound.choices >= 1


@FUZZ
@given(
    chunks=st.lists(
        st.one_of(
            st.binary(max_size=60),
            st.sampled_from(
                [
                    b"data: [DONE]\n\n",
                    b'data: {"usage":{"prompt_tokens":1e400}}\n\n',
                    b"event: message_stop\ndata: {}\n\n",
                    b'data: {"usage":null}\r\n\r\n',
                    b'data: {"choices":[{"delta":{"content":"[DONE]"}}]}\n\n',
                    b"\n",
                    b"\r",
                ]
            ),
        ),
        max_size=12,
    ),
    dialect=st.sampled_from([dialects.OPENAI, dialects.CLAUDE, dialects.GEMINI]),
    strip=st.booleans(),
)
def test_sse_filter_takes_any_stream(chunks: list[bytes], dialect: str, strip: bool) -> None:
    f = SSEUsageFilter(strip, dialect)
    out = b"".join(f.feed(c) for c in chunks) + f.flush()
    assert isinstance(out, bytes)
    assert f.answer_text_bytes() >= 0


@FUZZ
@given(obj=JSON)
def test_usage_reading_never_raises(obj: Any) -> None:
    usage = dialects.read_usage(obj)
    assert usage is None or all(isinstance(n, int) and n >= 0 for n in usage)
    assert dialects.text_bytes(obj) >= 0


@FUZZ
@given(
    prefix=st.text(max_size=30),
    key=st.text(alphabet="abcdefXYZ0123456789", min_size=20, max_size=48),
    suffix=st.text(max_size=30),
)
def test_redaction_removes_keys_wherever_they_sit(prefix: str, key: str, suffix: str) -> None:
    for form in (f"sk-{key}", f"Bearer {key}", f"x-api-key: {key}", f"?key={key}"):
        out = redact(prefix + " " + form + " " + suffix)
        assert f"sk-{key}" not in out and f" {key} " not in out.replace(form, "")
        assert key not in out or key in prefix or key in suffix
