"""Where relaygate may send a request: channel ``base_url`` checks and the upstream HTTP client.

A channel's ``base_url`` is chosen by an administrator, but the relay fetches it with the
relay host's network position, so a URL aimed at the cloud metadata service or at a service
bound to loopback would turn the relay into a proxy for them (SSRF). So:

* At write time (management API and ``relaygate admin create-channel``) ``check_base_url``
  normalizes the URL (a trailing ``/v1`` is dropped: relaygate appends ``/v1/...`` itself)
  and refuses literal addresses and well-known names that are link-local, cloud metadata,
  unspecified or, unless ``RELAYGATE_ALLOW_LOOPBACK_UPSTREAMS`` is set, loopback.
* At connect time the client's socket factory refuses the same addresses, whatever the name
  resolved to (DNS names pointing at 127.0.0.1 or 169.254.169.254, DNS rebinding, a
  redirect, a row written before the check existed).

Private (RFC 1918, ULA, CGNAT) ranges are allowed: operators serve models on their LAN.
Upstream TLS certificates are verified (``RELAYGATE_UPSTREAM_TLS_VERIFY``), with an optional
extra CA bundle (``RELAYGATE_UPSTREAM_CA_FILE``) for upstreams behind a private CA.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
from typing import Any

import aiohttp
import yarl

from relaygate.config import ConfigError, Settings

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

ALLOW_LOOPBACK_VAR = "RELAYGATE_ALLOW_LOOPBACK_UPSTREAMS"
REFUSED = "refused by the upstream address policy"

# Instance metadata services (they hand out cloud credentials), whatever their range.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, ...
        "fd00:ec2::254",  # AWS over IPv6
        "100.100.100.200",  # Alibaba Cloud
        "168.63.129.16",  # Azure host endpoint (WireServer)
        "192.0.0.192",  # Oracle Cloud (legacy)
    )
)
METADATA_NAMES = frozenset(
    (
        "metadata.google.internal",
        "metadata.goog",
        "metadata",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    )
)
LOOPBACK_NAMES = frozenset(("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"))
_THIS_NETWORK = ipaddress.ip_network("0.0.0.0/8")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class UpstreamRefused(ValueError):
    """A ``base_url`` that may not be stored; the message says why and what to do."""


class AddressRefused(OSError):
    """Raised by the socket factory: the upstream resolved to an address we do not call."""


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one reaches (mapped, 6to4, NAT64), if any: ``::ffff:127.0.0.1``
    is loopback even though Python < 3.13 does not say so."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_refusal(ip: IPAddress, allow_loopback: bool) -> str | None:
    """Why ``ip`` may not be an upstream (e.g. "link-local"), or None when it may."""
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None:
            return address_refusal(inner, allow_loopback)
    if ip.is_unspecified or (isinstance(ip, ipaddress.IPv4Address) and ip in _THIS_NETWORK):
        return "an unspecified address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_loopback and not allow_loopback:
        return f"a loopback address (set {ALLOW_LOOPBACK_VAR}=true to allow it)"
    return None


def _literal_ipv4(host: str) -> ipaddress.IPv4Address | None:
    """A legacy numeric IPv4 form (``2130706433``, ``127.1``, ``0x7f.1``) as the address the
    C library would connect to; None for a name."""
    if not host or not all(c in "0123456789abcdefx." for c in host) or not host[0].isdigit():
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


def host_refusal(host: str, allow_loopback: bool) -> str | None:
    """Why a URL host (name or literal address) may not be an upstream, or None."""
    name = host.strip().lower().rstrip(".").strip("[]")
    if not name:
        return "no host"
    try:
        ip: IPAddress | None = ipaddress.ip_address(name.split("%", 1)[0])
    except ValueError:
        ip = None
    if ip is None:
        legacy = _literal_ipv4(name)
        if legacy is not None:
            return f"a non-canonical IPv4 form of {legacy} (write it as a dotted quad)"
    if ip is not None:
        return address_refusal(ip, allow_loopback)
    if name in METADATA_NAMES:
        return "a cloud metadata name"
    if (name in LOOPBACK_NAMES or name.endswith(".localhost")) and not allow_loopback:
        return f"a loopback name (set {ALLOW_LOOPBACK_VAR}=true to allow it)"
    return None


def normalize_base_url(raw: str) -> str:
    """Trailing slashes and one trailing ``/v1`` segment dropped: relaygate appends
    ``/v1/chat/completions`` etc. itself, so ``https://host/v1`` (the OpenAI SDK's
    convention) would otherwise be called as ``/v1/v1/...``."""
    url = raw.strip().rstrip("/")
    if url.lower().endswith("/v1"):
        url = url[: -len("/v1")].rstrip("/")
    return url


def check_base_url(raw: str, allow_loopback: bool) -> str:
    """The normalized ``base_url``, or ``UpstreamRefused`` naming the reason."""
    url = normalize_base_url(raw)
    if not url.startswith(("http://", "https://")):
        raise UpstreamRefused("base_url must start with http:// or https://")
    try:
        parsed = yarl.URL(url)
        host = parsed.raw_host or ""
    except (ValueError, TypeError):
        raise UpstreamRefused("base_url is not a valid URL") from None
    if parsed.user is not None or parsed.password is not None:
        raise UpstreamRefused("base_url must not contain credentials (put the key in key)")
    reason = host_refusal(host, allow_loopback)
    if reason is not None:
        raise UpstreamRefused(f"base_url host {host or '(none)'} is {reason}; refused")
    return url


def guarded_socket_factory(allow_loopback: bool) -> Any:
    """aiohttp's ``socket_factory``: called with the address about to be connected (after
    DNS, for every connection, including redirects), so a name that resolves to a refused
    address fails the connection, whatever it resolved to at write time."""

    def factory(addr_info: Any) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        host = str(sockaddr[0]).split("%", 1)[0]
        reason = address_refusal(ipaddress.ip_address(host), allow_loopback)
        if reason is not None:
            raise AddressRefused(f"upstream address {host} {REFUSED}: {reason}")
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def refusal_of(exc: BaseException) -> str | None:
    """The policy refusal behind a client error (for the log line), or None."""
    seen: BaseException | None = exc
    for _ in range(6):  # ClientConnectorError -> os_error -> ...; a short chain
        if seen is None:
            break
        if isinstance(seen, AddressRefused) or REFUSED in str(seen):
            return str(seen)
        seen = getattr(seen, "os_error", None) or seen.__cause__
    return None


def ssl_option(settings: Settings) -> ssl.SSLContext | bool:
    """What the connector verifies upstream TLS with: the default (system CAs) context, one
    trusting the extra CA file on top of them, or nothing (``False``; warned about)."""
    if not settings.upstream_tls_verify:
        log.warning(
            "upstream TLS certificates are NOT verified (RELAYGATE_UPSTREAM_TLS_VERIFY=false)"
        )
        return False
    if not settings.upstream_ca_file:
        return True
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=settings.upstream_ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"RELAYGATE_UPSTREAM_CA_FILE: cannot load {settings.upstream_ca_file!r}: {exc}"
        ) from None
    return context


def connector(settings: Settings) -> aiohttp.TCPConnector:
    """The upstream connector: unbounded pool, DNS cached, TLS verified, addresses guarded."""
    return aiohttp.TCPConnector(
        limit=0,
        ttl_dns_cache=300,
        enable_cleanup_closed=True,
        ssl=ssl_option(settings),
        socket_factory=guarded_socket_factory(settings.allow_loopback_upstreams),
    )
