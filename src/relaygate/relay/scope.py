"""Who is calling, and is this token allowed this model, from this address, in its group?
Checked in memory on every request; a refusal is confirmed against current metadata before
it is given. Every relay route that takes a token authenticates through ``authenticate``,
so the failed-authentication limit and the outage answer cannot differ between routes."""

from __future__ import annotations

import logging
import time

from aiohttp import web
from redis.exceptions import RedisError

from relaygate.cache import TokenMeta
from relaygate.credentials import hash_secret
from relaygate.ledger import STATUS_ENABLED, STATUS_EXHAUSTED, STATUS_EXPIRED
from relaygate.relay import errors
from relaygate.relay.auth import IPAddress, client_ip, extract_key
from relaygate.relay.errors import RelayError
from relaygate.runtime import Runtime

log = logging.getLogger(__name__)


async def authenticate(
    request: web.Request, rt: Runtime, ip: IPAddress | None
) -> tuple[bytes, TokenMeta]:
    """(key hash, metadata) of a known key whose group its user may still use."""
    key = extract_key(request)
    if not key:
        raise errors.MISSING_KEY
    key_hash = hash_secret(key)
    limiter = rt.auth_failures
    if limiter.blocked(ip) and not rt.cache.holds(key_hash):
        raise errors.AUTH_RATE_LIMITED
    try:
        meta = await rt.cache.get(key_hash)
    except Exception as exc:
        log.warning("token metadata load failed: %s", exc)
        raise errors.METADATA_UNAVAILABLE from None
    if meta is None:
        limiter.failed(ip)
        raise errors.INVALID_KEY
    if meta.token_group:
        check_group(rt, meta)
    return key_hash, meta


def usable_or_raise(meta: TokenMeta, now: float) -> None:
    """The token states a request that does not reserve is refused for, from the cached
    metadata (kept current by invalidation): listing models is no back door for a dead
    token. (A relay call learns them from the reserve, against the ledger.)"""
    if meta.status == STATUS_EXPIRED or (meta.expired_time != -1 and meta.expired_time < now):
        raise errors.TOKEN_EXPIRED
    if meta.status == STATUS_EXHAUSTED:
        raise errors.TOKEN_EXHAUSTED
    if meta.status != STATUS_ENABLED:
        raise errors.TOKEN_DISABLED
    if meta.user_status != STATUS_ENABLED:
        raise errors.USER_DISABLED


async def usable_token(request: web.Request, rt: Runtime) -> TokenMeta:
    """The metadata of a usable token for the routes that read, not relay (model lists)."""
    _, meta = await authenticate(request, rt, client_ip(request, rt.settings.trusted_proxies))
    usable_or_raise(meta, time.time())
    return meta


def check_scope(meta: TokenMeta, model: str, ip: IPAddress | None) -> None:
    if meta.networks is not None and not meta.ip_allowed(ip):
        raise errors.IP_DENIED
    if meta.models is not None and model not in meta.models:
        raise errors.model_not_allowed(model)


def check_group(rt: Runtime, meta: TokenMeta) -> None:
    """A token's own group must still be one its user may use (a change of the user's group
    or of ``UserUsableGroups`` reaches every instance through the invalidation channel)."""
    reason = rt.catalog.prices.group_refusal(meta.user_group, meta.token_group)
    if reason is not None:
        raise errors.group_refused(meta.token_group, reason)


async def confirmed_scope(
    rt: Runtime, meta: TokenMeta, key_hash: bytes, model: str, ip: IPAddress | None
) -> TokenMeta:
    """Check IP and model in memory; before refusing, make sure the metadata is current.

    A refusal is rare, so paying one HGET there buys "a re-scope is honoured on the very next
    request" without any cost on the accepted path (where reserve's ``ver`` check guards).
    """
    try:
        check_scope(meta, model, ip)
        return meta
    except RelayError:
        try:
            ver = await rt.hot.execute_command("HGET", meta.token_key, "ver")
        except RedisError:
            raise errors.LEDGER_UNAVAILABLE from None
        if ver is None or int(ver) == meta.ver:
            raise
    fresh = await reload_meta(rt, key_hash)
    check_scope(fresh, model, ip)
    return fresh


async def reload_meta(rt: Runtime, key_hash: bytes) -> TokenMeta:
    try:
        fresh = await rt.cache.load(key_hash)
    except (TimeoutError, OSError, RedisError) as exc:
        log.warning("token metadata reload failed: %s", exc)
        raise errors.METADATA_UNAVAILABLE from None
    except Exception as exc:  # asyncpg errors have no common base worth importing here
        log.warning("token metadata reload failed: %s", exc)
        raise errors.METADATA_UNAVAILABLE from None
    if fresh is None:
        raise errors.INVALID_KEY
    return fresh
