"""``components.schemas`` of the OpenAPI document."""

from __future__ import annotations

from relaygate.api.openapi.blocks import (
    BOOL,
    INT,
    NUM,
    QUOTA,
    STR,
    TOKEN_INPUT_PROPS,
    Schema,
    obj,
    ref,
)

SCHEMAS: dict[str, Schema] = {
    "Fail": obj({"success": {"const": False}, "message": STR}, ["success", "message"]),
    "Token": obj(
        {
            "id": INT,
            "user_id": INT,
            "key": {"type": "string", "description": "masked (abcd**********wxyz)"},
            "status": {
                "type": "integer",
                "enum": [1, 2, 3, 4],
                "description": "1 enabled, 2 disabled, 3 expired, 4 exhausted",
            },
            "name": STR,
            "created_time": INT,
            "accessed_time": INT,
            "expired_time": INT,
            "remain_quota": INT,
            "unlimited_quota": BOOL,
            "model_limits_enabled": BOOL,
            "model_limits": STR,
            "models": {"type": "array", "items": STR},
            "allow_ips": STR,
            "used_quota": INT,
            "group": STR,
            "daily_quota": INT,
            "monthly_quota": INT,
            "cross_group_retry": BOOL,
            "auto_groups": {"type": "null"},
        },
        [
            "id",
            "user_id",
            "key",
            "status",
            "name",
            "created_time",
            "accessed_time",
            "expired_time",
            "remain_quota",
            "unlimited_quota",
            "model_limits_enabled",
            "model_limits",
            "allow_ips",
            "used_quota",
            "group",
            "daily_quota",
            "monthly_quota",
        ],
    ),
    "TokenDetail": {
        "allOf": [
            ref("Token"),
            obj({"recent_activity": {"type": "array", "items": ref("Log")}}, ["recent_activity"]),
        ]
    },
    "TokenSpend": {
        "allOf": [
            ref("Token"),
            obj(
                {
                    "username": {"type": "string"},
                    "requests": {"type": "integer", "minimum": 0},
                    "spent": {"type": "integer", "description": "quota consumed in the window"},
                    "spend_per_minute": {"type": "number"},
                },
                ["username", "requests", "spent", "spend_per_minute"],
            ),
        ]
    },
    "TokenCreated": {
        "allOf": [
            ref("Token"),
            obj(
                {
                    "key": {
                        "type": "string",
                        "pattern": "^[0-9A-Za-z]{48}$",
                        "description": "the full key, shown only here",
                    }
                },
                ["key"],
            ),
        ]
    },
    "TokenInput": obj(TOKEN_INPUT_PROPS, ["name"]),
    "TokenUpdate": obj(
        {
            "id": {"type": "integer", "minimum": 1},
            "status": {"type": "integer", "enum": [1, 2, 3, 4]},
            **TOKEN_INPUT_PROPS,
        },
        ["id"],
    ),
    "User": obj(
        {
            "id": INT,
            "username": STR,
            "display_name": STR,
            "role": INT,
            "status": INT,
            "email": STR,
            "group": STR,
            "quota": {"type": "integer", "description": "live remain"},
            "used_quota": INT,
            "request_count": INT,
            "remark": STR,
            "created_at": INT,
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
            "id": INT,
            "type": INT,
            "name": STR,
            "base_url": STR,
            "models": STR,
            "group": STR,
            "priority": INT,
            "weight": INT,
            "status": INT,
            "model_mapping": STR,
            "test_model": STR,
            "created_time": INT,
            "test_time": INT,
            "response_time": INT,
            "used_quota": INT,
            "other": STR,
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
            "other": {
                "type": "string",
                "maxLength": 1000,
                "description": "Azure OpenAI (type 3): the api-version (default 2024-10-21)",
            },
        }
    ),
    "ChannelCreate": {
        "anyOf": [
            obj(
                {"mode": {"enum": ["single", "batch"]}, "channel": ref("ChannelFields")},
                ["channel"],
            ),
            ref("ChannelFields"),
        ]
    },
    "ChannelUpdate": {
        "allOf": [ref("ChannelFields"), obj({"id": {"type": "integer", "minimum": 1}}, ["id"])]
    },
    "Log": obj(
        {
            "id": INT,
            "user_id": INT,
            "created_at": INT,
            "type": INT,
            "content": STR,
            "username": STR,
            "token_name": STR,
            "token_id": INT,
            "model_name": STR,
            "quota": INT,
            "prompt_tokens": INT,
            "completion_tokens": INT,
            "use_time": {"type": "integer", "description": "seconds"},
            "use_time_ms": INT,
            "is_stream": BOOL,
            "channel": {"type": "integer", "description": "channel id"},
            "channel_name": STR,
            "group": STR,
            "ip": STR,
            "request_id": STR,
            "other": STR,
        },
        [
            "id",
            "created_at",
            "type",
            "token_name",
            "model_name",
            "quota",
            "prompt_tokens",
            "completion_tokens",
            "use_time",
            "is_stream",
            "channel",
        ],
    ),
    "LogStat": obj({"quota": INT, "rpm": INT, "tpm": INT}, ["quota", "rpm", "tpm"]),
    "TokenUsage": obj(
        {
            "code": {"const": True},
            "message": STR,
            "data": obj(
                {
                    "object": {"const": "token_usage"},
                    "name": STR,
                    "total_granted": INT,
                    "total_used": INT,
                    "total_available": INT,
                    "unlimited_quota": BOOL,
                    "model_limits": {"type": "object", "additionalProperties": BOOL},
                    "model_limits_enabled": BOOL,
                    "expires_at": INT,
                },
                ["object", "name", "total_granted", "total_used", "total_available"],
            ),
        },
        ["code", "message", "data"],
    ),
    "OpenAIError": obj(
        {"error": obj({"message": STR, "type": STR, "code": STR}, ["message", "type"])},
        ["error"],
    ),
    "BillingSubscription": obj(
        {
            "object": {"const": "billing_subscription"},
            "has_payment_method": BOOL,
            "soft_limit_usd": NUM,
            "hard_limit_usd": NUM,
            "system_hard_limit_usd": NUM,
            "access_until": INT,
        },
        ["object", "hard_limit_usd", "access_until"],
    ),
    "BillingUsage": obj(
        {"object": {"const": "list"}, "total_usage": {"type": "number", "description": "US cents"}},
        ["object", "total_usage"],
    ),
    "LoginData": obj(
        {
            "id": INT,
            "username": STR,
            "display_name": STR,
            "role": INT,
            "status": INT,
            "group": STR,
        },
        ["id", "username", "display_name", "role", "status", "group"],
    ),
    "Status": obj(
        {
            "version": STR,
            "start_time": INT,
            "system_name": STR,
            "quota_per_unit": {"const": 500000},
            "display_in_currency": BOOL,
        },
        ["version", "start_time", "quota_per_unit"],
    ),
}
