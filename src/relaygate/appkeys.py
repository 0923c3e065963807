"""Every ``web.AppKey`` of the application, in one place.

The app factory (``relaygate.app``) fills them; the relay, the management API and the
metrics read them. Defining them here, beside nothing else, keeps those readers from
depending on each other (the management API has no reason to import the hot path to find
the runtime).
"""

from __future__ import annotations

from aiohttp import web

from relaygate.config import Settings
from relaygate.runtime import Runtime
from relaygate.stats import RequestStats

SETTINGS: web.AppKey[Settings] = web.AppKey("relaygate.settings", Settings)
RUNTIME: web.AppKey[Runtime] = web.AppKey("relaygate.runtime", Runtime)
STATS: web.AppKey[RequestStats] = web.AppKey("relaygate.stats", RequestStats)

__all__ = ["RUNTIME", "SETTINGS", "STATS"]
