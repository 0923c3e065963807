"""Slow and greedy clients at the connection level (issue 10 item 5).

aiohttp closes a connection that waits too long for its *next* request (``keepalive_timeout``,
counted from the end of the previous response and not reset by incoming bytes, so a
request head trickled in after a response is cut too), but it has no deadline for the first
request head of a connection and no limit per client address: 1000 slowloris connections
were held for 100 s. This guard adds both, hooked into aiohttp's ``Server`` through its
public attributes (``connection_made``, ``connection_lost``, ``request_factory``):

- a connection must deliver its first complete request head within ``header_timeout``
  seconds of connecting (the timer stops when aiohttp builds the request, so a long
  streamed answer or a slow body is never cut by it);
- at most ``per_ip`` open connections per peer address; trusted proxies are exempt (every
  client behind them shares their address). Connections past the cap are closed at once.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from relaygate.netaddr import IPNetwork


class ConnectionGuard:
    def __init__(
        self, header_timeout: float, per_ip: int, exempt: Sequence[IPNetwork] = ()
    ) -> None:
        self.header_timeout = header_timeout
        self.per_ip = per_ip
        self.exempt = tuple(exempt)
        self.open_per_ip: dict[str, int] = {}
        self.refused = 0
        self.timed_out = 0
        self._timers: dict[RequestHandler, asyncio.TimerHandle] = {}
        self._counted: dict[RequestHandler, str] = {}

    def install(self, server: web.Server) -> None:
        """Wrap the server's connection hooks and request factory (before it accepts)."""
        made, lost, factory = server.connection_made, server.connection_lost, server.request_factory

        def connection_made(handler: RequestHandler, transport: asyncio.Transport) -> None:
            made(handler, transport)
            self._made(handler, transport)

        def connection_lost(handler: RequestHandler, exc: BaseException | None = None) -> None:
            self._lost(handler)
            lost(handler, exc)

        def request_factory(message: Any, payload: Any, protocol: Any, *rest: Any) -> Any:
            timer = self._timers.pop(protocol, None)
            if timer is not None:
                timer.cancel()
            return factory(message, payload, protocol, *rest)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.connection_lost = connection_lost  # type: ignore[method-assign]
        server.request_factory = request_factory

    def _made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if peer else ""
        if self.per_ip and ip and not self._is_exempt(ip):
            if self.open_per_ip.get(ip, 0) >= self.per_ip:
                self.refused += 1
                # after the handler's own start-up step (closing inside connection_made
                # would leave aiohttp's request task asserting on a torn-down handler)
                asyncio.get_running_loop().call_soon(handler.force_close)
                return
            self.open_per_ip[ip] = self.open_per_ip.get(ip, 0) + 1
            self._counted[handler] = ip
        if self.header_timeout > 0:
            loop = asyncio.get_running_loop()
            self._timers[handler] = loop.call_later(self.header_timeout, self._expired(handler))

    def _expired(self, handler: RequestHandler) -> Callable[[], None]:
        def close() -> None:
            if self._timers.pop(handler, None) is not None:
                self.timed_out += 1
                handler.force_close()

        return close

    def _lost(self, handler: RequestHandler) -> None:
        timer = self._timers.pop(handler, None)
        if timer is not None:
            timer.cancel()
        ip = self._counted.pop(handler, None)
        if ip is not None:
            left = self.open_per_ip[ip] - 1
            if left:
                self.open_per_ip[ip] = left
            else:
                del self.open_per_ip[ip]

    def _is_exempt(self, ip: str) -> bool:
        if not self.exempt:
            return False
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self.exempt)
