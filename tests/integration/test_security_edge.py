"""Issue 10 items 2 and 7 at the edge of the relay (red-team #6, #12, #13, #20): the client
address behind trusted proxies, credentials that are not UTF-8, bodies whose encoding lies,
IPv4-mapped allowlist entries. Real sockets, real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from relaygate.app import init_app
from tests.prodserver import ProductionServer

from .helpers import CHAT, bearer, refresh

MINI = {**CHAT, "max_tokens": 5}


async def _app_on(settings: Any) -> TestClient:  # type: ignore[type-arg]
    client = TestClient(ProductionServer(init_app(settings), host="127.0.0.1"))
    await client.start_server()
    return client


async def _world(env: Any, upstream: str, allow_ips: str = "") -> Any:
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", upstream, "k", "gpt-4o-mini")
    return await env.admin.create_token(uid, "t", unlimited=True, allow_ips=allow_ips)


async def _raw(client: Any, request: bytes) -> bytes:
    """Send bytes as they are (no client library would send these) and read the answer."""
    assert client.server.port is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", client.server.port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    return data


async def test_a_client_forwarded_line_cannot_pass_the_ip_allowlist(
    env: Any, mock_upstream: str
) -> None:
    """The client sends ``X-Forwarded-For: 127.0.0.1`` itself; the trusted proxy (loopback
    here) appends the real address as a second line. The real address decides: refused."""
    tok = await _world(env, mock_upstream, allow_ips="127.0.0.1")
    settings = env.settings.replace(trusted_proxies=(ipaddress.ip_network("127.0.0.0/8"),))
    client = await _app_on(settings)
    try:
        headers = CIMultiDict(bearer(tok.key))
        headers.add("X-Forwarded-For", "127.0.0.1")
        headers.add("X-Forwarded-For", "203.0.113.7")
        resp = await client.post("/v1/chat/completions", json=MINI, headers=headers)
        body = await resp.json()
        assert resp.status == 403 and body["error"]["code"] == "access_denied", body
        headers = CIMultiDict(bearer(tok.key))
        headers.add("X-Forwarded-For", "203.0.113.7, 127.0.0.1")
        resp = await client.post("/v1/chat/completions", json=MINI, headers=headers)
        assert resp.status == 403
    finally:
        await client.close()


async def test_ipv4_mapped_allowlist_entry_admits_its_client(
    env: Any, relay: Any, mock_upstream: str
) -> None:
    tok = await _world(env, mock_upstream, allow_ips="::ffff:127.0.0.0/104")
    await refresh(relay)
    resp = await relay.post("/v1/chat/completions", json=MINI, headers=bearer(tok.key))
    assert resp.status == 200, await resp.text()


async def test_credentials_that_are_not_utf8_get_401_not_500(env: Any, relay: Any) -> None:
    """Red-team #12: relay, billing and management routes."""
    for path, header in (
        (b"POST /v1/chat/completions", b"Authorization: Bearer sk-\xff\xfe\x80abc"),
        (b"POST /v1/chat/completions", b"x-api-key: \xc3\x28"),
        (b"GET /v1/models", b"Authorization: Bearer \xff"),
        (b"GET /v1/dashboard/billing/subscription", b"Authorization: Bearer \xff"),
        (b"GET /api/usage/token/", b"Authorization: Bearer \xff"),
        (b"GET /api/user/self", b"Authorization: \xff\xfe"),
    ):
        body = b'{"model":"gpt-4o-mini","messages":[]}'
        raw = (
            path + b" HTTP/1.1\r\nHost: x\r\n" + header + b"\r\nContent-Type: application/json"
            b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
        ) + body
        answer = await _raw(relay, raw)
        status = int(answer.split(b" ", 2)[1])
        assert status in (200, 401), (path, answer[:300])
        assert b"Traceback" not in answer and b"500" not in answer.split(b"\r\n", 1)[0]
        if path.startswith(b"GET /api/user"):
            assert b'"success":false' in answer.replace(b" ", b""), answer


async def test_body_that_claims_gzip_and_is_not_gets_400(
    env: Any, relay: Any, mock_upstream: str
) -> None:
    """Red-team #13."""
    tok = await _world(env, mock_upstream)
    resp = await relay.post(
        "/v1/chat/completions",
        data=b"this is not gzip at all",
        headers={**bearer(tok.key), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    body = await resp.json()
    assert resp.status == 400, body
    assert body["error"]["type"] == "invalid_request_error"


async def test_one_huge_request_cannot_hold_the_users_whole_balance(
    env: Any, mock_upstream: str
) -> None:
    """Red-team #17: an unlimited token, ``max_tokens`` 10**8: the reservation stays within
    RELAYGATE_MAX_RESERVE_QUOTA and the user's other token still gets served meanwhile."""
    uid, _ = await env.admin.create_user("frank", 1, 10**9)
    await env.admin.create_channel("mock", mock_upstream, "k", "m-slow")
    await env.admin.set_option("ModelRatio", '{"m-slow": 1}')
    big = await env.admin.create_token(uid, "big", unlimited=True)
    other = await env.admin.create_token(uid, "other", unlimited=True)
    client = await _app_on(env.settings.replace(max_reserve_quota=5000))
    try:
        huge = {"model": "m-slow", "messages": [{"role": "user", "content": "hi"}]}
        first = asyncio.create_task(
            client.post(
                "/v1/chat/completions", json={**huge, "max_tokens": 10**8}, headers=bearer(big.key)
            )
        )
        members: list[bytes] = []
        for _ in range(100):
            members = await env.redis.zrange(env.keys.reservations(uid), 0, -1)
            if members:
                break
            await asyncio.sleep(0.02)
        assert members, "the slow request never reserved"
        amount = int(members[0].rsplit(b"|", 1)[1])
        assert 0 < amount <= 5000
        resp = await client.post(
            "/v1/chat/completions", json={**huge, "max_tokens": 10}, headers=bearer(other.key)
        )
        assert resp.status == 200, await resp.text()
        resp = await first
        body = await resp.json()
        assert resp.status == 200, body
        assert body["usage"]["completion_tokens"] <= 5000
    finally:
        await client.close()
