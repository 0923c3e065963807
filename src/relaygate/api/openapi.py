"""The OpenAPI 3.1 document of the management API, served at ``/api/openapi.json``.

Written by hand (as a dict, so that shared pieces are named once) rather than generated:
it states the contract, including New API's quirks (HTTP 200 business errors, the ``code``
envelope of ``/api/usage/token/``, ``time`` beside the envelope of a channel test). A test
checks that it lists exactly the registered routes, and a property test checks responses
against it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from relaygate.api.auth import Level
from relaygate.api.envelope import raw_json
from relaygate.api.routing import Ctx, RouteTable

routes = RouteTable()

Schema = dict[str, Any]

INT: Schema = {"type": "integer"}
STR: Schema = {"type": "string"}
BOOL: Schema = {"type": "boolean"}
NUM: Schema = {"type": "number"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def obj(props: dict[str, Schema], required: list[str] | None = None) -> Schema:
    out: Schema = {"type": "object", "properties": props}
    if required:
        out["required"] = required
    return out


def success(data: Schema | None) -> Schema:
    props: dict[str, Schema] = {"success": {"const": True}, "message": STR}
    if data is not None:
        props["data"] = data
    return obj(props, ["success", "message"])


def answer(data: Schema | None, *, extra: dict[str, Schema] | None = None) -> Schema:
    """New API's envelope: the success shape, or ``success: false`` with a message."""
    ok_shape = success(data)
    if extra:
        ok_shape["properties"].update(extra)
    return {"anyOf": [ok_shape, ref("Fail")]}


def paged(item: str, **extra: Schema) -> Schema:
    return obj(
        {
            "page": INT,
            "page_size": INT,
            "total": INT,
            "items": {"type": "array", "items": ref(item)},
            **extra,
        },
        ["page", "page_size", "total", "items"],
    )


QUOTA = {"type": "integer", "minimum": 0, "maximum": 500_000_000_000_000}
CREDITS = {"type": "number", "minimum": 0, "maximum": 200_000_000_000}
ID_PARAM = {
    "name": "id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
PAGE_PARAMS = [
    {"name": "p", "in": "query", "schema": {"type": "integer"}, "description": "1-based page"},
    {"name": "page_size", "in": "query", "schema": {"type": "integer"},
     "description": "default 10, at most 100 (fallbacks: ps, size)"},
]  # fmt: skip


def q(name: str, schema: Schema, description: str = "") -> Schema:
    out: Schema = {"name": name, "in": "query", "schema": schema}
    if description:
        out["description"] = description
    return out


LOG_FILTERS = [
    *PAGE_PARAMS,
    q("type", {"type": "integer", "minimum": 0, "maximum": 100}, "0 = all; 2 = consume"),
    q("start_timestamp", {"type": "integer", "minimum": 0}),
    q("end_timestamp", {"type": "integer", "minimum": 0}),
    q("token_name", {"type": "string", "maxLength": 100}, "exact, or LIKE with %"),
    q("model_name", {"type": "string", "maxLength": 255}, "exact, or LIKE with %"),
    q("group", {"type": "string", "maxLength": 64}),
    q("request_id", {"type": "string", "maxLength": 100}),
]
ADMIN_LOG_FILTERS = [
    *LOG_FILTERS,
    q("username", {"type": "string", "maxLength": 64}),
    q("channel", {"type": "integer", "minimum": 0}),
]

TOKEN_INPUT_PROPS: dict[str, Schema] = {
    "name": {"type": "string", "maxLength": 50, "description": "at most 50 bytes"},
    "remain_quota": QUOTA,
    "unlimited_quota": BOOL,
    "expired_time": {"type": "integer", "minimum": -1, "maximum": 253402300799,
                     "description": "unix seconds; -1 = never"},
    "model_limits_enabled": BOOL,
    "models": {"type": "array", "items": {"type": "string", "maxLength": 255}, "maxItems": 100},
    "model_limits": {"type": "string", "maxLength": 5000, "description": "comma-separated"},
    "allow_ips": {"type": ["string", "null"], "maxLength": 2000,
                  "description": "IPs/CIDRs, newline- or comma-separated"},
    "group": {"type": "string", "maxLength": 64},
    "remain_credits": CREDITS,
    "daily_credits": CREDITS,
    "monthly_credits": CREDITS,
    "daily_quota": QUOTA,
    "monthly_quota": QUOTA,
}  # fmt: skip

SCHEMAS: dict[str, Schema] = {
    "Fail": obj({"success": {"const": False}, "message": STR}, ["success", "message"]),
    "Token": obj(
        {
            "id": INT, "user_id": INT,
            "key": {"type": "string", "description": "masked (abcd**********wxyz)"},
            "status": {"type": "integer", "enum": [1, 2, 3, 4],
                       "description": "1 enabled, 2 disabled, 3 expired, 4 exhausted"},
            "name": STR, "created_time": INT, "accessed_time": INT, "expired_time": INT,
            "remain_quota": INT, "unlimited_quota": BOOL, "model_limits_enabled": BOOL,
            "model_limits": STR, "models": {"type": "array", "items": STR}, "allow_ips": STR,
            "used_quota": INT, "group": STR, "daily_quota": INT, "monthly_quota": INT,
            "cross_group_retry": BOOL, "auto_groups": {"type": "null"},
        },
        ["id", "user_id", "key", "status", "name", "created_time", "accessed_time",
         "expired_time", "remain_quota", "unlimited_quota", "model_limits_enabled",
         "model_limits", "allow_ips", "used_quota", "group", "daily_quota", "monthly_quota"],
    ),
    "TokenDetail": {
        "allOf": [
            ref("Token"),
            obj({"recent_activity": {"type": "array", "items": ref("Log")}}, ["recent_activity"]),
        ]
    },
    "TokenCreated": {
        "allOf": [
            ref("Token"),
            obj({"key": {"type": "string", "pattern": "^[0-9A-Za-z]{48}$",
                         "description": "the full key, shown only here"}}, ["key"]),
        ]
    },
    "TokenInput": obj(TOKEN_INPUT_PROPS, ["name"]),
    "TokenUpdate": obj(
        {"id": {"type": "integer", "minimum": 1},
         "status": {"type": "integer", "enum": [1, 2, 3, 4]}, **TOKEN_INPUT_PROPS},
        ["id"],
    ),
    "User": obj(
        {
            "id": INT, "username": STR, "display_name": STR, "role": INT, "status": INT,
            "email": STR, "group": STR, "quota": {"type": "integer", "description": "live remain"},
            "used_quota": INT, "request_count": INT, "remark": STR, "created_at": INT,
        },
        ["id", "username", "display_name", "role", "status", "group", "quota", "used_quota"],
    ),
    "UserCreated": {
        "allOf": [ref("User"), obj({"access_token": STR}, ["access_token"])],
    },
    "UserInput": obj(
        {
            "username": {"type": "string", "minLength": 1, "maxLength": 20},
            "password": {"type": "string", "minLength": 8, "maxLength": 20},
            "display_name": {"type": "string", "maxLength": 20},
            "role": {"type": "integer", "enum": [1, 10, 100]},
            "quota": QUOTA,
            "group": {"type": "string", "minLength": 1, "maxLength": 64},
            "email": {"type": "string", "maxLength": 50},
            "remark": {"type": "string", "maxLength": 255},
        },
        ["username"],
    ),
    "UserUpdate": obj(
        {
            "id": {"type": "integer", "minimum": 1},
            "username": {"type": "string", "minLength": 1, "maxLength": 20},
            "password": {"type": "string", "maxLength": 20},
            "display_name": {"type": "string", "maxLength": 20},
            "quota": {**QUOTA, "description": "sets the remain (atomic against spend)"},
            "group": {"type": "string", "minLength": 1, "maxLength": 64},
            "email": {"type": "string", "maxLength": 50},
            "remark": {"type": "string", "maxLength": 255},
        },
        ["id"],
    ),
    "UserManage": obj(
        {
            "id": {"type": "integer", "minimum": 1},
            "action": {"enum": ["disable", "enable", "delete", "promote", "demote", "add_quota"]},
            "value": {"type": "integer", "minimum": 0, "maximum": 500_000_000_000_000},
            "mode": {"enum": ["add", "subtract", "override"]},
        },
        ["id", "action"],
    ),
    "Channel": obj(
        {
            "id": INT, "type": INT, "name": STR, "base_url": STR, "models": STR, "group": STR,
            "priority": INT, "weight": INT, "status": INT, "model_mapping": STR,
            "test_model": STR, "created_time": INT, "test_time": INT, "response_time": INT,
            "used_quota": INT,
        },
        ["id", "type", "name", "base_url", "models", "group", "priority", "weight", "status"],
    ),
    "ChannelFields": obj(
        {
            "type": {"type": "integer", "minimum": 0, "maximum": 1000},
            "name": {"type": "string", "maxLength": 100},
            "key": {"type": "string", "maxLength": 10000, "description": "write-only"},
            "base_url": {
                "type": "string",
                "pattern": "^https?://",
                "maxLength": 500,
                "description": "a trailing /v1 is dropped; link-local, cloud metadata and"
                " (unless RELAYGATE_ALLOW_LOOPBACK_UPSTREAMS) loopback hosts are refused",
            },
            "models": {"type": ["string", "array"], "items": STR},
            "group": {"type": ["string", "array"], "items": STR},
            "priority": {"type": "integer", "minimum": -1_000_000_000, "maximum": 1_000_000_000},
            "weight": {"type": "integer", "minimum": 0, "maximum": 1_000_000},
            "status": {"type": "integer", "enum": [1, 2, 3]},
            "model_mapping": {"type": ["string", "object", "null"]},
            "test_model": {"type": "string", "maxLength": 255},
        }
    ),
    "ChannelCreate": {
        "anyOf": [
            obj({"mode": {"enum": ["single", "batch"]}, "channel": ref("ChannelFields")},
                ["channel"]),
            ref("ChannelFields"),
        ]
    },
    "ChannelUpdate": {
        "allOf": [ref("ChannelFields"), obj({"id": {"type": "integer", "minimum": 1}}, ["id"])]
    },
    "Log": obj(
        {
            "id": INT, "user_id": INT, "created_at": INT, "type": INT, "content": STR,
            "username": STR, "token_name": STR, "token_id": INT, "model_name": STR,
            "quota": INT, "prompt_tokens": INT, "completion_tokens": INT,
            "use_time": {"type": "integer", "description": "seconds"},
            "use_time_ms": INT, "is_stream": BOOL,
            "channel": {"type": "integer", "description": "channel id"},
            "channel_name": STR, "group": STR, "ip": STR, "request_id": STR, "other": STR,
        },
        ["id", "created_at", "type", "token_name", "model_name", "quota", "prompt_tokens",
         "completion_tokens", "use_time", "is_stream", "channel"],
    ),
    "LogStat": obj({"quota": INT, "rpm": INT, "tpm": INT}, ["quota", "rpm", "tpm"]),
    "TokenUsage": obj(
        {
            "code": {"const": True}, "message": STR,
            "data": obj({
                "object": {"const": "token_usage"}, "name": STR, "total_granted": INT,
                "total_used": INT, "total_available": INT, "unlimited_quota": BOOL,
                "model_limits": {"type": "object", "additionalProperties": BOOL},
                "model_limits_enabled": BOOL, "expires_at": INT,
            }, ["object", "name", "total_granted", "total_used", "total_available"]),
        },
        ["code", "message", "data"],
    ),
    "OpenAIError": obj(
        {"error": obj({"message": STR, "type": STR, "code": STR}, ["message", "type"])},
        ["error"],
    ),
    "BillingSubscription": obj(
        {
            "object": {"const": "billing_subscription"}, "has_payment_method": BOOL,
            "soft_limit_usd": NUM, "hard_limit_usd": NUM, "system_hard_limit_usd": NUM,
            "access_until": INT,
        },
        ["object", "hard_limit_usd", "access_until"],
    ),
    "BillingUsage": obj(
        {"object": {"const": "list"}, "total_usage": {"type": "number",
                                                       "description": "US cents"}},
        ["object", "total_usage"],
    ),
    "Status": obj(
        {"version": STR, "start_time": INT, "system_name": STR,
         "quota_per_unit": {"const": 500000}, "display_in_currency": BOOL},
        ["version", "start_time", "quota_per_unit"],
    ),
}  # fmt: skip

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
        "200": {"description": "Success, or a business error (success: false)",
                "content": {"application/json": {"schema": schema}}},
        "500": {"description": "Database or internal error",
                "content": {"application/json": {"schema": ref("Fail")}}},
    }  # fmt: skip
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
        "get": op("List the caller's tokens (id desc, keys masked)", U, paged("Token"),
                  params=PAGE_PARAMS),
        "post": op("Create a token; data.key holds the full 48-character key (use it as sk-<key>), shown only here", U,
                   ref("TokenCreated"), body=ref("TokenInput")),
        "put": op("Update a token (fields left out are kept); ?status_only=1 toggles status",
                  U, ref("Token"), body=ref("TokenUpdate"),
                  params=[q("status_only", STR, "any non-empty value: write only status")]),
    },
    "/api/token/search": {
        "get": op("Search the caller's tokens", U, paged("Token"), params=[
            *PAGE_PARAMS,
            q("keyword", {"type": "string", "maxLength": 100},
              "name prefix, or LIKE pattern with %"),
            q("token", {"type": "string", "maxLength": 200}, "a full key (sk- optional)"),
        ]),
    },
    "/api/token/batch": {
        "post": op("Delete several of the caller's tokens; data = number deleted", U, INT,
                   body=obj({"ids": {"type": "array", "items": {"type": "integer", "minimum": 1},
                                     "minItems": 1, "maxItems": 100}}, ["ids"])),
    },
    "/api/token/{id}": {
        "get": op("One token, with its recent activity", U, ref("TokenDetail"),
                  params=[ID_PARAM]),
        "delete": op("Delete a token", U, None, params=[ID_PARAM]),
    },
    "/api/token/{id}/key": {
        "post": op("Always refused: keys are stored hashed and shown only at creation", U,
                   None, params=[ID_PARAM]),
    },
    "/api/usage/token/": {
        "get": op("Balance of the presented sk- key", K,
                  ok_schema={"anyOf": [ref("TokenUsage"), ref("Fail")]}),
    },
    "/api/log/token": {
        "get": op("Last 1000 log rows of the presented sk- key", K,
                  {"type": "array", "items": ref("Log")}),
    },
    "/api/user/self": {"get": op("The caller's account; quota = live remain", U, ref("User"))},
    "/api/user/token": {
        "get": op("Generate a new access token for the caller (the old one stops working)", U,
                  STR),
    },
    "/api/user/": {
        "get": op("List users", A, paged("User"), params=PAGE_PARAMS),
        "post": op("Create a user; data.access_token is shown once", A, ref("UserCreated"),
                   body=ref("UserInput")),
        "put": op("Update a user (quota = set remain)", A, ref("User"), body=ref("UserUpdate")),
    },
    "/api/user/search": {
        "get": op("Search users", A, paged("User"), params=[
            *PAGE_PARAMS,
            q("keyword", {"type": "string", "maxLength": 100}),
            q("group", {"type": "string", "maxLength": 64}),
            q("role", {"type": "integer", "minimum": 0, "maximum": 100}),
            q("status", {"type": "integer", "minimum": 0, "maximum": 100}),
        ]),
    },
    "/api/user/manage": {
        "post": op("disable / enable / delete / promote / demote / add_quota (add, subtract, "
                   "override = set remain)", A, ref("User"), body=ref("UserManage")),
    },
    "/api/user/{id}": {
        "get": op("One user", A, ref("User"), params=[ID_PARAM]),
        "delete": op("Delete a user", A, None, params=[ID_PARAM]),
    },
    "/api/channel/": {
        "get": op("List channels (keys never returned)", A,
                  paged("Channel", type_counts={"type": "object",
                                                "additionalProperties": INT}),
                  params=[*PAGE_PARAMS,
                          q("status", {"type": "integer", "minimum": 0, "maximum": 3}),
                          q("type", {"type": "integer", "minimum": 0, "maximum": 1000}),
                          q("group", {"type": "string", "maxLength": 64})]),
        "post": op("Create a channel ({mode, channel} or the channel itself)", A,
                   {"anyOf": [ref("Channel"), obj({"ids": {"type": "array", "items": INT}})]},
                   body=ref("ChannelCreate")),
        "put": op("Update a channel (an empty key keeps the stored one); ?status_only=1", A,
                  ref("Channel"), body=ref("ChannelUpdate"),
                  params=[q("status_only", STR)]),
    },
    "/api/channel/search": {
        "get": op("Search channels", A, paged("Channel", type_counts={"type": "object"}),
                  params=[*PAGE_PARAMS,
                          q("keyword", {"type": "string", "maxLength": 100}),
                          q("group", {"type": "string", "maxLength": 64}),
                          q("model", {"type": "string", "maxLength": 255}),
                          q("status", {"type": "integer", "minimum": 0, "maximum": 3})]),
    },
    "/api/channel/test/{id}": {
        "get": op("Send one small chat request through the channel", A,
                  obj({"time": NUM, "model": STR, "status_code": INT}),
                  params=[ID_PARAM, q("model", {"type": "string", "maxLength": 255})],
                  ok_schema={"anyOf": [
                      success(obj({"time": NUM, "model": STR, "status_code": INT})),
                      ref("Fail"),
                  ]},
                  description="`time` (seconds, float) is also given beside the envelope."),
    },
    "/api/channel/{id}": {
        "get": op("One channel (no key)", A, ref("Channel"), params=[ID_PARAM]),
        "delete": op("Delete a channel", A, None, params=[ID_PARAM]),
    },
    "/api/channel/{id}/status": {
        "post": op("Enable (1) or disable (2) a channel", A, ref("Channel"), params=[ID_PARAM],
                   body=obj({"status": {"type": "integer", "enum": [1, 2, 3]}}, ["status"])),
    },
    "/api/log/": {
        "get": op("All usage logs", A, paged("Log"), params=ADMIN_LOG_FILTERS),
    },
    "/api/log/self": {
        "get": op("The caller's usage logs (ids are ordinals)", U, paged("Log"),
                  params=LOG_FILTERS),
    },
    "/api/log/stat": {
        "get": op("Sum of quota (filters) and last-minute rpm/tpm, all users", A,
                  ref("LogStat"), params=ADMIN_LOG_FILTERS),
    },
    "/api/log/self/stat": {
        "get": op("Sum of quota and last-minute rpm/tpm of the caller", U, ref("LogStat"),
                  params=LOG_FILTERS),
    },
    "/v1/dashboard/billing/subscription": {
        "get": op("OpenAI-legacy: total granted (USD) of the presented sk- key", K,
                  ok_schema=ref("BillingSubscription"), openai_errors=True),
    },
    "/v1/dashboard/billing/usage": {
        "get": op("OpenAI-legacy: total used (US cents) of the presented sk- key", K,
                  ok_schema=ref("BillingUsage"), openai_errors=True),
    },
    "/dashboard/billing/subscription": {
        "get": op("Same as /v1/dashboard/billing/subscription", K,
                  ok_schema=ref("BillingSubscription"), openai_errors=True),
    },
    "/dashboard/billing/usage": {
        "get": op("Same as /v1/dashboard/billing/usage", K,
                  ok_schema=ref("BillingUsage"), openai_errors=True),
    },
}  # fmt: skip

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "relaygate management API (New API-compatible)",
        "version": "1",
        "description": (
            "Envelope {success, message, data}; business errors are HTTP 200 with "
            "success:false. Authenticate with 'Authorization: Bearer <access token>' plus "
            "'New-Api-User: <your user id>'. Quota units: 500000 = $1; 1 credit = 2500."
        ),
    },
    "paths": PATHS,
    "components": {
        "schemas": SCHEMAS,
        "securitySchemes": {
            "accessToken": {"type": "http", "scheme": "bearer",
                            "description": "system access token (GET /api/user/token)"},
            "newApiUser": {"type": "apiKey", "in": "header", "name": "New-Api-User",
                           "description": "the numeric id of the access token's owner"},
            "skKey": {"type": "http", "scheme": "bearer", "description": "an sk- token key"},
        },
    },
}  # fmt: skip


@routes.route("GET", "/api/openapi.json", Level.PUBLIC)
async def openapi_document(ctx: Ctx) -> web.StreamResponse:
    return raw_json(DOCUMENT)
