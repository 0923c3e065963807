"""Whose requests may have their upstream request sent before the reserve's reply
(relay.early): kept apart so the per-process Runtime can hold it without importing the
relay."""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_HELD_BACK = 65_536  # tokens (users) remembered as "not early"; beyond, memory starts over
USER_HOLD_SECONDS = 60.0


class EarlyPolicy:
    """When a request may be called early: when it is the only relay request this process is
    handling and Redis is quiet (one request at a time: under load the early call would only
    add work, the waits overlap other requests' anyway), for any token but those whose last
    reserve was refused or lowered, in this process, and for any user but those with such a
    refusal in the last USER_HOLD_SECONDS: so that a fresh token per request gains at most
    one call a minute (an admission of another of the user's tokens does not clear that)."""

    def __init__(self, enabled: bool, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled = enabled
        self.active = 0  # relay requests being handled (relay.handlers)
        self._clock = clock
        self._held_tokens: set[int] = set()
        self._held_users: dict[int, float] = {}  # user id -> when last held back

    def allows(self, user_id: int, token_id: int) -> bool:
        """(The caller checks Redis too: ``Pipeline.quiet``.)"""
        if not (self.enabled and self.active == 1) or token_id in self._held_tokens:
            return False
        since = self._held_users.get(user_id)
        return since is None or self._clock() - since >= USER_HOLD_SECONDS

    def hold_back(self, user_id: int, token_id: int) -> None:
        if len(self._held_tokens) >= MAX_HELD_BACK:
            self._held_tokens.clear()
        if len(self._held_users) >= MAX_HELD_BACK:
            self._held_users.clear()
        self._held_tokens.add(token_id)
        self._held_users[user_id] = self._clock()

    def admitted(self, token_id: int) -> None:
        self._held_tokens.discard(token_id)
