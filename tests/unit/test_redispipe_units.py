"""The hot connection's own pieces that used to be borrowed from redis-py internals: URL reading
(must agree with the pooled client), error-reply mapping and command packing (must give what
redis-py gives)."""

from __future__ import annotations

import ssl
from typing import Any

import hiredis
import pytest
from redis import exceptions as rexc
from redis.asyncio import BlockingConnectionPool, Connection

from relaygate.config import ConfigError, from_env
from relaygate.redispipe import pack, parse_redis_url, reply_error

URLS = [
    "redis://127.0.0.1",
    "redis://localhost:7000/3",
    "redis://alice:p%40ss@cache.internal:6380/2",
    "redis://:secret@h/1",
    "redis://h/0?db=5",
    "redis://[::1]:6390/4",
    "rediss://cache.example:6380/0?ssl_cert_reqs=none",
    "unix:///run/redis.sock?db=2",
    "unix://bob:pw@/run/redis.sock",
]


@pytest.mark.parametrize("url", URLS)
def test_url_read_as_the_pool_reads_it(url: str) -> None:
    """What the pooled redis-py client would connect to is what the hot connection connects
    to: the two must never disagree on one URL."""
    target = parse_redis_url(url)
    pool = BlockingConnectionPool.from_url(url)
    want = pool.connection_kwargs
    assert target.db == want.get("db", 0)
    assert target.username == want.get("username")
    assert target.password == want.get("password")
    if url.startswith("unix"):
        assert target.path == want["path"]
    else:
        assert target.path is None
        assert target.host == want.get("host", "localhost")
        assert target.port == want.get("port", 6379)
    assert (target.tls is not None) == url.startswith("rediss")


def test_rediss_verifies_by_default() -> None:
    tls = parse_redis_url("rediss://cache.example:6380/0").tls
    assert tls is not None and tls.verify_mode == ssl.CERT_REQUIRED
    off = parse_redis_url("rediss://cache.example/0?ssl_cert_reqs=none").tls
    assert off is not None and off.verify_mode == ssl.CERT_NONE and not off.check_hostname


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("localhost:6379", "scheme"),
        ("http://h/0", "scheme"),
        ("redis://h/0?bogus=1", "unsupported argument"),
        ("rediss://h/0?ssl_cert_reqs=sometimes", "Certificate Requirements"),
        ("rediss://h/0?ssl_ca_certs=/nonexistent/ca.pem", "TLS settings"),
        ("redis://h:notaport/0", "notaport"),
        ("unix://", "socket path"),
    ],
)
def test_bad_urls_refused_by_config(url: str, why: str) -> None:
    """Whatever either client would refuse at start is refused by config, in one line that
    does not repeat the URL (it may carry a password)."""
    with pytest.raises(ValueError, match=why):
        parse_redis_url(url)
    with pytest.raises(ConfigError, match="RELAYGATE_REDIS_URL") as info:
        from_env({"RELAYGATE_REDIS_URL": url.replace("//h", "//:hunter2@h")})
    assert "hunter2" not in str(info.value)


def test_config_accepts_tls_and_unix() -> None:
    for url in ("rediss://h:6380/0?ssl_cert_reqs=none", "unix:///run/redis.sock?db=1"):
        assert from_env({"RELAYGATE_REDIS_URL": url}).redis_url == url


ERRORS = [
    "NOSCRIPT No matching script. Please use EVAL.",
    "ERR unknown command 'FOO', with args beginning with: ",
    "ERR max number of clients reached",
    "ERR invalid password",
    "ERR wrong number of arguments for 'auth' command",
    "ERR AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?",
    "ERR Client sent AUTH, but no password is set",
    "ERR Error loading the extension. Please check the server logs.",
    "ERR Error unloading module: operation not possible.",
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "READONLY You can't write against a read only replica.",
    "LOADING Redis is loading the dataset in memory",
    "OOM command not allowed when used memory > 'maxmemory'.",
    "NOAUTH Authentication required.",
    "WRONGPASS invalid username-password pair or user is disabled.",
    "NOPERM this user has no permissions to run the 'get' command",
    "EXECABORT Transaction discarded because of previous errors.",
    "BUSY Redis is busy running a script.",
    "weird lowercase error",
]


@pytest.mark.parametrize("message", ERRORS)
def test_error_replies_map_like_redis_py(message: str) -> None:
    """Same class and message as redis-py's own parser. That parser is private, so it is
    compared here, where a redis-py upgrade that changes the table shows up as a failure."""
    base = pytest.importorskip("redis._parsers.base")
    want = base.BaseParser.parse_error(message)
    got = reply_error(message)
    assert type(got) is type(want)
    assert str(got) == str(want)


def test_error_replies_through_hiredis() -> None:
    reader = hiredis.Reader(replyError=reply_error)
    reader.feed(b"-NOSCRIPT No matching script.\r\n-ERR boom\r\n")
    first, second = reader.gets(), reader.gets()
    assert isinstance(first, rexc.NoScriptError) and str(first) == "No matching script."
    assert type(second) is rexc.ResponseError and str(second) == "boom"


@pytest.mark.parametrize(
    "message", ["MOVED 3999 127.0.0.1:6381", "ASK 3999 127.0.0.1:6381", "MOVED nonsense"]
)
def test_cluster_redirections_are_response_errors(message: str) -> None:
    """Not followed (no cluster support), but caught as errors like any other reply."""
    err = reply_error(message)
    assert isinstance(err, rexc.ResponseError) and str(err) == message


COMMANDS: list[tuple[Any, ...]] = [
    ("EVALSHA", "a" * 40, 2, "k1", b"k2", 7, -3, 2.5, "snow\u2603"),
    ("SCRIPT LOAD", "return 1"),
    (b"SCRIPT LOAD", b"return 1"),
    ("SET", b"key", memoryview(b"value")),
    ("CLIENT", "ID"),
    ("PING",),
]


@pytest.mark.parametrize("args", COMMANDS)
def test_pack_matches_redis_py(args: tuple[Any, ...]) -> None:
    """The same bytes as redis-py's own connection would send for the same call."""
    want = b"".join(Connection().pack_command(*args))
    assert b"".join(pack(*args)) == want


def test_pack_sends_bytearray_as_bytes() -> None:
    assert pack("SET", bytearray(b"k"), bytearray(b"v")) == pack("SET", b"k", b"v")


@pytest.mark.parametrize("bad", [None, True, {"a": 1}, [1], object()])
def test_pack_refuses_what_redis_cannot_take(bad: Any) -> None:
    with pytest.raises(rexc.DataError):
        pack("SET", "k", bad)
