"""The upstream call sent while the reserve is on its way, when the relay is quiet.

Why: one request at a time (concurrency 1), a relay request waits twice in a row: for the
reserve's reply (Redis wakes up, runs the script, answers: ~0.1 ms here, most of it the
other process waking) and then for the upstream's answer. Neither depends on the other's
result except in the rare cases below, so when the relay has no Redis reply outstanding
(``Pipeline.quiet``: under load the waits overlap other requests' work anyway and this
would only add work), the request goes upstream right after the reserve, and the two
waits overlap.

What does not change: nothing of the upstream's answer reaches the client before the
reserve has admitted the request. When it refuses (or lowers the output bound, or asks for
a metadata reload), the upstream call is dropped (its connection closed) and the request
goes on as if it had never been sent: refused, or sent again with the lowered bound. A
dropped call may still cost the operator at the upstream, so a token whose reserve was
refused or lowered is not called early again until one of its reserves is admitted in
full, and its user's other tokens not for a minute (``EarlyPolicy``): a token with no quota
left cannot make the relay call the upstream for nothing more than once, and a fresh token
per request (tokens are free to create) gains one call a minute.
``RELAYGATE_EARLY_UPSTREAM=false`` turns this off.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiohttp import web

from relaygate.cache import TokenMeta
from relaygate.relay.errors import RelayError
from relaygate.relay.forward import Early, build_attempt
from relaygate.relay.request import Endpoint, OutputBound, UpstreamBody, fit_body
from relaygate.runtime import Runtime
from relaygate.upstream_client.h1 import Pool

log = logging.getLogger(__name__)


class Speculation:
    """One request's early call, if it was made: the body it sent (valid for an admission
    that did not lower the output bound) and the call."""

    __slots__ = ("early", "failed", "out")

    def __init__(self) -> None:
        self.out: UpstreamBody | None = None  # set once ``body`` was fitted for the call
        self.early: Early | None = None
        self.failed = False

    def start(
        self,
        request: web.Request,
        rt: Runtime,
        ep: Endpoint,
        meta: TokenMeta,
        model: str,
        body: dict[str, Any],
        raw: bytes,
        bound: OutputBound,
        stream: bool,
    ) -> None:
        """Called with the reserve queued: write it, then send the upstream request on an
        idle connection of the first channel (nothing if there is none). ``body`` is fitted
        as for an admission in full, in place. Never raises: the reserve is on its way and
        its reply must be awaited (a reservation left unsettled would hold quota), so a
        failure here only means no early call."""
        try:
            http = rt.http
            if not isinstance(http, Pool):
                return
            channel = rt.catalog.channels.pick(meta.group, model, 0, frozenset())
            if channel is None:
                return
            rt.hot.written()  # quiet: the reserve goes out now, before the upstream request
            out = fit_body(body, raw, ep, bound, bound.send, stream)
            out.max_output = bound.send or bound.full // bound.choices
            self.out = out
            attempt = build_attempt(request, ep, model, out, channel, stream)
            sent = http.send_now(attempt.url, data=attempt.payload, headers=attempt.headers)
            if sent is not None:
                conn, head = sent
                self.early = Early(
                    attempt, head, time.perf_counter(), lambda: Pool.abandon(conn, head)
                )
        except RelayError:  # the request's own fault: answered on the ordinary path
            self.drop()
            self.failed = True
        except Exception:
            log.exception("early upstream call not made")
            self.drop()
            self.failed = True

    def admitted(
        self, rt: Runtime, user_id: int, token_id: int, in_full: bool
    ) -> tuple[Early | None, UpstreamBody | None]:
        """After the reserve's OK: (the early call, the body it sent) when the admission is the
        one the call was made for (no lowered output bound, no reload of the metadata); else
        the call is dropped, and so is the token's early calling until it is admitted in
        full again: (None, None)."""
        if self.failed:
            return None, None
        if in_full:
            rt.early.admitted(token_id)
            return self.early, self.out
        self.drop()
        rt.early.hold_back(user_id, token_id)
        return None, None

    def not_admitted(self, rt: Runtime, user_id: int, token_id: int, refused: bool) -> None:
        """The reserve failed or refused: the early call's answer is never read."""
        self.drop()
        if refused:
            rt.early.hold_back(user_id, token_id)

    def drop(self) -> None:
        early, self.early = self.early, None
        if early is not None:
            early.abandon()
