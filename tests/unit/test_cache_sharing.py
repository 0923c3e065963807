"""The token cache shares what tokens hold alike (per-user keys, allowlists) without changing
what any token reads: the memory of a million cached tokens depends on it."""

from __future__ import annotations

import gc
import ipaddress
from typing import Any

from relaygate.cache import Shared, meta_from_row
from relaygate.keys import KeyScheme

KEYS = KeyScheme("rg", 4)


def _row(token_id: int, user_id: int = 3, **over: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": token_id,
        "user_id": user_id,
        "name": f"t{token_id}",
        "username": f"user{user_id}",
        "role": 1,
        "status": 1,
        "user_status": 1,
        "expired_time": -1,
        "unlimited_quota": False,
        "model_limits_enabled": False,
        "model_limits": "",
        "allow_ips": "",
        "group": "",
        "user_group": "default",
        "ver": 1,
    }
    row.update(over)
    return row


def test_keys_read_as_before() -> None:
    meta = meta_from_row(_row(70001, 3), KEYS, 0.0, Shared(KEYS))
    assert meta.token_key == KEYS.token(3, 70001)
    assert meta.user_key == KEYS.user(3)
    assert meta.stream_key == KEYS.stream_of_user(3)
    assert meta.orphans_key == KEYS.orphans(3)
    assert meta.resv_key == KEYS.reservations(3)
    assert meta.refused_key == KEYS.refusals(3)
    assert meta.reaped_key == KEYS.reaped(3)
    assert (meta.token_orphan, meta.user_orphan) == ("t70001", "u3")
    assert (meta.user_id, meta.username, meta.user_group) == (3, "user3", "default")
    assert meta.group == "default" and meta.token_group == ""


def test_tokens_of_one_user_share_one_owner() -> None:
    shared = Shared(KEYS)
    a = meta_from_row(_row(1), KEYS, 0.0, shared)
    b = meta_from_row(_row(2), KEYS, 0.0, shared)
    assert a.owner is b.owner
    other = meta_from_row(_row(3, user_id=4), KEYS, 0.0, shared)
    assert other.owner is not a.owner and other.user_key == KEYS.user(4)


def test_a_changed_user_gets_a_new_owner_and_old_tokens_keep_theirs() -> None:
    shared = Shared(KEYS)
    before = meta_from_row(_row(1), KEYS, 0.0, shared)
    after = meta_from_row(_row(2, user_status=2), KEYS, 0.0, shared)
    assert after.owner is not before.owner
    assert (before.user_status, after.user_status) == (1, 2)


def test_an_owner_no_token_holds_is_forgotten() -> None:
    shared = Shared(KEYS)
    meta = meta_from_row(_row(1), KEYS, 0.0, shared)
    ident = id(meta.owner)
    del meta
    gc.collect()
    assert ident not in {id(o) for o in shared._owners.values()}


def test_equal_allowlists_share_one_object() -> None:
    shared = Shared(KEYS)
    lists = {"model_limits_enabled": True, "model_limits": "gpt-4o, gpt-4o-mini"}
    ips = {"allow_ips": "10.0.0.0/8\n127.0.0.1"}
    a = meta_from_row(_row(1, **lists, **ips), KEYS, 0.0, shared)
    b = meta_from_row(_row(2, user_id=9, **lists, **ips), KEYS, 0.0, shared)
    assert a.models is b.models and a.models == frozenset({"gpt-4o", "gpt-4o-mini"})
    assert a.networks is b.networks and a.networks is not None and len(a.networks) == 2
    assert b.ip_allowed(ipaddress.ip_address("10.1.2.3"))
    assert not b.ip_allowed(ipaddress.ip_address("192.168.0.1"))
    plain = meta_from_row(_row(3), KEYS, 0.0, shared)
    assert plain.models is None and plain.networks is None


def test_an_unparsable_allowlist_still_fails_closed_when_shared() -> None:
    shared = Shared(KEYS)
    for token_id in (1, 2):
        meta = meta_from_row(_row(token_id, allow_ips="not-an-ip"), KEYS, 0.0, shared)
        assert meta.networks == ()
        assert not meta.ip_allowed(ipaddress.ip_address("127.0.0.1"))


def test_the_allowlist_table_is_bounded() -> None:
    shared = Shared(KEYS)
    for i in range(5000):
        shared.models(f"m{i}")
    assert len(shared._models) <= 4096
