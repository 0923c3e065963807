"""relaygate.upstreams: which channel base_urls and upstream addresses are refused, how a
base_url is normalized, and the upstream settings."""

from __future__ import annotations

import ipaddress
import socket
import ssl

import pytest

from relaygate.config import ConfigError, Settings, from_env
from relaygate.upstreams import (
    AddressRefused,
    UpstreamRefused,
    address_refusal,
    check_base_url,
    guarded_socket_factory,
    normalize_base_url,
    ssl_option,
)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("100.100.100.200", "metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("::ffff:169.254.169.254", "metadata"),
        ("::ffff:169.254.3.3", "link-local"),
        ("2002:a9fe:a9fe::1", "metadata"),  # 6to4 of 169.254.169.254
        ("64:ff9b::a9fe:a9fe", "metadata"),  # NAT64 of 169.254.169.254
        ("0.0.0.0", "unspecified"),
        ("0.1.2.3", "unspecified"),
        ("::", "unspecified"),
        ("127.0.0.1", "loopback"),
        ("127.200.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
    ],
)
def test_refused_addresses(address, reason):
    found = address_refusal(ipaddress.ip_address(address), allow_loopback=False)
    assert found is not None and reason in found


@pytest.mark.parametrize(
    "address", ["10.1.2.3", "172.16.0.9", "192.168.0.1", "100.64.0.1", "fd12::1", "8.8.8.8"]
)
def test_private_and_public_addresses_are_allowed(address):
    assert address_refusal(ipaddress.ip_address(address), allow_loopback=False) is None


def test_loopback_setting_allows_loopback_only():
    for address in ("127.0.0.1", "::1", "::ffff:127.0.0.1"):
        assert address_refusal(ipaddress.ip_address(address), allow_loopback=True) is None
    for address in ("169.254.169.254", "fe80::1", "0.0.0.0"):
        assert address_refusal(ipaddress.ip_address(address), allow_loopback=True) is not None


@pytest.mark.parametrize(
    ("raw", "normal"),
    [
        ("https://api.openai.com/v1", "https://api.openai.com"),
        ("https://api.openai.com/v1/", "https://api.openai.com"),
        (" https://api.openai.com// ", "https://api.openai.com"),
        ("https://api.groq.com/openai/v1", "https://api.groq.com/openai"),
        ("https://host/v1beta", "https://host/v1beta"),
        ("https://host/api/v10", "https://host/api/v10"),
        ("https://host", "https://host"),
    ],
)
def test_normalize_base_url(raw, normal):
    assert normalize_base_url(raw) == normal
    assert check_base_url(raw, allow_loopback=False) == normal


@pytest.mark.parametrize(
    "url",
    [
        "ftp://host",
        "host:8080",
        "http://",
        "http://169.254.169.254/latest",
        "http://metadata.google.internal",
        "http://Metadata.Google.Internal.",
        "http://instance-data",
        "http://localhost:8080",
        "http://api.localhost",
        "http://[::1]:8080",
        "http://2130706433",  # 127.0.0.1 as one number
        "http://0x7f.1",
        "http://127.1",
        "http://a:b@api.example.com",
    ],
)
def test_check_base_url_refuses(url):
    with pytest.raises(UpstreamRefused):
        check_base_url(url, allow_loopback=False)


def test_check_base_url_loopback_setting():
    assert check_base_url("http://localhost:11434/v1", True) == "http://localhost:11434"
    assert check_base_url("http://127.0.0.1:3201", True) == "http://127.0.0.1:3201"
    with pytest.raises(UpstreamRefused, match="RELAYGATE_ALLOW_LOOPBACK_UPSTREAMS"):
        check_base_url("http://127.0.0.1:3201", False)
    with pytest.raises(UpstreamRefused):
        check_base_url("http://169.254.169.254", True)


def test_socket_factory_refuses_before_connecting():
    factory = guarded_socket_factory(allow_loopback=False)
    stream = socket.SOCK_STREAM
    for family, sockaddr in (
        (socket.AF_INET, ("169.254.169.254", 80)),
        (socket.AF_INET, ("127.0.0.1", 80)),
        (socket.AF_INET6, ("fe80::1%1", 80, 0, 1)),
    ):
        with pytest.raises(AddressRefused, match="refused by the upstream address policy"):
            factory((family, stream, 6, "", sockaddr))
    sock = factory((socket.AF_INET, stream, 6, "", ("10.0.0.1", 80)))
    assert isinstance(sock, socket.socket)
    sock.close()


def test_upstream_settings(tmp_path):
    defaults = from_env({})
    assert defaults.allow_loopback_upstreams is False
    assert defaults.upstream_tls_verify is True and defaults.upstream_ca_file == ""
    assert ssl_option(defaults) is True
    assert ssl_option(defaults.replace(upstream_tls_verify=False)) is False
    parsed = from_env(
        {"RELAYGATE_ALLOW_LOOPBACK_UPSTREAMS": "true", "RELAYGATE_UPSTREAM_TLS_VERIFY": "false"}
    )
    assert parsed.allow_loopback_upstreams and not parsed.upstream_tls_verify
    with pytest.raises(ConfigError, match="RELAYGATE_UPSTREAM_CA_FILE"):
        from_env({"RELAYGATE_UPSTREAM_CA_FILE": str(tmp_path / "missing.pem")})
    junk = tmp_path / "junk.pem"
    junk.write_text("junk")
    with pytest.raises(ConfigError, match="RELAYGATE_UPSTREAM_CA_FILE"):
        from_env({"RELAYGATE_UPSTREAM_CA_FILE": str(junk)})
    ca = ssl.get_default_verify_paths().cafile
    if ca:
        context = ssl_option(Settings(upstream_ca_file=ca))
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED
