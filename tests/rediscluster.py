"""A throwaway local Redis Cluster (3 primaries, no replicas) for the Cluster tests.

Each primary is a ``redis-server --cluster-enabled yes`` on a free port (its cluster bus on
port + 10000) with its files in a temporary directory; ``redis-cli --cluster create`` spreads
the 16384 slots over them. ``stop`` kills exactly the processes ``start`` launched, by pid.
Why our own cluster and not the shared Redis: the shared server is a single node, and a
cluster is the only place where a script whose keys span slots, or a SCAN that sees one
node, actually fails.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def _free_pair() -> int:
    """A port free for the node and for its cluster bus (port + 10000)."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port + 10000 > 65535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


@dataclass
class LocalCluster:
    directory: Path
    size: int = 3
    ports: list[int] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        """A seed node's URL (any node answers CLUSTER NODES for the whole cluster)."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self) -> LocalCluster:
        assert REDIS_SERVER and REDIS_CLI
        for _ in range(self.size):
            port = _free_pair()
            node_dir = self.directory / str(port)
            node_dir.mkdir(parents=True)
            log = (node_dir / "redis.log").open("wb")
            argv = [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1"]
            argv += ["--dir", str(node_dir), "--save", "", "--appendonly", "no"]
            argv += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            argv += ["--cluster-node-timeout", "5000", "--maxmemory-policy", "noeviction"]
            self.procs.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
            log.close()
            self.ports.append(port)
        for port in self.ports:
            self._wait(port, "PING", "PONG")
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in self.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        for port in self.ports:
            self._wait(port, "CLUSTER INFO", "cluster_state:ok")
        return self

    def _wait(self, port: int, command: str, expect: str, timeout: float = 30.0) -> None:
        """Until ``command`` on the node answers with ``expect`` (a start-up deadline)."""
        assert REDIS_CLI
        deadline = time.monotonic() + timeout
        out = ""
        while time.monotonic() < deadline:
            done = subprocess.run(
                [REDIS_CLI, "-p", str(port), *command.split()],
                capture_output=True,
                text=True,
                timeout=10,
            )
            out = done.stdout
            if expect in out:
                return
            time.sleep(0.1)
        raise TimeoutError(f"node {port}: {command!r} never answered {expect!r}: {out!r}")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
