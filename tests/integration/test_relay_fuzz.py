"""Issue 10: hostile input on every relay route, against the real app, Redis and
PostgreSQL: bodies of any JSON shape or none, odd types where numbers go, strange model
names and paths, odd keys and headers. Every answer is below 500, or a 502/503 with an
error body in the route's dialect; never a crash. RELAYGATE_FUZZ_EXAMPLES scales it
(``make fuzz``)."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

from hypothesis import strategies as st

from .helpers import refresh
from .test_api_fuzz import JSON_VALUES, WEIRD_TEXT, draw

EXAMPLES = max(40, int(os.environ.get("RELAYGATE_FUZZ_EXAMPLES", "150")) // 2)
ROUTES = [
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/images/generations",
    "/v1/messages",
]
MODELS = (
    st.sampled_from(["gpt-4o-mini", "dall-e-3", "claude-3-5-haiku-20241022", "nope"]) | WEIRD_TEXT
)
NUMBERISH = st.one_of(
    JSON_VALUES, st.integers(-(2**70), 2**70), st.sampled_from([0, -1, 2**31, 1e308])
)
BODY = st.one_of(
    JSON_VALUES,
    st.fixed_dictionaries(
        {"model": MODELS},
        optional={
            "messages": JSON_VALUES | st.just([{"role": "user", "content": "hi"}]),
            "prompt": JSON_VALUES,
            "input": JSON_VALUES,
            "max_tokens": NUMBERISH,
            "max_completion_tokens": NUMBERISH,
            "n": NUMBERISH,
            "stream": JSON_VALUES,
            "stream_options": JSON_VALUES,
            "generationConfig": JSON_VALUES
            | st.fixed_dictionaries(
                {}, optional={"candidateCount": NUMBERISH, "maxOutputTokens": NUMBERISH}
            ),
        },
    ),
)
REQUEST = st.fixed_dictionaries(
    {
        "route": st.sampled_from(ROUTES) | st.just("gemini"),
        "body": BODY,
        "raw": st.none() | st.binary(max_size=60),
        "auth": st.sampled_from(
            ["good", "good", "good", "none", "junk", "x-api-key", "goog", "query"]
        ),
        "target": MODELS.map(lambda m: quote(m, safe=""))
        | st.just("gemini-2.0-flash:generateContent"),
        "xff": st.none() | WEIRD_TEXT,
        "ctype": st.sampled_from(
            ["application/json", "text/plain", "", "application/json; charset=latin-1"]
        ),
    }
)


async def test_relay_routes_never_answer_5xx_on_hostile_input(
    env: Any, relay: Any, mock_upstream: str
) -> None:
    uid, _ = await env.root_user()
    await env.admin.create_channel(
        "mock",
        mock_upstream,
        "k",
        "gpt-4o-mini,dall-e-3,claude-3-5-haiku-20241022,gemini-2.0-flash,text-embedding-3-small",
    )
    await refresh(relay)
    tok = await env.admin.create_token(uid, "fuzz", remain_quota=10**9)
    failures: list[str] = []
    for case in draw(REQUEST, EXAMPLES):
        path = case["route"]
        if path == "gemini":
            path = f"/v1beta/models/{case['target']}"
        headers = {"Content-Type": case["ctype"]} if case["ctype"] else {}
        params: dict[str, str] = {}
        auth = case["auth"]
        if auth == "good":
            headers["Authorization"] = f"Bearer sk-{tok.key}"
        elif auth == "junk":
            headers["Authorization"] = "Bearer " + quote(str(case["target"]))[:100]
        elif auth == "x-api-key":
            headers["x-api-key"] = tok.key
        elif auth == "goog":
            headers["x-goog-api-key"] = tok.key
        elif auth == "query":
            params["key"] = tok.key
        if case["xff"] is not None:
            headers["X-Forwarded-For"] = quote(case["xff"], safe=" ,:[].")
        data = case["raw"] if case["raw"] is not None else json.dumps(case["body"]).encode()
        resp = await relay.post(path, data=data, headers=headers, params=params)
        body = await resp.read()
        if resp.status >= 500 and (
            resp.status not in (502, 503) or not body.startswith(b"{") or b"error" not in body
        ):
            failures.append(f"{resp.status} {path} {case!r}: {body[:200]!r}")
    models = await relay.get("/v1/models", headers={"Authorization": "Bearer \u00e9\u00e9"})
    assert models.status == 401
    assert not failures, "\n".join(failures[:5])
