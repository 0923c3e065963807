"""Failed authentications per client address (issue 10 item 6)."""

from __future__ import annotations

import ipaddress
import time

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class FailedAuthLimiter:
    """Failed authentications per client address, per process, in one-minute windows.

    Past ``limit`` failures an address gets 429 for the rest of its window on any key the
    process does not already hold in its cache: valid keys in use keep working, guessing
    stops costing lookups. Per process (no Redis round trip on the hot path): with N
    processes an address gets at most N x ``limit`` tries a minute. 0 disables it.
    """

    WINDOW = 60.0
    MAX_ADDRESSES = 100_000

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._windows: dict[IPAddress | None, list[float]] = {}  # ip -> [start, failures]
        self.refused = 0

    def blocked(self, ip: IPAddress | None) -> bool:
        entry = self._windows.get(ip) if self._windows else None
        if entry is None or entry[1] < self.limit:
            return False
        if time.monotonic() - entry[0] >= self.WINDOW:
            del self._windows[ip]
            return False
        self.refused += 1
        return True

    def failed(self, ip: IPAddress | None) -> None:
        if not self.limit:
            return
        now = time.monotonic()
        entry = self._windows.get(ip)
        if entry is None or now - entry[0] >= self.WINDOW:
            if len(self._windows) >= self.MAX_ADDRESSES:
                self._windows = {k: v for k, v in self._windows.items() if now - v[0] < self.WINDOW}
                if len(self._windows) >= self.MAX_ADDRESSES:
                    self._windows.clear()
            self._windows[ip] = [now, 1.0]
        else:
            entry[1] += 1
