"""Done-when 5: property tests against ``/api/openapi.json`` (hypothesis).

For every documented operation: bodies and parameters drawn from the document's own schemas
(valid input), and arbitrary JSON, strings and numbers (malformed input). Every answer must
be below 500 and match the response schema the document gives for its status code, and a
refusal must be New API's ``success: false`` with a message. Requests go as root, so every
handler runs past authentication. ``/api/channel/test/{id}`` is left out: a drawn channel
could point anywhere, and this test must send traffic to this machine only.
"""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote

import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relaygate.admin import ROLE_ROOT, ROLE_USER

from .api_fixtures import make_user
from .helpers import bearer

VALID_EXAMPLES = 12
MALFORMED_EXAMPLES = 8
SKIP = {("get", "/api/channel/test/{id}")}

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
WEIRD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "-1",
            "0",
            "1e9",
            "99999999999999999999999",
            "%",
            "%%",
            "a%b%c%",
            "null",
            "\u00e9\u00e9",
            "' OR 1=1 --",
            "1.5",
            " ",
            "\x00",
        ]
    ),
)


def inline(schema: Any, doc: dict[str, Any]) -> Any:
    """The schema with every local ``$ref`` replaced by its target (no cycles here)."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            target: Any = doc
            for part in schema["$ref"].lstrip("#/").split("/"):
                target = target[part]
            return inline(copy.deepcopy(target), doc)
        return {k: inline(v, doc) for k, v in schema.items()}
    if isinstance(schema, list):
        return [inline(v, doc) for v in schema]
    return schema


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid for the JSON Schema subset the document uses (hypothesis-jsonschema does
    not work with current hypothesis releases; this covers what we need)."""
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "anyOf" in schema:
        return st.one_of([from_schema(s) for s in schema["anyOf"]])
    if "allOf" in schema:
        merged: dict[str, Any] = {"type": "object", "properties": {}, "required": []}
        for part in schema["allOf"]:
            merged["properties"].update(part.get("properties", {}))
            merged["required"] += part.get("required", [])
        return from_schema(merged)
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        if schema.get("minimum") == 1 and "maximum" not in schema:  # ids: mostly existing ones
            return st.integers(1, 12) | st.integers(1, 2**62)
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False)
    if kind == "string":
        if "pattern" in schema:
            return st.from_regex(schema["pattern"]).filter(
                lambda v: len(v) <= schema.get("maxLength", 10**6)
            )
        return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 60))
    if kind == "array":
        return st.lists(
            from_schema(schema.get("items", {"type": "string"})),
            min_size=schema.get("minItems", 0),
            max_size=min(schema.get("maxItems", 5), 5),
        )
    props = schema.get("properties", {})
    required = set(schema.get("required", []))
    return st.fixed_dictionaries(
        {k: from_schema(v) for k, v in props.items() if k in required},
        optional={k: from_schema(v) for k, v in props.items() if k not in required},
    )


def draw(strategy: st.SearchStrategy[Any], n: int) -> list[Any]:
    """n examples of a strategy, drawn with hypothesis' engine (not ``.example()``)."""
    out: list[Any] = []

    @settings(
        max_examples=n,
        database=None,
        deadline=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(value: Any) -> None:
        out.append(value)

    collect()
    return out[:n]


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    ops = []
    for path, methods in doc["paths"].items():
        for method, op in methods.items():
            if (method, path) not in SKIP:
                ops.append((method, path, inline(op, doc)))
    return ops


def request_strategy(op: dict[str, Any], valid: bool) -> st.SearchStrategy[Any]:
    params = op.get("parameters", [])
    path_params = {p["name"]: p for p in params if p["in"] == "path"}
    query_params = [p for p in params if p["in"] == "query"]
    scalar = from_schema if valid else (lambda _s: WEIRD_TEXT)
    # a path value must stay one segment, or the request would reach another route
    segment = from_schema if valid else (lambda _s: WEIRD_TEXT.filter(_one_segment))
    path = st.fixed_dictionaries({n: segment(p["schema"]) for n, p in path_params.items()})
    query = st.fixed_dictionaries(
        {}, optional={p["name"]: scalar(p["schema"]) for p in query_params}
    )
    body: st.SearchStrategy[Any] = st.none()
    if "requestBody" in op:
        schema = op["requestBody"]["content"]["application/json"]["schema"]
        body = from_schema(schema) if valid else JSON_VALUES
    return st.tuples(path, query, body)


def _one_segment(value: str) -> bool:
    return bool(value.strip()) and "/" not in value and value not in (".", "..")


def as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


async def test_openapi_property_no_5xx_and_responses_conform(env, relay):
    doc = await (await relay.get("/api/openapi.json")).json()
    root = await make_user(env, "root", ROLE_ROOT)
    await make_user(env, "someone", ROLE_USER)
    headers = root.headers()
    checked = 0
    accepted: dict[str, int] = {}
    for method, path, op in operations(doc):
        examples = [(True, e) for e in draw(request_strategy(op, True), VALID_EXAMPLES)]
        examples += [(False, e) for e in draw(request_strategy(op, False), MALFORMED_EXAMPLES)]
        for valid, (path_values, query, body) in examples:
            url = path
            for name, value in path_values.items():
                url = url.replace("{" + name + "}", quote(as_text(value), safe=""))
            sent_headers = headers
            if op.get("x-permission") == "Key":  # a fresh key: the fuzz may delete tokens
                token = await env.admin.create_token(root.id, "fuzz", remain_quota=1000)
                sent_headers = bearer(f"sk-{token.key}")
            kwargs: dict[str, Any] = {
                "params": {k: as_text(v) for k, v in query.items()},
                "headers": sent_headers,
            }
            if "requestBody" in op:
                kwargs["json"] = body
            resp = await relay.request(method.upper(), url, **kwargs)
            context = (method, url, kwargs.get("params"), body, resp.status)
            assert resp.status < 500, (context, await resp.text())
            data = await resp.json()
            documented = op["responses"].get(str(resp.status))
            assert documented is not None, (context, data)
            schema = documented["content"]["application/json"]["schema"]
            try:
                jsonschema.validate(data, schema)
            except jsonschema.ValidationError as exc:
                raise AssertionError((context, data, exc.message)) from None
            if isinstance(data, dict) and data.get("success") is False:
                assert data["message"] and "Traceback" not in data["message"], context
            if not valid and "requestBody" in op and not isinstance(body, dict):
                assert data.get("success") is False or data.get("code") is True, (context, data)
            if path == "/api/user/token" and data.get("success"):
                root.access = data["data"]  # the fuzz rotated root's access token
                headers = root.headers()
            if isinstance(data, dict) and (data.get("success") or data.get("code") is True):
                accepted[f"{method} {path}"] = accepted.get(f"{method} {path}", 0) + 1
            checked += 1
    assert checked > 500
    print("accepted per operation:", sorted(accepted.items()))
