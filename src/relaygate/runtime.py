"""The per-process objects the relay and the management API use, gathered in one place.

``Runtime`` only holds them; each job has its own small object: the token cache and its
loader, the catalog of channels and prices, the settle keeper, the heartbeat, the
invalidation listener and the background-work supervisor. The app factory builds one
``Runtime`` per process and stores it under ``appkeys.RUNTIME``; nothing here is a module
global.
"""

from __future__ import annotations

import os
import pathlib
import socket
import time
from dataclasses import dataclass, field

import asyncpg
from redis.asyncio import Redis

from relaygate.accounts import Accounts
from relaygate.authlimit import FailedAuthLimiter
from relaygate.background import Background
from relaygate.cache import TokenCache
from relaygate.catalog import Catalog
from relaygate.config import Settings
from relaygate.heartbeat import Heartbeat
from relaygate.invalidation import InvalidationListener, dispatcher
from relaygate.keys import KeyScheme
from relaygate.ledger import Pipeline, Scripts
from relaygate.relay.early_policy import EarlyPolicy
from relaygate.sessions import LoginLimiter, SessionStore
from relaygate.settles import Journal, SettleKeeper
from relaygate.tally import Tally
from relaygate.tokenload import TokenLoader
from relaygate.upstream_client import UpstreamClient


def new_instance_id() -> str:
    """Unique per process and free of the ``|`` that separates reservation fields."""
    host = "".join(c for c in socket.gethostname() if c.isalnum() or c in "-.")[:40] or "relay"
    return f"{host}-{os.getpid()}-{os.urandom(3).hex()}"


@dataclass
class Runtime:
    settings: Settings
    keys: KeyScheme
    pool: asyncpg.Pool
    redis: Redis  # ordinary pool: management, rebuilds, pub/sub
    hot: Pipeline  # the hot path's auto-pipelined connection
    scripts: Scripts
    accounts: Accounts
    http: UpstreamClient  # RELAYGATE_UPSTREAM_CLIENT's (relaygate.upstream_client)
    instance: str = field(default_factory=new_instance_id)
    started_at: float = field(default_factory=time.time)
    tally: Tally = field(default_factory=Tally)  # ledger/upstream figures for /metrics
    background: Background = field(init=False)
    catalog: Catalog = field(init=False)
    tokens: TokenLoader = field(init=False)
    cache: TokenCache = field(init=False)
    auth_failures: FailedAuthLimiter = field(init=False)
    sessions: SessionStore = field(init=False)
    login_limiter: LoginLimiter = field(init=False)
    heartbeat: Heartbeat = field(init=False)
    settles: SettleKeeper = field(init=False)
    invalidations: InvalidationListener = field(init=False)
    early: EarlyPolicy = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.background = Background()
        self.early = EarlyPolicy(s.early_upstream)
        self.catalog = Catalog(self.pool)
        self.tokens = TokenLoader(self.pool, self.keys, self.accounts.key_index)
        self.cache = TokenCache(self.tokens, s.cache_ttl, s.negative_cache_ttl)
        self.auth_failures = FailedAuthLimiter(s.auth_failures_per_minute)
        self.sessions = SessionStore(self.redis, self.keys, s.session_ttl)
        self.login_limiter = LoginLimiter(self.redis, self.keys, s.login_attempts, s.login_window)
        self.heartbeat = Heartbeat(self.redis, self.keys.heartbeat(self.instance), s.heartbeat_ttl)
        journal = Journal(pathlib.Path(s.journal_dir), f"{self.keys.prefix}-{self.instance}")
        self.settles = SettleKeeper(
            self.scripts, self.redis, journal, self.keys.reaped_of_resv, self.heartbeat.beat
        )
        self.invalidations = InvalidationListener(
            self.redis,
            self.keys.inval_channel,
            dispatcher(self.catalog, self.cache, self.background),
            self.cache.invalidate_all,
        )
