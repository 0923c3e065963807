"""Upstreams (issue 10 items 3 and 8; red-team #7 and #23): channel keys never reach clients
through upstream errors, channel base_urls cannot aim the relay at loopback, link-local or
cloud metadata addresses (at write time nor at connect time), upstream TLS is verified, and
a base_url ending in /v1 is normalized."""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestClient, TestServer

from relaygate.admin import ROLE_ADMIN, AdminError
from relaygate.app import init_app
from relaygate.redact import MASK
from relaygate.upstreams import AddressRefused, guarded_socket_factory

from .api_fixtures import Api, make_user
from .helpers import CHAT, bearer, ledger, refresh

KEY = "sk-EVIL-CHANNEL-SECRET-abcdef123456"
CLAUDE = "claude-echo"
GEMINI = "gemini-echo"
USAGE = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}


def _presented(request: web.Request) -> str:
    """The credential the relay presented, as an upstream that echoes it would print it."""
    return (
        request.headers.get("Authorization")
        or request.headers.get("x-api-key")
        or request.headers.get("x-goog-api-key")
        or ""
    )


class Echo:
    """An upstream that records every call and, by model name, refuses the key while
    echoing it: ``*-401``, ``*-403``, ``*-400`` (echo plus masked forms, in the body and in
    a header); anything else answers a chat completion with usage."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.path)
        body = await request.json()
        model = body.get("model") or request.path.rsplit("/", 1)[-1].partition(":")[0]
        shown = _presented(request)
        for status in (401, 403, 400):
            if model.endswith(f"-{status}"):
                message = f"Incorrect API key provided: {shown}."
                if status == 400:
                    message += f" Also known as {KEY[:6]}...{KEY[-4:]} or {KEY[:8]}****{KEY[-4:]}."
                answer = {"error": {"message": message, "type": "invalid_request_error"}}
                content_type = f"application/json; echo={shown.split()[-1]}"
                return web.Response(
                    status=status,
                    body=orjson.dumps(answer),
                    headers={"Content-Type": content_type, "X-Echo": shown},
                )
        return web.json_response(
            {
                "id": "x",
                "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
                "usage": USAGE,
            }
        )


@pytest.fixture
def settings(settings):
    """These tests call the same echo channels for refusal after refusal: automatic
    disabling (issue 15, tests/integration/test_channel_health.py) would take them away."""
    return settings.replace(auto_disable_channels=False)


@pytest.fixture
async def echo() -> AsyncIterator[tuple[Echo, str]]:
    upstream = Echo()
    app = web.Application()
    app.router.add_post("/{tail:.*}", upstream.handle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    yield upstream, str(server.make_url("")).rstrip("/")
    await server.close()


@pytest.fixture
async def make_relay(settings) -> AsyncIterator[Callable[..., Any]]:
    """In-process relays built with changed settings (the ``relay`` fixture's own stay)."""
    clients: list[TestClient] = []  # type: ignore[type-arg]

    async def make(**changes: Any) -> TestClient:  # type: ignore[type-arg]
        client = TestClient(TestServer(init_app(settings.replace(**changes)), host="127.0.0.1"))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


async def _world(env, relay, base_url: str) -> tuple[int, Any]:
    uid, _ = await env.root_user()
    models = "gpt-4o-mini,echo-401,echo-403,echo-400"
    await env.admin.create_channel("echo", base_url, KEY, models)
    await env.admin.create_channel("claude", base_url, KEY, f"{CLAUDE}-401", type_=14)
    await env.admin.create_channel("gemini", base_url, KEY, f"{GEMINI}-403", type_=24)
    prices = {m: 1 for m in ("echo-401", "echo-403", "echo-400", f"{CLAUDE}-401", f"{GEMINI}-403")}
    await env.admin.set_option("ModelRatio", orjson.dumps(prices).decode())
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**7)
    return uid, tok


def _no_secret(text: str) -> None:
    for part in (KEY, KEY[3:], KEY[:12], KEY[-12:], "EVIL-CHANNEL"):
        assert part not in text, f"{part!r} leaked: {text}"


# --- item 1: upstream errors never carry the channel key ---------------------------------


async def test_upstream_401_403_become_a_gateway_error_in_every_dialect(env, relay, echo):
    upstream, base = echo
    uid, tok = await _world(env, relay, base)
    for model in ("echo-401", "echo-403"):
        resp = await relay.post(
            "/v1/chat/completions", json={**CHAT, "model": model}, headers=bearer(f"sk-{tok.key}")
        )
        text = await resp.text()
        _no_secret(text + str(dict(resp.headers)))
        assert resp.status == 502, text
        err = orjson.loads(text)["error"]
        assert err["code"] == "upstream_auth_failed" and err["type"] == "upstream_error"
        assert err["message"].startswith("upstream channel authentication failed")
        assert resp.headers["X-Oneapi-Request-Id"]

    claude = {"model": f"{CLAUDE}-401", "max_tokens": 5, "messages": [CHAT["messages"][0]]}
    resp = await relay.post("/v1/messages", json=claude, headers={"x-api-key": f"sk-{tok.key}"})
    text = await resp.text()
    _no_secret(text + str(dict(resp.headers)))
    body = orjson.loads(text)
    assert resp.status == 502 and body["type"] == "error", body
    assert body["error"]["code"] == "upstream_auth_failed"

    gen = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    resp = await relay.post(
        f"/v1beta/models/{GEMINI}-403:generateContent",
        json=gen,
        headers={"x-goog-api-key": tok.key},
    )
    text = await resp.text()
    _no_secret(text + str(dict(resp.headers)))
    body = orjson.loads(text)
    assert resp.status == 502 and body["error"]["status"] == "UNAVAILABLE", body
    assert body["error"]["code"] == 502

    assert len(upstream.paths) == 4  # every one reached the upstream, and cost nothing
    assert await ledger(env, uid, tok.id) == (10**7, 0)
    assert await env.redis.zcard(env.keys.reservations(uid)) == 0


async def test_other_upstream_errors_pass_through_redacted_and_free(env, relay, echo):
    _, base = echo
    uid, tok = await _world(env, relay, base)
    for stream in (False, True):
        body = {**CHAT, "model": "echo-400", "stream": stream}
        resp = await relay.post("/v1/chat/completions", json=body, headers=bearer(f"sk-{tok.key}"))
        text = await resp.text()
        assert resp.status == 400, text
        _no_secret(text + str(dict(resp.headers)))
        message = orjson.loads(text)["error"]["message"]  # still the upstream's JSON
        assert message.startswith(f"Incorrect API key provided: Bearer {MASK}.")
        assert "Also known as" in message and message.count(MASK) == 3
        assert resp.headers["Content-Type"] == f"application/json; echo={MASK}"
        assert "X-Echo" not in resp.headers
    assert await ledger(env, uid, tok.id) == (10**7, 0)


# --- item 2: SSRF guard at write time ------------------------------------------------------

REFUSED_ALWAYS = (
    "http://169.254.169.254",
    "http://169.254.169.254/latest/meta-data",
    "http://169.254.10.1:8080",
    "http://[fe80::1]",
    "http://[fd00:ec2::254]",
    "http://[::ffff:169.254.169.254]",
    "http://metadata.google.internal",
    "http://METADATA.google.internal./computeMetadata/v1",
    "http://0.0.0.0:8080",
    "http://[::]",
    "http://100.100.100.200",
    "http://2130706433",
    "http://user:pw@api.example.com",
)
LOOPBACK = (
    "http://127.0.0.1:8080",
    "http://127.9.9.9",
    "http://[::1]:80",
    "http://[::ffff:127.0.0.1]",
    "http://localhost:11434",
    "http://foo.localhost",
)
ALLOWED = (
    "http://10.0.0.5:8000",
    "http://192.168.1.20",
    "http://172.16.0.1",
    "https://api.example.com",
)


async def test_api_refuses_metadata_link_local_and_loopback(env, make_relay):
    relay = await make_relay(allow_loopback_upstreams=False)
    api = Api(relay, await make_user(env, "ops", ROLE_ADMIN))

    def channel(base_url: str) -> dict[str, Any]:
        return {
            "mode": "single",
            "channel": {
                "name": "c",
                "key": "k" * 20,
                "base_url": base_url,
                "models": "gpt-4o-mini",
            },
        }

    for url in REFUSED_ALWAYS + LOOPBACK:
        message = await api.refused("POST", "/api/channel/", channel(url))
        assert "base_url" in message, (url, message)
    assert "RELAYGATE_ALLOW_LOOPBACK_UPSTREAMS" in await api.refused(
        "POST", "/api/channel/", channel("http://127.0.0.1:1")
    )
    ids = [(await api.ok("POST", "/api/channel/", channel(url)))["id"] for url in ALLOWED]
    for url in REFUSED_ALWAYS + LOOPBACK:
        await api.refused("PUT", "/api/channel/", {"id": ids[0], "base_url": url})
    stored = await api.ok("GET", f"/api/channel/{ids[0]}")
    assert stored["base_url"] == ALLOWED[0]
    async with env.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM channels") == len(ALLOWED)


async def test_loopback_allowed_by_the_setting_metadata_never(env, make_relay):
    relay = await make_relay(allow_loopback_upstreams=True)
    api = Api(relay, await make_user(env, "ops", ROLE_ADMIN))
    for url in LOOPBACK:
        body = {"name": "c", "key": "k" * 20, "base_url": url, "models": "m"}
        assert (await api.ok("POST", "/api/channel/", body))["base_url"] == url
    for url in REFUSED_ALWAYS:
        body = {"name": "c", "key": "k" * 20, "base_url": url, "models": "m"}
        await api.refused("POST", "/api/channel/", body)
    # The Admin service refuses on its own too (the CLI and `make dev` go through it).
    env.admin.allow_loopback_upstreams = False
    with pytest.raises(AdminError, match="loopback"):
        await env.admin.create_channel("c", "http://127.0.0.1:9", "k", "m")


# --- item 2: SSRF guard at connect time ----------------------------------------------------


async def test_stored_loopback_channel_is_not_called(env, make_relay, echo, caplog):
    """A row written before the guard existed (or by hand) is refused when connecting."""
    upstream, base = echo
    relay = await make_relay(allow_loopback_upstreams=False)
    uid, _ = await env.root_user()
    async with env.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO channels (type, name, key, base_url, models) VALUES (1, 'old', $1, $2,"
            " 'gpt-4o-mini')",
            KEY,
            base,
        )
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**6)
    with caplog.at_level(logging.WARNING, logger="relaygate.relay"):
        resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
        body = await resp.json()
    assert resp.status == 502 and body["error"]["code"] == "bad_gateway", body
    assert upstream.paths == []
    assert "refused by the upstream address policy" in caplog.text
    assert await ledger(env, uid, tok.id) == (10**6, 0)


class FixedResolver(AbstractResolver):
    """DNS that answers every name with one address (a name pointing at a refused one)."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> list[ResolveResult]:
        import socket

        fam = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        answer: ResolveResult = {
            "hostname": host,
            "host": self.address,
            "port": port,
            "family": fam,
            "proto": 0,
            "flags": 0,
        }
        return [answer]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("address", "allow_loopback", "refused"),
    [
        ("127.0.0.1", False, True),
        ("127.0.0.1", True, False),
        ("169.254.169.254", True, True),
    ],
)
async def test_dns_names_are_checked_at_connect_time(echo, address, allow_loopback, refused):
    upstream, base = echo
    port = int(base.rsplit(":", 1)[1])
    connector = aiohttp.TCPConnector(
        resolver=FixedResolver(address), socket_factory=guarded_socket_factory(allow_loopback)
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        url = f"http://upstream.example:{port}/v1/chat/completions"
        if refused:
            with pytest.raises(aiohttp.ClientConnectorError) as info:
                await session.post(url, json=CHAT, timeout=aiohttp.ClientTimeout(total=2))
            assert isinstance(info.value.os_error, AddressRefused)
            assert upstream.paths == []
        else:
            async with session.post(url, json=CHAT) as resp:
                assert resp.status == 200
            assert upstream.paths == ["/v1/chat/completions"]


# --- item 3: upstream TLS is verified -------------------------------------------------------


@pytest.fixture
async def tls_echo(self_signed) -> AsyncIterator[tuple[Echo, str]]:
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    upstream = Echo()
    app = web.Application()
    app.router.add_post("/{tail:.*}", upstream.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield upstream, f"https://127.0.0.1:{port}"
    await runner.cleanup()


async def _chat_through(env, relay, base: str) -> tuple[int, dict[str, Any], tuple[int, int]]:
    uid, _ = await env.root_user()
    await env.admin.create_channel("tls", base, KEY, "gpt-4o-mini")
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**6)
    resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
    return resp.status, await resp.json(), await ledger(env, uid, tok.id)


async def test_self_signed_upstream_is_refused_by_default(env, relay, tls_echo):
    upstream, base = tls_echo
    status, body, books = await _chat_through(env, relay, base)
    assert status == 502 and body["error"]["code"] == "bad_gateway", body
    assert upstream.paths == [] and books == (10**6, 0)


async def test_upstream_ca_file_trusts_a_private_ca(env, make_relay, tls_echo, self_signed):
    upstream, base = tls_echo
    relay = await make_relay(upstream_ca_file=str(self_signed[0]))
    status, body, books = await _chat_through(env, relay, base)
    assert status == 200, body
    assert upstream.paths == ["/v1/chat/completions"] and books[1] > 0


async def test_tls_verify_off_accepts_any_certificate(env, make_relay, tls_echo):
    upstream, base = tls_echo
    relay = await make_relay(upstream_tls_verify=False)
    status, body, _ = await _chat_through(env, relay, base)
    assert status == 200, body
    assert upstream.paths == ["/v1/chat/completions"]


# --- item 4: a base_url ending in /v1 --------------------------------------------------------


async def test_base_url_ending_in_v1_is_normalized(env, relay, echo):
    upstream, base = echo
    admin = await make_user(env, "ops", ROLE_ADMIN)
    api = Api(relay, admin)
    created = await api.ok(
        "POST",
        "/api/channel/",
        {"name": "sdk-style", "key": KEY, "base_url": f"{base}/v1/", "models": "gpt-4o-mini"},
    )
    assert created["base_url"] == base
    await env.admin.create_channel("admin-style", f"{base}/v1", KEY, "gpt-4o")
    async with env.pool.acquire() as conn:
        stored = await conn.fetch("SELECT base_url FROM channels ORDER BY id")
    assert [r["base_url"] for r in stored] == [base, base]
    await refresh(relay)
    tok = await env.admin.create_token(admin.id, "t", remain_quota=10**6)
    for model in ("gpt-4o-mini", "gpt-4o"):
        resp = await relay.post(
            "/v1/chat/completions", json={**CHAT, "model": model}, headers=bearer(f"sk-{tok.key}")
        )
        assert resp.status == 200, await resp.text()
    assert upstream.paths == ["/v1/chat/completions", "/v1/chat/completions"]


async def test_rows_stored_with_v1_are_normalized_when_loaded(env, relay, echo):
    upstream, base = echo
    uid, _ = await env.root_user()
    async with env.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO channels (type, name, key, base_url, models) VALUES (1, 'old', $1, $2,"
            " 'gpt-4o-mini')",
            KEY,
            f"{base}/v1",
        )
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=10**6)
    resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
    assert resp.status == 200, await resp.text()
    assert upstream.paths == ["/v1/chat/completions"]
