"""Redis over TLS (``rediss://``) and over a unix socket, end to end: a private redis-server
that speaks only TLS (client certificates required) plus a unix socket, a throwaway CA made
with openssl, and the relay's own clients, the pooled redis-py one and the hot
PipelinedRedis, reading the same URL. A request is reserved and settled on the hot
connection, the flusher reads the stream over the pool, and PostgreSQL gets the charge."""

from __future__ import annotations

import pathlib
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import asyncpg
import pytest
from redis.asyncio import Redis, SSLConnection
from redis.exceptions import ConnectionError as RedisConnectionError

from relaygate.config import Settings, from_env
from relaygate.pricing import PriceBook, charge
from relaygate.redispipe import PipelinedRedis
from relaygate.relay.handlers import RUNTIME
from tests.conftest import TABLES, free_port

from .helpers import CHAT, bearer, flush_all, ledger, pg_token, refresh

pytestmark = pytest.mark.integration


def _openssl(*args: str, cwd: pathlib.Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _make_pki(d: pathlib.Path) -> None:
    """A CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-subj",
        "/CN=relaygate test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )
    for name, extra in (
        ("server", "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"),
        ("client", "extendedKeyUsage=clientAuth\n"),
    ):
        (d / f"{name}.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "authorityKeyIdentifier=keyid,issuer\n" + extra
        )
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
            "-subj",
            f"/CN=relaygate test {name}",
            cwd=d,
        )
        _openssl(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            f"{name}.crt",
            "-extfile",
            f"{name}.ext",
            cwd=d,
        )
    (d / "other").mkdir()
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-keyout",
        "other/ca.key",
        "-out",
        "other/ca.crt",
        "-subj",
        "/CN=someone else",
        cwd=d,
    )


@dataclass
class TlsRedis:
    port: int
    sock: str
    pki: pathlib.Path

    def url(self, host: str = "localhost", db: int = 0, ca: str = "ca.crt", **extra: str) -> str:
        args = {
            "ssl_ca_certs": str(self.pki / ca),
            "ssl_certfile": str(self.pki / "client.crt"),
            "ssl_keyfile": str(self.pki / "client.key"),
            "ssl_check_hostname": "true",
            **extra,
        }
        query = "&".join(f"{k}={quote(v, safe='/')}" for k, v in args.items())
        return f"rediss://{host}:{self.port}/{db}?{query}"


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: cannot make the test certificates")
    d = tmp_path_factory.mktemp("tlsredis")
    _make_pki(d)
    port = free_port()
    sock = str(d / "redis.sock")
    log = (d / "redis.log").open("wb")  # a file, not a pipe nobody drains
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            "0",
            "--tls-port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--tls-cert-file",
            str(d / "server.crt"),
            "--tls-key-file",
            str(d / "server.key"),
            "--tls-ca-cert-file",
            str(d / "ca.crt"),
            "--tls-auth-clients",
            "yes",
            "--unixsocket",
            sock,
            "--unixsocketperm",
            "700",
            "--dir",
            str(d),
            "--save",
            "",
            "--appendonly",
            "no",
            "--maxmemory-policy",
            "noeviction",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                out = (d / "redis.log").read_text(errors="replace")
                if "tls" in out.lower():
                    pytest.skip(f"this redis-server has no TLS support: {out.strip()[-200:]}")
                raise RuntimeError(f"private TLS redis-server exited: {out[-500:]}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(0.2)
                    s.connect(sock)
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("private TLS redis-server did not start")
            time.sleep(0.05)
        yield TlsRedis(port, sock, d)
    finally:
        proc.kill()
        proc.wait()
        log.close()


async def test_hot_connection_speaks_tls(tls_redis: TlsRedis) -> None:
    url = tls_redis.url(db=3)
    from_env({"RELAYGATE_REDIS_URL": url})  # what passes config ...
    hot = await PipelinedRedis.connect(url)  # ... works at start
    try:
        assert hot._proto is not None and hot._proto.transport is not None
        assert hot._proto.transport.get_extra_info("ssl_object") is not None
        assert await hot.execute_command("SET", "tls:k", "v") == b"OK"
        sha = await hot.execute_command("SCRIPT LOAD", "return redis.call('GET', KEYS[1])")
        assert await hot.execute_command("EVALSHA", sha, 1, "tls:k") == b"v"
        pool = Redis.from_url(url)
        try:  # the same URL lands the pool in the same db
            assert pool.connection_pool.connection_class is SSLConnection
            assert await pool.get("tls:k") == b"v"
        finally:
            await pool.aclose()
    finally:
        await hot.aclose()


async def test_hot_connection_over_tls_by_ip(tls_redis: TlsRedis) -> None:
    hot = await PipelinedRedis.connect(tls_redis.url(host="127.0.0.1"))
    try:
        assert await hot.execute_command("PING") == b"PONG"
    finally:
        await hot.aclose()


async def test_untrusted_server_is_refused(tls_redis: TlsRedis) -> None:
    """A server whose certificate our CA did not sign is refused at connect, in the handshake."""
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        await PipelinedRedis.connect(tls_redis.url(ca="other/ca.crt"), connect_timeout=3)


async def test_plain_redis_to_a_tls_port_fails_at_connect(tls_redis: TlsRedis) -> None:
    with pytest.raises(RedisConnectionError):
        await PipelinedRedis.connect(f"redis://127.0.0.1:{tls_redis.port}/0", connect_timeout=1)


async def test_unix_socket(tls_redis: TlsRedis) -> None:
    url = f"unix://{tls_redis.sock}?db=4"
    from_env({"RELAYGATE_REDIS_URL": url})
    hot = await PipelinedRedis.connect(url)
    pool = Redis.from_url(url)
    try:
        assert await hot.execute_command("SET", "unix:k", "here") == b"OK"
        assert await pool.get("unix:k") == b"here"
        assert await pool.execute_command("CLIENT", "INFO") is not None
    finally:
        await hot.aclose()
        await pool.aclose()


@pytest.fixture
async def settings(database_url: str, tls_redis: TlsRedis) -> AsyncIterator[Settings]:
    """The shared fixture's settings, but Redis is the private TLS server."""
    conn = await asyncpg.connect(database_url)
    await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    await conn.close()
    yield Settings(
        database_url=database_url,
        redis_url=tls_redis.url(db=1),
        key_prefix="rgtls",
        shards=2,
        port=free_port(),
        log_level="warning",
        flush_block_ms=50,
        flush_linger_ms=50,
        allow_loopback_upstreams=True,
    )


async def test_relay_reserves_and_settles_over_tls(env, mock_upstream, relay):  # type: ignore[no-untyped-def]
    rt = relay.app[RUNTIME]
    assert rt.redis.connection_pool.connection_class is SSLConnection
    assert rt.hot._proto.transport.get_extra_info("ssl_object") is not None
    assert isinstance(rt.hot._proto.transport.get_extra_info("ssl_object"), ssl.SSLObject)
    uid, _ = await env.root_user()
    await env.admin.create_channel("mock", mock_upstream, "upstream-secret", "gpt-4o-mini")
    await refresh(relay)
    tok = await env.admin.create_token(uid, "t", remain_quota=1_000_000)
    resp = await relay.post("/v1/chat/completions", json=CHAT, headers=bearer(f"sk-{tok.key}"))
    assert resp.status == 200, await resp.text()
    expected = charge(PriceBook().model("gpt-4o-mini"), PriceBook().group_ratio("default"), 10, 20)
    assert await ledger(env, uid, tok.id) == (1_000_000, expected)
    assert await flush_all(env) == 1
    assert await pg_token(env, tok.id) == (1_000_000, expected)
