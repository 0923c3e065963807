"""Input checks of the management API, without services."""

from __future__ import annotations

import pytest
from aiohttp.test_utils import make_mocked_request

from relaygate.api.envelope import ApiFail
from relaygate.api.tokens import parse_token_fields
from relaygate.api.validation import (
    as_int,
    as_str,
    get_id,
    like_pattern,
    page_query,
    prefix_pattern,
    query_int,
)
from relaygate.api.views import effective_status


def req(query: str):
    return make_mocked_request("GET", f"/api/token/?{query}")


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", (1, 10)),
        ("p=0", (1, 10)),
        ("p=-4&page_size=5", (1, 5)),
        ("p=3&page_size=1000", (3, 100)),
        ("ps=7", (1, 7)),
        ("size=8", (1, 8)),
        ("page_size=0&ps=9", (1, 9)),
        ("page_size=-2", (1, 10)),
    ],
)
def test_page_query_follows_new_api(query, expected):
    assert page_query(req(query)) == expected


@pytest.mark.parametrize("query", ["p=x", "page_size=1.5", "p=99999999999"])
def test_page_query_refuses_junk(query):
    with pytest.raises(ApiFail):
        page_query(req(query))


def test_query_int_bounds():
    assert query_int(req("type=2"), "type", 0, 0, 7) == 2
    assert query_int(req(""), "type", 0, 0, 7) == 0
    for bad in ("type=8", "type=abc", "type=" + "9" * 30):
        with pytest.raises(ApiFail, match="type"):
            query_int(req(bad), "type", 0, 0, 7)


def test_like_rules():
    assert like_pattern("abc", "k") == ("abc", False)
    assert like_pattern("ab%", "k") == ("ab%", True)
    assert like_pattern("a_b%", "k") == ("a!_b%", True)
    for bad, msg in (("a%%b", "consecutive"), ("%a%b%", "at most 2"), ("a%", "at least 2")):
        with pytest.raises(ApiFail, match=msg):
            like_pattern(bad, "k")
    assert prefix_pattern("50%_off!") == "50!%!_off!!%"


def test_scalars():
    assert as_int(5.0, "n") == 5
    for bad in (True, "5", 5.5, None, float("inf")):
        with pytest.raises(ApiFail, match="n must be an integer"):
            as_int(bad, "n")
    with pytest.raises(ApiFail, match="between"):
        as_int(11, "n", 0, 10)
    with pytest.raises(ApiFail, match="control"):
        as_str("a\x00b", "name", 10)
    with pytest.raises(ApiFail, match="UTF-8"):
        as_str("a\ud800", "name", 10)
    assert as_str("a\nb", "ips", 10, lines=True) == "a\nb"
    for bad in ("abc", "0", "-1", "1.0", "", "١٢"):
        with pytest.raises(ApiFail, match="Invalid ID"):
            get_id(bad)
    assert get_id("42") == 42


def test_token_fields_credits_and_models():
    out = parse_token_fields(
        {
            "name": "n",
            "remain_quota": 1,
            "remain_credits": 200,
            "daily_credits": 0.5,
            "models": ["a", "b"],
            "model_limits": "b,a",
            "expired_time": 0,
            "key": "sk-x",
            "used_quota": 99,
            "user_id": 7,
        }
    )
    assert out == {
        "name": "n",
        "remain_quota": 500_000,
        "daily_quota": 1250,
        "model_limits": ["a", "b"],
        "expired_time": -1,
    }
    assert parse_token_fields({"model_limits": "a,b"})["model_limits"] == ["a", "b"]
    # models and model_limits are one allowlist: against the stored one, the changed wins
    both = {"models": ["a"], "model_limits": "c"}
    assert parse_token_fields(both, ["a"])["model_limits"] == ["c"]
    assert parse_token_fields(both, ["c"])["model_limits"] == ["a"]
    with pytest.raises(ApiFail, match="disagree"):
        parse_token_fields(both, ["x"])
    with pytest.raises(ApiFail, match="disagree"):
        parse_token_fields(both)  # create: no stored list to tell which one is meant
    assert parse_token_fields({"allow_ips": None}) == {"allow_ips": ""}
    # unlimited tokens skip the remain checks, as New API
    assert parse_token_fields({"unlimited_quota": True, "remain_quota": -5}) == {
        "unlimited_quota": True
    }
    with pytest.raises(ApiFail, match="Token name is too long"):
        parse_token_fields({"name": "字" * 17})  # 51 bytes


def test_effective_status():
    row = {"status": 1, "expired_time": -1, "unlimited_quota": False}
    assert effective_status(row, 10) == 1
    assert effective_status(row, 0) == 4
    assert effective_status({**row, "unlimited_quota": True}, -5) == 1
    assert effective_status({**row, "expired_time": 100}, 10, now=200) == 3
    assert effective_status({**row, "status": 2}, 0) == 2
