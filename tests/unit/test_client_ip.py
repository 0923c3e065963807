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


def _multi(peer: str, *lines: str):  # type: ignore[no-untyped-def]
    """A request with several X-Forwarded-For header lines, in the given order."""
    from multidict import CIMultiDict

    headers = CIMultiDict[str]()
    for line in lines:
        headers.add("X-Forwarded-For", line)
    transport = mock.Mock()
    transport.get_extra_info.return_value = (peer, 1234)
    return make_mocked_request("POST", "/v1/x", headers=headers, transport=transport)


def test_every_forwarded_line_counts_so_a_client_line_cannot_decide():
    """Red-team #6: the client sends its own line first; the proxy appends its own line."""
    req = _multi("10.0.0.1", "127.0.0.1", "5.5.5.5")
    assert str(client_ip(req, TRUSTED)) == "5.5.5.5"
    req = _multi("10.0.0.1", "6.6.6.6, 7.7.7.7", "5.5.5.5, 10.0.0.9")
    assert str(client_ip(req, TRUSTED)) == "5.5.5.5"


def test_forwarded_hops_with_spaces_ports_and_ipv6():
    trusted = (*TRUSTED, ipaddress.ip_network("fd00::/8"))
    assert str(client_ip(_req("10.0.0.1", " 5.5.5.5:4711 ,10.0.0.2 "), trusted)) == "5.5.5.5"
    assert str(client_ip(_req("10.0.0.1", "[2001:db8::1]:443"), trusted)) == "2001:db8::1"
    assert str(client_ip(_req("10.0.0.1", "2001:db8::2, fd00::1"), trusted)) == "2001:db8::2"


def test_garbage_in_the_middle_stops_at_the_last_trusted_hop():
    for junk in ("", "unknown", "[::1", "1.2.3.4:5:6", "999.1.1.1", "[::1]x"):
        req = _req("10.0.0.1", f"5.5.5.5, {junk}, 10.0.0.3")
        assert str(client_ip(req, TRUSTED)) == "10.0.0.3", junk


def test_ipv4_mapped_allowlist_entries_match_ipv4_clients():
    """Red-team #20: ``::ffff:10.0.0.0/104`` was accepted and never matched."""
    from relaygate.cache import parse_allow_ips
    from relaygate.config import _parse_networks

    nets = parse_allow_ips("::ffff:10.0.0.0/104\n::ffff:127.0.0.1")
    assert [str(n) for n in nets] == ["10.0.0.0/8", "127.0.0.1/32"]
    assert [str(n) for n in _parse_networks("X", "::ffff:10.0.0.0/104")] == ["10.0.0.0/8"]
    assert [str(n) for n in parse_allow_ips("::ffff:0:0/95")] == ["::fffe:0:0/95"]
