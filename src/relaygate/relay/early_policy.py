"""Which tokens may have their upstream request sent before the reserve's reply
(relay.early): kept apart so the per-process Runtime can hold it without importing the
relay."""

from __future__ import annotations

MAX_HELD_BACK = 65_536  # tokens remembered as "not early"; beyond, the memory starts over


class EarlyPolicy:
    """When a request may be called early: when it is the only relay request this process is
    handling and Redis is quiet (one request at a time: under load the early call would only
    add work, the waits overlap other requests' anyway), for any token but those whose last
    reserve was refused or lowered, in this process."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.active = 0  # relay requests being handled (relay.handlers)
        self._held_back: set[int] = set()

    def allows(self, token_id: int) -> bool:
        """(The caller checks Redis too: ``Pipeline.quiet``.)"""
        return self.enabled and self.active == 1 and token_id not in self._held_back

    def hold_back(self, token_id: int) -> None:
        if len(self._held_back) >= MAX_HELD_BACK:
            self._held_back.clear()
        self._held_back.add(token_id)

    def admitted(self, token_id: int) -> None:
        self._held_back.discard(token_id)
