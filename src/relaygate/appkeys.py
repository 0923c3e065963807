"""Every ``web.AppKey`` of the application, in one place.

The app factory (``relaygate.app``) fills them; the relay, the management API and the
metrics read them. Defining them here, beside nothing else, keeps those readers from
depending on each other (the management API has no reason to import the hot path to find
the runtime).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from relaygate.config import Settings
from relaygate.runtime import Runtime
from relaygate.stats import RequestStats

SETTINGS: web.AppKey[Settings] = web.AppKey("relaygate.settings", Settings)
RUNTIME: web.AppKey[Runtime] = web.AppKey("relaygate.runtime", Runtime)
STATS: web.AppKey[RequestStats] = web.AppKey("relaygate.stats", RequestStats)
# Set when the process starts to stop: /readyz answers 503 from then on (relaygate.serving).
DRAINING: web.AppKey[asyncio.Event] = web.AppKey("relaygate.draining", asyncio.Event)

__all__ = ["DRAINING", "RUNTIME", "SETTINGS", "STATS"]
