"""``paths`` of the OpenAPI document: one operation per registered route."""

from __future__ import annotations

import re

from relaygate.api.auth import Level
from relaygate.api.openapi.blocks import (
    ADMIN_LOG_FILTERS,
    BOOL,
    ID_PARAM,
    INT,
    LOG_FILTERS,
    NUM,
    PAGE_PARAMS,
    STR,
    Schema,
    answer,
    obj,
    paged,
    q,
    ref,
    success,
)
from relaygate.api.unsupported import UNSUPPORTED

AUTH: list[dict[str, list[str]]] = [{"accessToken": [], "newApiUser": []}]
KEY_AUTH: list[dict[str, list[str]]] = [{"skKey": []}]
LEVEL_NAMES = {
    Level.PUBLIC: "Public",
    Level.KEY: "Key",
    Level.USER: "User",
    Level.ADMIN: "Admin",
    Level.ROOT: "Root",
}


def op(
    summary: str,
    level: Level,
    data: Schema | None = None,
    *,
    params: list[Schema] | None = None,
    body: Schema | None = None,
    ok_schema: Schema | None = None,
    description: str = "",
    openai_errors: bool = False,
) -> Schema:
    out: Schema = {"summary": summary, "x-permission": LEVEL_NAMES[level]}
    if description:
        out["description"] = description
    if level in (Level.USER, Level.ADMIN, Level.ROOT):
        out["security"] = AUTH
    elif level == Level.KEY:
        out["security"] = KEY_AUTH
    else:
        out["security"] = []
    if params:
        out["parameters"] = params
    if body is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": body}}}
    schema = ok_schema if ok_schema is not None else answer(data)
    responses: Schema = {
        "200": {
            "description": "Success, or a business error (success: false)",
            "content": {"application/json": {"schema": schema}},
        },
        "500": {
            "description": "Database or internal error",
            "content": {"application/json": {"schema": ref("Fail")}},
        },
    }
    if level in (Level.USER, Level.ADMIN, Level.ROOT):
        responses["401"] = {
            "description": "Missing credentials, or a missing/malformed/mismatched New-Api-User",
            "content": {"application/json": {"schema": ref("Fail")}},
        }
    elif level == Level.KEY:
        refusal = ref("OpenAIError") if openai_errors else ref("Fail")
        responses["401"] = {
            "description": "Missing, unknown, disabled or deleted key",
            "content": {"application/json": {"schema": refusal}},
        }
        responses["403"] = {
            "description": "The key's user is banned",
            "content": {"application/json": {"schema": refusal}},
        }
    out["responses"] = responses
    return out


U, A, P, K = Level.USER, Level.ADMIN, Level.PUBLIC, Level.KEY

PATHS: dict[str, dict[str, Schema]] = {
    "/api/status": {"get": op("Public instance status", P, ref("Status"))},
    "/api/openapi.json": {
        "get": op("This document", P, ok_schema={"type": "object", "required": ["openapi"]})
    },
    "/api/token/": {
        "get": op(
            "List the caller's tokens (id desc, keys masked)", U, paged("Token"), params=PAGE_PARAMS
        ),
        "post": op(
            "Create a token; data.key holds the full 48-character key (use it as sk-<key>), shown only here",
            U,
            ref("TokenCreated"),
            body=ref("TokenInput"),
        ),
        "put": op(
            "Update a token (fields left out are kept); ?status_only=1 toggles status",
            U,
            ref("Token"),
            body=ref("TokenUpdate"),
            params=[q("status_only", STR, "any non-empty value: write only status")],
        ),
    },
    "/api/token/search": {
        "get": op(
            "Search the caller's tokens",
            U,
            paged("Token"),
            params=[
                *PAGE_PARAMS,
                q(
                    "keyword",
                    {"type": "string", "maxLength": 100},
                    "name prefix, or LIKE pattern with %",
                ),
                q("token", {"type": "string", "maxLength": 200}, "a full key (sk- optional)"),
            ],
        ),
    },
    "/api/token/batch": {
        "post": op(
            "Delete several of the caller's tokens; data = number deleted",
            U,
            INT,
            body=obj(
                {
                    "ids": {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 1},
                        "minItems": 1,
                        "maxItems": 100,
                    }
                },
                ["ids"],
            ),
        ),
    },
    "/api/token/{id}": {
        "get": op("One token, with its recent activity", U, ref("TokenDetail"), params=[ID_PARAM]),
        "delete": op("Delete a token", U, None, params=[ID_PARAM]),
    },
    "/api/token/{id}/key": {
        "post": op(
            "Always refused: keys are stored hashed and shown only at creation",
            U,
            None,
            params=[ID_PARAM],
        ),
    },
    "/api/usage/token/": {
        "get": op(
            "Balance of the presented sk- key",
            K,
            ok_schema={"anyOf": [ref("TokenUsage"), ref("Fail")]},
        ),
    },
    "/api/log/token": {
        "get": op(
            "Last 1000 log rows of the presented sk- key", K, {"type": "array", "items": ref("Log")}
        ),
    },
    "/api/user/login": {
        "post": op(
            "Log in with username and password; sets the HttpOnly session cookie",
            P,
            ref("LoginData"),
            body=obj({"username": STR, "password": STR}, ["username", "password"]),
            description="429 with success:false after too many attempts per address or user.",
        )
    },
    "/api/user/logout": {"get": op("End the login session and clear its cookie", P)},
    "/api/user/register": {
        "post": op(
            "Register a common user (only when RELAYGATE_REGISTER_ENABLED)",
            P,
            body=obj({"username": STR, "password": STR}, ["username", "password"]),
        )
    },
    "/api/user/auth/refresh": {
        "post": op("Swap the login session for a fresh one", U, ref("LoginData"))
    },
    "/api/user/self": {
        "get": op("The caller's account; quota = live remain", U, ref("User")),
        "put": op(
            "Change the caller's username, display name or password (needs original_password)",
            U,
            body=obj(
                {"username": STR, "display_name": STR, "password": STR, "original_password": STR}
            ),
        ),
    },
    "/api/user/token": {
        "get": op("Generate a new access token for the caller (the old one stops working)", U, STR),
    },
    "/api/user/": {
        "get": op("List users", A, paged("User"), params=PAGE_PARAMS),
        "post": op(
            "Create a user; data.access_token is shown once",
            A,
            ref("UserCreated"),
            body=ref("UserInput"),
        ),
        "put": op("Update a user (quota = set remain)", A, ref("User"), body=ref("UserUpdate")),
    },
    "/api/user/search": {
        "get": op(
            "Search users",
            A,
            paged("User"),
            params=[
                *PAGE_PARAMS,
                q("keyword", {"type": "string", "maxLength": 100}),
                q("group", {"type": "string", "maxLength": 64}),
                q("role", {"type": "integer", "minimum": 0, "maximum": 100}),
                q("status", {"type": "integer", "minimum": 0, "maximum": 100}),
            ],
        ),
    },
    "/api/user/manage": {
        "post": op(
            "disable / enable / delete / promote / demote / add_quota (add, subtract, "
            "override = set remain)",
            A,
            ref("User"),
            body=ref("UserManage"),
        ),
    },
    "/api/user/{id}": {
        "get": op("One user", A, ref("User"), params=[ID_PARAM]),
        "delete": op("Delete a user", A, None, params=[ID_PARAM]),
    },
    "/api/channel/": {
        "get": op(
            "List channels (keys never returned)",
            A,
            paged("Channel", type_counts={"type": "object", "additionalProperties": INT}),
            params=[
                *PAGE_PARAMS,
                q("status", {"type": "integer", "minimum": 0, "maximum": 3}),
                q("type", {"type": "integer", "minimum": 0, "maximum": 1000}),
                q("group", {"type": "string", "maxLength": 64}),
            ],
        ),
        "post": op(
            "Create a channel ({mode, channel} or the channel itself)",
            A,
            {"anyOf": [ref("Channel"), obj({"ids": {"type": "array", "items": INT}})]},
            body=ref("ChannelCreate"),
        ),
        "put": op(
            "Update a channel (an empty key keeps the stored one); ?status_only=1",
            A,
            ref("Channel"),
            body=ref("ChannelUpdate"),
            params=[q("status_only", STR)],
        ),
    },
    "/api/channel/search": {
        "get": op(
            "Search channels",
            A,
            paged("Channel", type_counts={"type": "object"}),
            params=[
                *PAGE_PARAMS,
                q("keyword", {"type": "string", "maxLength": 100}),
                q("group", {"type": "string", "maxLength": 64}),
                q("model", {"type": "string", "maxLength": 255}),
                q("status", {"type": "integer", "minimum": 0, "maximum": 3}),
            ],
        ),
    },
    "/api/channel/test/{id}": {
        "get": op(
            "Send one small chat request through the channel",
            A,
            obj({"time": NUM, "model": STR, "status_code": INT}),
            params=[ID_PARAM, q("model", {"type": "string", "maxLength": 255})],
            ok_schema={
                "anyOf": [
                    success(obj({"time": NUM, "model": STR, "status_code": INT})),
                    ref("Fail"),
                ]
            },
            description="`time` (seconds, float) is also given beside the envelope.",
        ),
    },
    "/api/channel/{id}": {
        "get": op("One channel (no key)", A, ref("Channel"), params=[ID_PARAM]),
        "delete": op("Delete a channel", A, None, params=[ID_PARAM]),
    },
    "/api/channel/{id}/status": {
        "post": op(
            "Enable (1) or disable (2) a channel",
            A,
            ref("Channel"),
            params=[ID_PARAM],
            body=obj({"status": {"type": "integer", "enum": [1, 2, 3]}}, ["status"]),
        ),
    },
    "/api/log/": {
        "get": op("All usage logs", A, paged("Log"), params=ADMIN_LOG_FILTERS),
    },
    "/api/log/self": {
        "get": op(
            "The caller's usage logs (ids are ordinals)", U, paged("Log"), params=LOG_FILTERS
        ),
    },
    "/api/log/stat": {
        "get": op(
            "Sum of quota (filters) and last-minute rpm/tpm, all users",
            A,
            ref("LogStat"),
            params=ADMIN_LOG_FILTERS,
        ),
    },
    "/api/log/self/stat": {
        "get": op(
            "Sum of quota and last-minute rpm/tpm of the caller",
            U,
            ref("LogStat"),
            params=LOG_FILTERS,
        ),
    },
    "/v1/dashboard/billing/subscription": {
        "get": op(
            "OpenAI-legacy: total granted (USD) of the presented sk- key",
            K,
            ok_schema=ref("BillingSubscription"),
            openai_errors=True,
        ),
    },
    "/v1/dashboard/billing/usage": {
        "get": op(
            "OpenAI-legacy: total used (US cents) of the presented sk- key",
            K,
            ok_schema=ref("BillingUsage"),
            openai_errors=True,
        ),
    },
    "/dashboard/billing/subscription": {
        "get": op(
            "Same as /v1/dashboard/billing/subscription",
            K,
            ok_schema=ref("BillingSubscription"),
            openai_errors=True,
        ),
    },
    "/dashboard/billing/usage": {
        "get": op(
            "Same as /v1/dashboard/billing/usage",
            K,
            ok_schema=ref("BillingUsage"),
            openai_errors=True,
        ),
    },
    "/api/operator/tokens": {
        "get": op(
            "Operator quota view: every user's tokens by spend over a window, live used/remaining",
            A,
            obj(
                {"window": INT, "items": {"type": "array", "items": ref("TokenSpend")}},
                ["window", "items"],
            ),
            params=[
                q("window", {"type": "integer", "minimum": 60}, "seconds, default 3600"),
                q("limit", {"type": "integer", "minimum": 1, "maximum": 200}, "default 50"),
            ],
        ),
    },
}

STRS: Schema = {"type": "array", "items": STR}
ROOT = Level.ROOT
QUOTA_ROW = obj(
    {
        "user_id": INT,
        "username": STR,
        "model_name": STR,
        "created_at": INT,
        "token_used": INT,
        "count": INT,
        "quota": INT,
    },
    ["model_name", "created_at", "token_used", "count", "quota"],
)
RANGE_PARAMS = [q("start_timestamp", INT), q("end_timestamp", INT)]
GROUP_TABLE: Schema = {
    "type": "object",
    "additionalProperties": obj({"ratio": NUM, "desc": STR}, ["ratio", "desc"]),
}

PATHS.update(
    {
        "/api/user/models": {
            "get": op(
                "Models the caller's usable groups serve (?group= narrows to one)",
                U,
                STRS,
                params=[q("group", STR)],
            )
        },
        "/api/user/self/groups": {
            "get": op("Groups the caller may give a token: {group: {ratio, desc}}", U, GROUP_TABLE)
        },
        "/api/user/groups": {"get": op("Groups anyone may pick", P, GROUP_TABLE)},
        "/api/group/": {"get": op("Every group with a ratio", A, STRS)},
        "/api/models": {
            "get": op(
                "Channel type -> model names (the channel editor's presets)",
                U,
                {"type": "object", "additionalProperties": STRS},
            )
        },
        "/api/pricing": {
            "get": op(
                "Models with a price that an enabled channel serves, with ratios and groups",
                P,
                ok_schema=obj(
                    {
                        "success": {"const": True},
                        "data": {"type": "array", "items": {"type": "object"}},
                        "group_ratio": {"type": "object"},
                        "usable_group": GROUP_TABLE,
                    },
                    ["success", "data", "group_ratio", "usable_group"],
                ),
            )
        },
        "/api/channel/models": {
            "get": op(
                "Every priced model as an OpenAI model object",
                A,
                {"type": "array", "items": obj({"id": STR, "object": STR}, ["id"])},
            )
        },
        "/api/channel/models_enabled": {"get": op("Models an enabled channel serves", A, STRS)},
        "/api/channel/test": {
            "get": op("Start testing every enabled channel in the background", A)
        },
        "/api/channel/disabled": {
            "delete": op("Delete every disabled channel; data = how many", A, INT)
        },
        "/api/data/self": {
            "get": op(
                "The caller's usage per model and hour (at most a month)",
                U,
                {"type": "array", "items": QUOTA_ROW},
                params=RANGE_PARAMS,
            )
        },
        "/api/data/": {
            "get": op(
                "Usage per model and hour, everyone's or one user's (at most a month)",
                A,
                {"type": "array", "items": QUOTA_ROW},
                params=[*RANGE_PARAMS, q("username", STR)],
            )
        },
        "/api/option/": {
            "get": op(
                "Stored options as [{key, value}] (secrets left out)",
                ROOT,
                {"type": "array", "items": obj({"key": STR, "value": STR}, ["key", "value"])},
            )
        },
    }
)

PATHS["/api/setup"] = {
    "get": op(
        "Whether the instance is set up (always)",
        P,
        obj({"status": BOOL, "root_init": BOOL, "database_type": STR}),
    )
}
for _content in ("/api/notice", "/api/about", "/api/home_page_content"):
    PATHS[_content] = {"get": op("Console content (none: an empty string)", P, STR)}
PATHS["/api/uptime/status"] = {"get": op("Uptime Kuma status groups (none)", P, {"type": "array"})}
# One non-empty path segment: an empty or dotted value would name another URL.
SEGMENT = {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"}
for _method, _path, _level, _reason in UNSUPPORTED:
    _params = [
        {"name": n, "in": "path", "required": True, "schema": SEGMENT}
        for n in re.findall(r"\{(\w+)\}", _path)
    ]
    PATHS.setdefault(_path, {})[_method.lower()] = op(
        "Not supported by relaygate (answers success: false)",
        _level,
        params=_params or None,
        description=_reason,
    )
