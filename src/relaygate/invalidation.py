"""The invalidation listener: one pub/sub subscription per process, so a write on any
instance reaches every instance's caches (DESIGN.md "Invalidation")."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from redis.asyncio import Redis

from relaygate.background import Background
from relaygate.cache import TokenCache
from relaygate.catalog import Catalog

log = logging.getLogger(__name__)


def dispatcher(
    catalog: Catalog, cache: TokenCache, background: Background
) -> Callable[[str], None]:
    """What one message means: ``chan:*`` reloads channels, ``opt:*`` prices, anything else
    is a token or user the cache drops."""

    def dispatch(message: str) -> None:
        if message.startswith("chan:"):
            background.spawn(catalog.reload_channels())
        elif message.startswith("opt:"):
            background.spawn(catalog.reload_prices())
        else:
            cache.handle_message(message)

    return dispatch


class InvalidationListener:
    def __init__(
        self,
        redis: Redis,
        channel: str,
        dispatch: Callable[[str], None],
        on_reconnect: Callable[[], None],
    ) -> None:
        self.redis = redis
        self.channel = channel
        self.dispatch = dispatch
        self.on_reconnect = on_reconnect

    async def run(self, background: Background) -> None:
        """Listen until closing; on every (re)subscribe call ``on_reconnect``: messages sent
        while we were away were missed, so whatever they would have dropped is dropped."""
        while not background.closing.is_set():
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self.on_reconnect()
                while not background.closing.is_set():
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    data = message.get("data") if message else None
                    if isinstance(data, bytes):
                        self.dispatch(data.decode())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep listening through Redis restarts
                log.warning("invalidation listener lost Redis (%s); retrying", exc)
                await background.pause(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call,unused-ignore]
