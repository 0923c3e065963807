"""The relay under test runs with production's aiohttp settings.

aiohttp's ``TestServer`` turns ``handler_cancellation`` on; ``relaygate serve`` leaves it at
aiohttp's default (off): a client that hangs up does not cancel the handler, the handler
finds out when it next writes. Tests of the relay use this server so that they exercise
what production runs; ``CancellingServer`` keeps the other mode for the tests that prove
the cancellation path is exact too.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


class ProductionServer(TestServer):
    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        kwargs["handler_cancellation"] = False
        return await super()._make_runner(**kwargs)


class CancellingServer(TestServer):
    """aiohttp's test default: the handler is cancelled when its client disconnects."""
