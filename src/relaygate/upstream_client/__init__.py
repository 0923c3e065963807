"""The upstream HTTP client the relay calls channels with, chosen by
``RELAYGATE_UPSTREAM_CLIENT``: ``aiohttp`` (aiohttp's ``ClientSession``) or ``fast`` (the
pooled httptools client of relaygate.upstream_client.h1). Both behind one narrow interface
(relaygate.upstream_client.base), with the same TLS verification, address policy (SSRF
guard) and timeouts."""

from __future__ import annotations

import ssl

from relaygate import upstreams
from relaygate.config import Settings
from relaygate.upstream_client.aio import AiohttpClient
from relaygate.upstream_client.base import (
    ERRORS,
    UpstreamClient,
    UpstreamDisconnected,
    UpstreamProtocolError,
    UpstreamResponse,
)
from relaygate.upstream_client.h1 import Pool

__all__ = [
    "ERRORS",
    "UpstreamClient",
    "UpstreamDisconnected",
    "UpstreamProtocolError",
    "UpstreamResponse",
    "build",
    "fast_client",
]


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The context the fast client verifies upstream TLS with: upstreams.ssl_option's (the
    one aiohttp's connector gets), as an explicit context."""
    option = upstreams.ssl_option(settings)
    if isinstance(option, ssl.SSLContext):
        return option
    context = ssl.create_default_context()
    if option is False:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def fast_client(settings: Settings) -> Pool:
    """Must be called on the running loop."""
    return Pool(
        ssl_context=tls_context(settings),
        socket_factory=upstreams.guarded_socket_factory(settings.allow_loopback_upstreams),
        connect_timeout=settings.upstream_connect_timeout,
        read_timeout=settings.upstream_timeout,
    )


def build(settings: Settings) -> UpstreamClient:
    if settings.upstream_client == "fast":
        return fast_client(settings)
    return AiohttpClient(settings)
