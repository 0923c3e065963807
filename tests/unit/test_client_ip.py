"""Client address: the socket peer; X-Forwarded-For only when the peer is a trusted proxy."""

from __future__ import annotations

import ipaddress
from unittest import mock

from aiohttp.test_utils import make_mocked_request

from relaygate.relay.auth import client_ip, extract_key

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"),)


def _req(peer: str, xff: str | None = None, **headers: str):  # type: ignore[no-untyped-def]
    h = dict(headers)
    if xff is not None:
        h["X-Forwarded-For"] = xff
    transport = mock.Mock()
    transport.get_extra_info.return_value = (peer, 1234)
    return make_mocked_request("POST", "/v1/chat/completions", headers=h, transport=transport)


def test_peer_is_used_without_trusted_proxies():
    assert str(client_ip(_req("1.2.3.4", "9.9.9.9"), ())) == "1.2.3.4"


def test_forwarded_header_ignored_from_untrusted_peer():
    assert str(client_ip(_req("1.2.3.4", "9.9.9.9"), TRUSTED)) == "1.2.3.4"


def test_forwarded_header_from_trusted_proxy_takes_nearest_untrusted_hop():
    # client spoofs 6.6.6.6; real client 5.5.5.5 reached proxy 10.0.0.2, then proxy 10.0.0.1
    req = _req("10.0.0.1", "6.6.6.6, 5.5.5.5, 10.0.0.2")
    assert str(client_ip(req, TRUSTED)) == "5.5.5.5"


def test_garbled_forwarded_header_falls_back_to_proxy():
    assert str(client_ip(_req("10.0.0.1", "nonsense"), TRUSTED)) == "10.0.0.1"


def test_key_sources():
    assert extract_key(_req("1.1.1.1", Authorization="Bearer sk-abc")) == "abc"
    assert extract_key(_req("1.1.1.1", **{"x-api-key": "sk-abc"})) == "abc"
    assert extract_key(_req("1.1.1.1", **{"x-goog-api-key": "abc"})) == "abc"
    assert extract_key(_req("1.1.1.1")) == ""
