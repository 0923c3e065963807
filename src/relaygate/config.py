"""Settings: one frozen object built once at start from ``RELAYGATE_*`` env vars and CLI flags.

Every knob lives here so that an operator can find all of them in one place (the README
table is generated from ``FIELDS`` by hand; keep them in sync). Validation happens once, at
start-up, and a bad value is reported as one clear line (``ConfigError``), never a traceback.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from relaygate.netaddr import parse_network
from relaygate.redisproto import parse_redis_url

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = "postgresql://postgres@127.0.0.1:5432/relaygate"
    redis_url: str = "redis://127.0.0.1:6379/0"
    host: str = "127.0.0.1"
    port: int = 3000
    shards: int = 16
    log_level: str = "info"
    # "text" (one human line per record) or "json" (one object per line, for log shippers).
    log_format: str = "text"
    # One log record per relay request (request id, token id, status, model, channel,
    # latency, overhead): relaygate.logfmt.log_request.
    request_log: bool = False
    # Prefix of every Redis key and of the invalidation channel (tests use their own).
    key_prefix: str = "rg"
    # Networks whose X-Forwarded-For header is believed (comma-separated IPs/CIDRs).
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    # Largest output (completion tokens per choice) one request may reserve; a client bound
    # above it, or none at all, is sent upstream as this bound. 0 = the model's maximum.
    max_reserve_tokens: int = 0
    # Largest quota one request may reserve (500000 = $1); a larger worst case lowers the
    # output bound sent upstream. 0 = no cap.
    max_reserve_quota: int = 5_000_000
    # Failed authentications (unknown keys or access tokens) one client address may make
    # per minute and process before it gets 429 for keys not already cached. 0 = no limit.
    auth_failures_per_minute: int = 60
    # Dashboard accounts (issue 12): login session lifetime in seconds (New API's cookie
    # lasts 30 days), self-registration (New API enables it by default; relaygate does not),
    # and login attempts per client address and per username per window (New API's
    # CriticalRateLimit on its login route: 20 per 1200 s). 0 attempts = no limit.
    session_ttl: int = 30 * 86400
    register_enabled: bool = False
    login_attempts: int = 20
    login_window: int = 1200
    # Clamp the upstream max_tokens to what the remaining quota affords.
    clamp_max_tokens: bool = True
    # A relay that is not busy with Redis sends the upstream request while the reserve is on
    # its way (relay.early); the answer is passed on only once the reserve admitted it.
    early_upstream: bool = True
    # Token metadata cache: positive TTL and negative (unknown key) TTL, seconds.
    cache_ttl: float = 60.0
    negative_cache_ttl: float = 5.0
    upstream_timeout: float = 600.0
    # Deadline recorded with each reservation (seconds). Informational: the reaper refunds
    # only reservations whose relay is dead (heartbeat lapsed). Must exceed upstream_timeout.
    reservation_ttl: int = 900
    # A relay refreshes its heartbeat key every third of this; when it lapses (the process
    # died), the reaper refunds that relay's open reservations without waiting for their TTL.
    heartbeat_ttl: int = 15
    # Seconds a reaped marker (request id of a refunded reservation, for a late settle to
    # charge from zero) is kept before the reaper prunes it.
    reaped_retention: int = 7 * 86400
    upstream_connect_timeout: float = 10.0
    # Channel base_urls on loopback (127.0.0.0/8, ::1, localhost) are refused at write time and
    # at connect time unless this is set (development and tests: docs/security.md). Link-local
    # and cloud metadata addresses are always refused; private (RFC 1918) ranges are allowed.
    allow_loopback_upstreams: bool = False
    # Verify upstream TLS certificates; an extra CA bundle (PEM) trusted on top of the system's.
    upstream_tls_verify: bool = True
    upstream_ca_file: str = ""
    # The upstream HTTP client: "aiohttp" (aiohttp's ClientSession) or "fast" (relaygate's
    # pooled httptools client, relaygate.upstream_client.h1); same TLS, SSRF guard, timeouts.
    upstream_client: str = "fast"
    # Deadline of every Redis call (seconds): past it the relay answers 503 ledger_unavailable
    # rather than wait, and a settle is kept and replayed (see relaygate.settles).
    redis_timeout: float = 2.0
    # Slow clients (relaygate.connguard): seconds a new connection has to deliver its first
    # request head; idle seconds between requests on a kept-alive connection (a trickled
    # next head is cut by it too); open connections per client address (0 = no cap;
    # trusted proxies are exempt).
    header_timeout: float = 10.0
    keepalive_timeout: float = 15.0
    # Seconds between SIGTERM and closing the listener, serving as usual but answering
    # /readyz 503, so load balancers stop sending first (where no preStop hook does it).
    drain_delay: float = 0.0
    max_connections_per_ip: int = 256
    # Where a relay journals the settles it could not write to Redis yet, replayed at the next
    # start (must survive a restart of the process: a volume in containers).
    journal_dir: str = ".relaygate/journal"
    # Flusher batching.
    flush_batch: int = 1000
    flush_block_ms: int = 500
    flush_claim_idle_ms: int = 10_000
    # After a small batch, wait this long so the next one is bigger (rows land this much later).
    flush_linger_ms: int = 50
    # Refuse to serve when Redis may evict keys (ledger counters must never vanish).
    allow_unsafe_redis_eviction: bool = False
    workers: int = 1
    # Where the processes of `serve --workers N` share their metrics (one snapshot file each,
    # relaygate.metrics); empty: the supervisor makes a temporary directory per run.
    metrics_dir: str = ""
    with_worker: bool = False
    # `relaygate worker` serves its flusher metrics (/metrics, /healthz) on this port, on
    # RELAYGATE_HOST; 0 = no listener (the default: a worker asked for nothing opens no port,
    # and several workers on one host would fight over a fixed one). deploy/ sets 9464.
    worker_metrics_port: int = 0
    # Maximum accepted request body, bytes.
    max_body_bytes: int = 32 * 1024 * 1024
    # Allocations between young-generation garbage collections in `serve` (0 = Python's 700).
    gc_gen0: int = 50_000
    # Failover (relaygate.relay.forward): channels one request may try, and the upstream
    # statuses that move it to the next channel (same priority tier first, then lower ones)
    # while nothing has reached the client yet. Connection errors always move on.
    channel_attempts: int = 3
    retry_statuses: frozenset[int] = frozenset((429, *range(500, 600)))
    # Channel health (relaygate.health): an upstream 401/403, or an error whose message holds
    # one of these keywords (New API's AutomaticDisableKeywords; case-insensitive, one per
    # line or "|"-separated), sets the channel to auto-disabled (status 3) in every relay;
    # a successful channel test sets an auto-disabled channel back to enabled.
    auto_disable_channels: bool = True
    auto_disable_keywords: tuple[str, ...] = (
        "your credit balance is too low",
        "this organization has been disabled",
        "you exceeded your current quota",
        "permission denied",
        "the security token included in the request is invalid",
        "operation not allowed",
        "your account is not authorized",
    )
    auto_enable_channels: bool = True
    # Seconds between tests of the auto-disabled channels (one relay per round; those that
    # pass are enabled again). 0 = never: only GET /api/channel/test/{id} re-enables.
    channel_retest_seconds: float = 0.0
    # Origins browser apps may call the relay routes from (`*` = any; empty = no CORS).
    cors_origins: tuple[str, ...] = ("*",)
    # Origins allowed on /api/ (with credentials); none by default, `*` refused.
    api_cors_origins: tuple[str, ...] = ()
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def inval_channel(self) -> str:
        return f"{self.key_prefix}:inval"

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


# name -> (env var, parser); the CLI uses the same parsers for its flags.
def _parse_bool(name: str, raw: str) -> bool:
    low = raw.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{name}: expected true/false, got {raw!r}")


def _parse_int(name: str, raw: str, minimum: int = 0, maximum: int | None = None) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{name}: must be {bound}, got {value}")
    return value


def _parse_float(name: str, raw: str) -> float:
    try:
        value = float(raw.strip())
    except ValueError:
        raise ConfigError(f"{name}: expected a number, got {raw!r}") from None
    if value < 0:
        raise ConfigError(f"{name}: must be >= 0, got {value}")
    return value


def _parse_positive_float(name: str, raw: str) -> float:
    value = _parse_float(name, raw)
    if value <= 0:
        raise ConfigError(f"{name}: must be > 0, got {value}")
    return value


def _parse_path(name: str, raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ConfigError(f"{name}: must be a directory path, got {raw!r}")
    return value


def _parse_url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(raw.strip())
    if parsed.scheme not in schemes or not (parsed.hostname or parsed.path):
        raise ConfigError(f"{name}: expected a {'/'.join(schemes)} URL, got {raw!r}")
    return raw.strip()


def _parse_redis_url(name: str, raw: str) -> str:
    """The parser both Redis clients use, so a URL that passes here works at start (TLS
    files included). The message never repeats the URL: it may hold a password."""
    value = raw.strip()
    try:
        parse_redis_url(value)
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None
    return value


def _parse_networks(
    name: str, raw: str
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    nets = []
    for part in raw.replace("\n", ",").split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(parse_network(part))
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not an IP address or CIDR") from None
    return tuple(nets)


def _parse_statuses(name: str, raw: str) -> frozenset[int]:
    """``429,500-599``: HTTP statuses, single or as inclusive ranges."""
    out: set[int] = set()
    for part in raw.replace(" ", "").split(","):
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ConfigError(f"{name}: {part!r} is not a status or a range like 500-599") from None
        if not 400 <= first <= last <= 599:
            raise ConfigError(f"{name}: {part!r} must be error statuses between 400 and 599")
        out.update(range(first, last + 1))
    return frozenset(out)


def _parse_keywords(name: str, raw: str) -> tuple[str, ...]:
    words = (w.strip().lower() for w in raw.replace("|", "\n").split("\n"))
    return tuple(w for w in words if w)


def _parse_origins(name: str, raw: str, allow_any: bool = True) -> tuple[str, ...]:
    """Comma-separated origins (``scheme://host[:port]``), or ``*``."""
    origins = []
    for part in raw.replace("\n", ",").split(","):
        part = part.strip().rstrip("/")
        if not part:
            continue
        if part == "*":
            if not allow_any:
                raise ConfigError(
                    f"{name}: '*' is not allowed (these routes accept credentials); "
                    "list the console's origins"
                )
        else:
            parsed = urlparse(part)
            if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path:
                raise ConfigError(f"{name}: {part!r} is not an origin like https://app.example")
        origins.append(part)
    return tuple(origins)


def _parse_ca_file(name: str, raw: str) -> str:
    """A PEM CA bundle, loaded once here so that a bad one stops the start in one line."""
    value = raw.strip()
    if not value:
        return ""
    if not os.path.isfile(value):
        raise ConfigError(f"{name}: no such file {value!r}")
    try:
        ssl.create_default_context().load_verify_locations(cafile=value)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{name}: {value!r} is not a PEM CA bundle ({exc})") from None
    return value


def _parse_log_level(name: str, raw: str) -> str:
    low = raw.strip().lower()
    if low not in LOG_LEVELS:
        raise ConfigError(f"{name}: expected one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return low


def _parse_log_format(name: str, raw: str) -> str:
    low = raw.strip().lower()
    if low not in LOG_FORMATS:
        raise ConfigError(f"{name}: expected one of {', '.join(LOG_FORMATS)}, got {raw!r}")
    return low


UPSTREAM_CLIENTS = ("aiohttp", "fast")


def _parse_upstream_client(name: str, raw: str) -> str:
    low = raw.strip().lower()
    if low not in UPSTREAM_CLIENTS:
        raise ConfigError(f"{name}: expected one of {', '.join(UPSTREAM_CLIENTS)}, got {raw!r}")
    return low


def _parse_prefix(name: str, raw: str) -> str:
    value = raw.strip()
    if not value or any(c in value for c in "{} \t\n"):
        raise ConfigError(f"{name}: must be non-empty without braces or spaces, got {raw!r}")
    return value


Parser = Any
FIELDS: dict[str, tuple[str, Parser]] = {
    "database_url": (
        "RELAYGATE_DATABASE_URL",
        lambda n, r: _parse_url(n, r, ("postgres", "postgresql")),
    ),
    "redis_url": ("RELAYGATE_REDIS_URL", _parse_redis_url),
    "host": ("RELAYGATE_HOST", lambda n, r: r.strip()),
    "port": ("RELAYGATE_PORT", lambda n, r: _parse_int(n, r, 0, 65535)),
    "shards": ("RELAYGATE_SHARDS", lambda n, r: _parse_int(n, r, 1, 16384)),
    "log_level": ("RELAYGATE_LOG_LEVEL", _parse_log_level),
    "log_format": ("RELAYGATE_LOG_FORMAT", _parse_log_format),
    "request_log": ("RELAYGATE_REQUEST_LOG", _parse_bool),
    "key_prefix": ("RELAYGATE_KEY_PREFIX", _parse_prefix),
    "trusted_proxies": ("RELAYGATE_TRUSTED_PROXIES", _parse_networks),
    "max_reserve_tokens": ("RELAYGATE_MAX_RESERVE_TOKENS", lambda n, r: _parse_int(n, r, 0)),
    "max_reserve_quota": ("RELAYGATE_MAX_RESERVE_QUOTA", lambda n, r: _parse_int(n, r, 0)),
    "auth_failures_per_minute": (
        "RELAYGATE_AUTH_FAILURES_PER_MINUTE",
        lambda n, r: _parse_int(n, r, 0),
    ),
    "session_ttl": ("RELAYGATE_SESSION_TTL", lambda n, r: _parse_int(n, r, 60)),
    "register_enabled": ("RELAYGATE_REGISTER_ENABLED", _parse_bool),
    "login_attempts": ("RELAYGATE_LOGIN_ATTEMPTS", lambda n, r: _parse_int(n, r, 0)),
    "login_window": ("RELAYGATE_LOGIN_WINDOW", lambda n, r: _parse_int(n, r, 1)),
    "clamp_max_tokens": ("RELAYGATE_CLAMP_MAX_TOKENS", _parse_bool),
    "early_upstream": ("RELAYGATE_EARLY_UPSTREAM", _parse_bool),
    "cache_ttl": ("RELAYGATE_CACHE_TTL", _parse_float),
    "negative_cache_ttl": ("RELAYGATE_NEGATIVE_CACHE_TTL", _parse_float),
    "upstream_timeout": ("RELAYGATE_UPSTREAM_TIMEOUT", _parse_float),
    "reservation_ttl": ("RELAYGATE_RESERVATION_TTL", lambda n, r: _parse_int(n, r, 1)),
    "heartbeat_ttl": ("RELAYGATE_HEARTBEAT_TTL", lambda n, r: _parse_int(n, r, 3, 3600)),
    "reaped_retention": ("RELAYGATE_REAPED_RETENTION", lambda n, r: _parse_int(n, r, 1)),
    "upstream_connect_timeout": ("RELAYGATE_UPSTREAM_CONNECT_TIMEOUT", _parse_float),
    "allow_loopback_upstreams": ("RELAYGATE_ALLOW_LOOPBACK_UPSTREAMS", _parse_bool),
    "upstream_tls_verify": ("RELAYGATE_UPSTREAM_TLS_VERIFY", _parse_bool),
    "upstream_ca_file": ("RELAYGATE_UPSTREAM_CA_FILE", _parse_ca_file),
    "upstream_client": ("RELAYGATE_UPSTREAM_CLIENT", _parse_upstream_client),
    "redis_timeout": ("RELAYGATE_REDIS_TIMEOUT", _parse_positive_float),
    "header_timeout": ("RELAYGATE_HEADER_TIMEOUT", _parse_positive_float),
    "keepalive_timeout": ("RELAYGATE_KEEPALIVE_TIMEOUT", _parse_positive_float),
    "drain_delay": ("RELAYGATE_DRAIN_DELAY", _parse_float),
    "max_connections_per_ip": (
        "RELAYGATE_MAX_CONNECTIONS_PER_IP",
        lambda n, r: _parse_int(n, r, 0),
    ),
    "journal_dir": ("RELAYGATE_JOURNAL_DIR", _parse_path),
    "metrics_dir": ("RELAYGATE_METRICS_DIR", lambda n, r: r.strip()),
    "flush_batch": ("RELAYGATE_FLUSH_BATCH", lambda n, r: _parse_int(n, r, 1, 100_000)),
    "flush_block_ms": ("RELAYGATE_FLUSH_BLOCK_MS", lambda n, r: _parse_int(n, r, 1)),
    "flush_claim_idle_ms": ("RELAYGATE_FLUSH_CLAIM_IDLE_MS", lambda n, r: _parse_int(n, r, 1)),
    "flush_linger_ms": ("RELAYGATE_FLUSH_LINGER_MS", lambda n, r: _parse_int(n, r, 0, 60_000)),
    "allow_unsafe_redis_eviction": ("RELAYGATE_ALLOW_UNSAFE_REDIS_EVICTION", _parse_bool),
    "workers": ("RELAYGATE_WORKERS", lambda n, r: _parse_int(n, r, 1, 256)),
    "with_worker": ("RELAYGATE_WITH_WORKER", _parse_bool),
    "worker_metrics_port": (
        "RELAYGATE_WORKER_METRICS_PORT",
        lambda n, r: _parse_int(n, r, 0, 65535),
    ),
    "max_body_bytes": ("RELAYGATE_MAX_BODY_BYTES", lambda n, r: _parse_int(n, r, 1024)),
    "gc_gen0": ("RELAYGATE_GC_GEN0", lambda n, r: _parse_int(n, r, 0, 10_000_000)),
    "channel_attempts": ("RELAYGATE_CHANNEL_ATTEMPTS", lambda n, r: _parse_int(n, r, 1, 20)),
    "retry_statuses": ("RELAYGATE_RETRY_STATUSES", _parse_statuses),
    "auto_disable_channels": ("RELAYGATE_AUTO_DISABLE_CHANNELS", _parse_bool),
    "auto_disable_keywords": ("RELAYGATE_AUTO_DISABLE_KEYWORDS", _parse_keywords),
    "auto_enable_channels": ("RELAYGATE_AUTO_ENABLE_CHANNELS", _parse_bool),
    "channel_retest_seconds": ("RELAYGATE_CHANNEL_RETEST_SECONDS", _parse_float),
    "cors_origins": ("RELAYGATE_CORS_ORIGINS", _parse_origins),
    "api_cors_origins": (
        "RELAYGATE_API_CORS_ORIGINS",
        lambda n, r: _parse_origins(n, r, allow_any=False),
    ),
}


# Settings that were removed, and why: set, they would otherwise be silently ignored.
REMOVED = {
    "RELAYGATE_DEFAULT_COMPLETION_ALLOWANCE": (
        "a request without max_tokens now reserves the model's whole output (exactness under "
        "concurrency); cap it with RELAYGATE_MAX_RESERVE_TOKENS"
    ),
}


def from_env(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build settings from the environment, then apply already-parsed CLI overrides."""
    source = os.environ if env is None else env
    for var, why in REMOVED.items():
        if var in source:
            raise ConfigError(f"{var} is no longer supported: {why}")
    values: dict[str, Any] = {}
    for attr, (var, parser) in FIELDS.items():
        raw = source.get(var)
        if raw is not None:
            values[attr] = parser(var, raw)
    for attr, raw in (overrides or {}).items():
        if raw is None:
            continue
        if attr not in FIELDS:
            raise ConfigError(f"unknown setting {attr!r}")
        var, parser = FIELDS[attr]
        values[attr] = parser(f"--{attr.replace('_', '-')}", raw) if isinstance(raw, str) else raw
    settings = Settings(**values)
    if settings.reservation_ttl <= settings.upstream_timeout:
        raise ConfigError(
            "RELAYGATE_RESERVATION_TTL must be longer than RELAYGATE_UPSTREAM_TIMEOUT "
            f"({settings.reservation_ttl} <= {settings.upstream_timeout}): a live request "
            "would be refunded while it still runs"
        )
    return settings
