"""Turn tools/extract_console_calls.py's output into tests/fixtures/newapi_console_calls.json:
concrete placeholders for path parameters, plausible query values, request bodies for the
writes, and the data fields the replay test checks.

    python tools/extract_console_calls.py <new-api git dir> 5a6c53d > /tmp/calls.json
    python tools/make_console_fixture.py /tmp/calls.json tests/fixtures/newapi_console_calls.json
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any


def path_of(p: str) -> str:
    def var(m: re.Match[str]) -> str:
        if p.startswith("/api/token/"):
            return "{token_id}"
        if p.startswith("/api/channel/"):
            return "{channel_id}"
        if p.startswith("/api/user/"):
            return "{user_id}"
        return "1"

    return re.sub(r"\$\{[^}]*\}", var, p)


VALUES = {
    "p": "1",
    "page_size": "10",
    "size": "10",
    "type": "0",
    "id_sort": "false",
    "tag_mode": "false",
    "start_timestamp": "{hour_ago}",
    "end_timestamp": "{now}",
    "model": "gpt-4o-mini",
    "month": "2026-12",
    "default_time": "hour",
    "tag": "x",
    "code": "x",
    "state": "x",
    "turnstile": "",
    "page": "1",
    "email": "a@example.com",
    "name": "x",
    "hardware_id": "1",
    "gpu_count": "1",
    "target_timestamp": "{hour_ago}",
}


def query_of(q: str) -> str:
    if not q:
        return ""
    parts: list[str] = []
    for part in q.split("&"):
        if part.startswith("${"):
            continue  # ${typeParam}, ${params}: optional parts
        k, _, v = part.partition("=")
        v = re.sub(r"\$\{[^}]*\}", VALUES.get(k, ""), v, count=1)
        v = re.sub(r"\$\{[^}]*\}", "", v)  # ${typeParam}${statusParam}: optional parts
        parts.append(f"{k}={v}")
    return "&".join(parts)


BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/user/login"): {"username": "root", "password": "{password}"},
    ("POST", "/api/user/register"): {"username": "newcomer", "password": "{password}"},
    ("PUT", "/api/user/self"): {"display_name": "Root"},
    ("POST", "/api/user/"): {"username": "{unique}", "password": "{password}", "display_name": "r"},
    ("POST", "/api/user/manage"): {"id": "{other_id}", "action": "enable"},
    ("POST", "/api/channel/"): {
        "mode": "single",
        "channel": {
            "name": "replay",
            "type": 1,
            "key": "sk-upstream-replay",
            "base_url": "http://127.0.0.1:9",
            "models": "gpt-4o-mini",
            "group": "default",
        },
    },
    ("PUT", "/api/channel/"): {"id": "{channel_id}", "name": "replay-renamed"},
    ("POST", "/api/token/"): {
        "name": "replay",
        "remain_quota": 1000,
        "expired_time": -1,
        "unlimited_quota": False,
        "model_limits_enabled": False,
        "model_limits": "",
        "allow_ips": "",
        "group": "",
    },
    ("PUT", "/api/token/"): {
        "id": "{token_id}",
        "name": "replay-renamed",
        "remain_quota": 1000,
        "expired_time": -1,
        "unlimited_quota": False,
        "model_limits_enabled": False,
        "model_limits": "",
        "allow_ips": "",
        "group": "",
    },
    ("POST", "/api/token/batch"): {"ids": [999999]},
    ("POST", "/api/token/batch/keys"): {"ids": ["{token_id}"]},
    ("POST", "/api/token/{token_id}/key"): {},
}
FIELDS: dict[tuple[str, str], list[str]] = {
    ("GET", "/api/status"): [
        "version",
        "system_name",
        "quota_per_unit",
        "display_in_currency",
        "register_enabled",
        "password_login_enabled",
        "setup",
    ],
    ("GET", "/api/setup"): ["status", "root_init"],
    ("GET", "/api/user/self"): [
        "id",
        "username",
        "role",
        "status",
        "group",
        "quota",
        "used_quota",
        "request_count",
        "permissions",
    ],
    ("GET", "/api/user/"): ["page", "page_size", "total", "items"],
    ("GET", "/api/user/search"): ["page", "page_size", "total", "items"],
    ("GET", "/api/user/{user_id}"): ["id", "username", "role"],
    ("POST", "/api/user/login"): ["id", "username", "display_name", "role", "status", "group"],
    ("GET", "/api/token/"): ["page", "page_size", "total", "items"],
    ("GET", "/api/token/search"): ["page", "page_size", "total", "items"],
    ("GET", "/api/token/{token_id}"): [
        "id",
        "name",
        "key",
        "status",
        "remain_quota",
        "model_limits",
        "expired_time",
    ],
    ("PUT", "/api/token/"): ["id", "name", "status"],
    ("GET", "/api/channel/"): ["page", "page_size", "total", "items", "type_counts"],
    ("GET", "/api/channel/search"): ["page", "page_size", "total", "items"],
    ("GET", "/api/channel/{channel_id}"): ["id", "name", "type", "models", "group", "status"],
    ("GET", "/api/log/"): ["page", "page_size", "total", "items"],
    ("GET", "/api/log/self/"): ["page", "page_size", "total", "items"],
    ("GET", "/api/log/stat"): ["quota", "rpm", "tpm"],
    ("GET", "/api/log/self/stat"): ["quota", "rpm", "tpm"],
    ("GET", "/api/option/"): [],
    ("GET", "/api/user/self/groups"): ["default"],
}
# data is a list or a string or a scalar, not an object: checked by type
DATA_TYPES: dict[tuple[str, str], str] = {
    ("GET", "/api/user/models"): "list",
    ("GET", "/api/channel/models"): "list",
    ("GET", "/api/channel/models_enabled"): "list",
    ("GET", "/api/group"): "list",
    ("GET", "/api/group/"): "list",
    ("GET", "/api/data/"): "list",
    ("GET", "/api/data/self/"): "list",
    ("GET", "/api/option/"): "list",
    ("GET", "/api/pricing"): "list",
    ("GET", "/api/models"): "object",
    ("GET", "/api/user/token"): "string",
    ("GET", "/api/notice"): "string",
    ("GET", "/api/about"): "string",
    ("GET", "/api/home_page_content"): "string",
    ("GET", "/api/uptime/status"): "list",
    ("DELETE", "/api/channel/disabled"): "int",
    ("POST", "/api/token/batch"): "int",
}


def build(calls: list[dict[str, str]]) -> dict[str, Any]:
    out: list[dict[str, Any]] = []
    for c in calls:
        p = path_of(c["path"])
        key = (c["method"], p)
        e: dict[str, Any] = {"method": c["method"], "path": p, "query": query_of(c["query"])}
        if c["method"] in ("POST", "PUT", "PATCH"):
            e["body"] = BODIES.get(key, {})
        if key in FIELDS:
            e["fields"] = FIELDS[key]
        if key in DATA_TYPES:
            e["data_type"] = DATA_TYPES[key]
        e["source"] = c["source"]
        out.append(e)
    doc = {
        "about": "Every /api/ call New API's classic web console makes, extracted from QuantumNous/new-api at 5a6c53d (2026-07-18, NA-0718: the last build whose console logs in with a session cookie plus New-Api-User) by tools/extract_console_calls.py over web/classic/src (read through the zyqfork/new-api mirror, which carries upstream's history). Template parts are given concrete values: {token_id}, {channel_id}, {user_id}, {other_id}, {unique}, {password}, {now}, {hour_ago} are filled in by tests/integration/test_api_console_replay.py. 'fields': data fields checked when the call succeeds; 'data_type': the type data must have.",
        "source_commit": "5a6c53d",
        "calls": out,
    }
    return doc


def main(source: str, target: str) -> None:
    with open(source) as f:
        calls = json.load(f)
    with open(target, "w") as f:
        json.dump(build(calls), f, indent=4, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
