"""CORS (issue 12 item 6): relay routes answer a browser's preflight and carry the
Access-Control-* headers (any origin by default, as New API); /api/ only for the origins
configured in RELAYGATE_API_CORS_ORIGINS, with credentials."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from relaygate.app import init_app
from relaygate.config import Settings
from tests.prodserver import ProductionServer

from .helpers import CHAT, bearer, flush_all, hook_world

APP = "https://app.example"
PREFLIGHT = {
    "Origin": APP,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization,content-type",
}


async def _client(settings: Settings) -> TestClient:  # type: ignore[type-arg]
    client = TestClient(ProductionServer(init_app(settings), host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def console_relay(settings: Settings) -> AsyncIterator[Any]:
    """A relay whose relay routes allow APP only and whose /api/ allows APP."""
    client = await _client(settings.replace(cors_origins=(APP,), api_cors_origins=(APP,)))
    yield client
    await client.close()


async def test_preflight_to_chat_completions_succeeds(relay):
    resp = await relay.options("/v1/chat/completions", headers=PREFLIGHT)
    assert resp.status == 204
    h = resp.headers
    assert h["Access-Control-Allow-Origin"] == "*"
    assert "POST" in h["Access-Control-Allow-Methods"]
    assert h["Access-Control-Allow-Headers"] == "authorization,content-type"
    assert int(h["Access-Control-Max-Age"]) > 0
    assert "Access-Control-Allow-Credentials" not in h  # keys, never cookies, on relay routes


@pytest.mark.parametrize(
    "path", ["/v1/responses", "/v1/messages", "/v1beta/models/gemini-2.0-flash:generateContent"]
)
async def test_preflight_on_every_relay_family(relay, path):
    resp = await relay.options(path, headers=PREFLIGHT)
    assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_answers_and_streams_carry_the_headers(env, relay, mock_upstream):
    _, tok = await hook_world(env, relay, mock_upstream)
    headers = {**bearer(f"sk-{tok.key}"), "Origin": APP}
    resp = await relay.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Oneapi-Request-Id" in resp.headers["Access-Control-Expose-Headers"]
    resp = await relay.post("/v1/chat/completions", json={**CHAT, "stream": True}, headers=headers)
    assert resp.status == 200 and resp.headers["Access-Control-Allow-Origin"] == "*"
    await resp.read()
    refused = await relay.post("/v1/chat/completions", json=CHAT, headers={"Origin": APP})
    assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == "*"
    assert await flush_all(env) == 2


async def test_api_gets_no_cors_by_default(relay):
    resp = await relay.options(
        "/api/status", headers={**PREFLIGHT, "Access-Control-Request-Method": "GET"}
    )
    assert resp.status == 403
    assert (await resp.json())["success"] is False
    assert "Access-Control-Allow-Origin" not in resp.headers
    resp = await relay.get("/api/status", headers={"Origin": APP})
    assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers


async def test_api_allows_configured_origins_with_credentials(console_relay):
    pre = {**PREFLIGHT, "Access-Control-Request-Method": "PUT"}
    resp = await console_relay.options("/api/token/", headers=pre)
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert "PUT" in resp.headers["Access-Control-Allow-Methods"]
    resp = await console_relay.get("/api/status", headers={"Origin": APP})
    assert resp.headers["Access-Control-Allow-Origin"] == APP
    assert "Origin" in resp.headers.getall("Vary")
    other = await console_relay.options(
        "/api/status", headers={**pre, "Origin": "https://evil.example"}
    )
    assert other.status == 403 and "Access-Control-Allow-Origin" not in other.headers


async def test_relay_origins_restricted_by_setting(console_relay):
    resp = await console_relay.options("/v1/chat/completions", headers=PREFLIGHT)
    assert resp.status == 204 and resp.headers["Access-Control-Allow-Origin"] == APP
    evil = {**PREFLIGHT, "Origin": "https://evil.example"}
    resp = await console_relay.options("/v1/chat/completions", headers=evil)
    assert resp.status == 403
    assert (await resp.json())["error"]["code"] == "cors_refused"


async def test_bad_request_headers_are_refused_not_echoed(relay):
    bad = {**PREFLIGHT, "Access-Control-Request-Headers": "authorization,\r\nx-evil: 1"}
    resp = await relay.options(
        "/v1/chat/completions", headers={k: v.replace("\r\n", " ") for k, v in bad.items()}
    )
    assert resp.status == 403


async def test_health_routes_have_no_cors(relay):
    resp = await relay.get("/healthz", headers={"Origin": APP})
    assert "Access-Control-Allow-Origin" not in resp.headers


async def test_plain_options_is_not_a_preflight(relay):
    resp = await relay.options("/v1/chat/completions")
    assert resp.status == 204 and "Access-Control-Allow-Origin" not in resp.headers
    assert "POST" in resp.headers["Allow"]
