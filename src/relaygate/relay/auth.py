"""Reading the key and the client address off a relay request."""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence

from aiohttp import web

from relaygate.credentials import strip_key

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def extract_key(request: web.Request) -> str:
    """The token key from Bearer, ``x-api-key`` (Claude), ``x-goog-api-key`` or ``?key=`` (Gemini)."""
    headers = request.headers
    raw = headers.get("Authorization")
    if raw:
        key = strip_key(raw)
        if key:
            return key
    raw = headers.get("x-api-key") or headers.get("x-goog-api-key") or request.query.get("key")
    return strip_key(raw) if raw else ""


def client_ip(request: web.Request, trusted: Sequence[IPNetwork]) -> IPAddress | None:
    """The socket peer, or (only when the peer is a trusted proxy) the nearest untrusted
    address in ``X-Forwarded-For``, read from the right.

    Every header line counts, joined in order (RFC 9110: repeated lines are one list), so a
    client-supplied line placed before the proxy's cannot decide the address. A hop that
    cannot be parsed stops the walk at the last trusted hop: never guess past garbage. The
    ``Forwarded`` header is not read (docs/security.md).
    """
    peer = request.transport.get_extra_info("peername") if request.transport else None
    ip: IPAddress | None = _parse_ip(peer[0]) if peer else None
    if ip is None or not trusted or not _in(ip, trusted):
        return ip
    lines = request.headers.getall("X-Forwarded-For", ())
    for part in reversed(",".join(lines).split(",")):
        hop = _parse_hop(part.strip())
        if hop is None:
            return ip
        if not _in(hop, trusted):
            return hop
        ip = hop
    return ip


def _parse_hop(text: str) -> IPAddress | None:
    """One ``X-Forwarded-For`` entry: an address, optionally ``v4:port`` or ``[v6]:port``."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or (end + 1 < len(text) and not text[end + 1 :].startswith(":")):
            return None
        text = text[1:end]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    return _parse_ip(text) if text else None


@functools.lru_cache(maxsize=4096)
def _parse_ip(text: str) -> IPAddress | None:
    """Parsed once per distinct peer address (the objects are immutable, so sharing is safe):
    ``ipaddress.ip_address`` costs a few microseconds, on every request otherwise."""
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def ip_text(ip: IPAddress | None) -> str:
    """The address as the usage log stores it (memoized: ``str`` of an address is slow)."""
    return "" if ip is None else str(ip)


def _in(ip: IPAddress, nets: Sequence[IPNetwork]) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in n for n in nets)
