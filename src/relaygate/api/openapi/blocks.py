"""The shared pieces of the OpenAPI document: scalar types, the New API envelope, paging
and filter parameters, named once."""

from __future__ import annotations

from typing import Any

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
    {
        "name": "page_size",
        "in": "query",
        "schema": {"type": "integer"},
        "description": "default 10, at most 100 (fallbacks: ps, size)",
    },
]


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
    "expired_time": {
        "type": "integer",
        "minimum": -1,
        "maximum": 253402300799,
        "description": "unix seconds; -1 = never",
    },
    "model_limits_enabled": BOOL,
    "models": {"type": "array", "items": {"type": "string", "maxLength": 255}, "maxItems": 100},
    "model_limits": {"type": "string", "maxLength": 5000, "description": "comma-separated"},
    "allow_ips": {
        "type": ["string", "null"],
        "maxLength": 2000,
        "description": "IPs/CIDRs, newline- or comma-separated",
    },
    "group": {"type": "string", "maxLength": 64},
    "remain_credits": CREDITS,
    "daily_credits": CREDITS,
    "monthly_credits": CREDITS,
    "daily_quota": QUOTA,
    "monthly_quota": QUOTA,
}
