"""Is this token allowed this model, from this address, in its group? Checked in memory on
every request; a refusal is confirmed against current metadata before it is given."""

from __future__ import annotations

import logging

from redis.exceptions import RedisError

from relaygate.cache import TokenMeta
from relaygate.relay import errors
from relaygate.relay.auth import IPAddress
from relaygate.relay.errors import RelayError
from relaygate.runtime import Runtime

log = logging.getLogger(__name__)


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
