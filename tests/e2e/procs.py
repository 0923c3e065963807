"""Real processes for end-to-end tests: relays, flushers, the mock upstream, a TCP proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from relaygate.config import Settings

BIN = Path(sys.executable).parent / "relaygate"


def env_for(settings: Settings, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "RELAYGATE_DATABASE_URL": settings.database_url,
            "RELAYGATE_REDIS_URL": settings.redis_url,
            "RELAYGATE_KEY_PREFIX": settings.key_prefix,
            "RELAYGATE_SHARDS": str(settings.shards),
            "RELAYGATE_LOG_LEVEL": "warning",
            "RELAYGATE_FLUSH_BLOCK_MS": "50",
            "RELAYGATE_FLUSH_LINGER_MS": "50",
            "RELAYGATE_FLUSH_CLAIM_IDLE_MS": "1000",
            "RELAYGATE_UPSTREAM_TIMEOUT": "5",
            "RELAYGATE_RESERVATION_TTL": "600",  # crashed relays are found by heartbeat, not TTL
            "RELAYGATE_HEARTBEAT_TTL": "3",
            "RELAYGATE_ALLOW_LOOPBACK_UPSTREAMS": "true",  # the mock upstream is on 127.0.0.1
        }
    )
    env.update(extra)
    return env


@dataclass
class Proc:
    args: list[str]
    env: Mapping[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    port: int = 0

    def start(self) -> Proc:
        handle = self.log.open("ab")
        self.popen = subprocess.Popen(
            self.args, env=dict(self.env), stdout=handle, stderr=subprocess.STDOUT
        )
        handle.close()
        return self

    def kill(self) -> None:
        """SIGKILL: no cleanup, no draining — the crash the ledger must survive."""
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


async def wait_http(url: str, proc: Proc, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.popen and proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.args} exited: {proc.log.read_text()[-2000:]}")
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(url) as resp:
                    if resp.status < 500:
                        return
            await asyncio.sleep(0.1)
    raise TimeoutError(f"{url} not ready: {proc.log.read_text()[-2000:]}")


@dataclass
class Stack:
    """Starts processes for one test and always stops them."""

    settings: Settings
    tmp: Path
    procs: list[Proc] = field(default_factory=list)

    async def mock(self, port: int) -> Proc:
        p = Proc(
            [str(BIN), "mock-upstream", "--port", str(port)],
            os.environ,
            self.tmp / f"mock-{port}.log",
        )
        p.port = port
        self.procs.append(p.start())
        await wait_http(f"{p.url}/v1/models", p)
        return p

    async def relay(self, port: int, with_worker: bool = False, **extra: str) -> Proc:
        args = [str(BIN), "serve", "--port", str(port)]
        if with_worker:
            args.append("--with-worker")
        p = Proc(args, env_for(self.settings, **extra), self.tmp / f"relay-{port}.log")
        p.port = port
        self.procs.append(p.start())
        await wait_http(f"{p.url}/healthz", p)
        return p

    def worker(self, name: str, **extra: str) -> Proc:
        p = Proc(
            [str(BIN), "worker"], env_for(self.settings, **extra), self.tmp / f"worker-{name}.log"
        )
        self.procs.append(p.start())
        return p

    def close(self) -> None:
        for p in self.procs:
            p.stop()


class TcpProxy:
    """A cuttable TCP forwarder, to make PostgreSQL unreachable without touching the server."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.server: asyncio.AbstractServer | None = None
        self.port = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", port or self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def cut(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None
        for w in list(self._writers):
            w.close()
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.discard(writer)
        self._writers.discard(up_writer)
