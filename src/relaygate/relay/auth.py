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
    address in ``X-Forwarded-For``, read from the right."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    ip: IPAddress | None = _parse_ip(peer[0]) if peer else None
    if ip is None or not trusted or not _in(ip, trusted):
        return ip
    forwarded = request.headers.get("X-Forwarded-For", "")
    for part in reversed(forwarded.split(",")):
        try:
            hop = ipaddress.ip_address(part.strip())
        except ValueError:
            return ip  # a garbled header: fall back to the proxy itself, never guess
        if not _in(hop, trusted):
            return hop
        ip = hop
    return ip


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
