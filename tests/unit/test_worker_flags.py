"""The worker's metrics setting: a flag of ``worker`` only (``serve`` has no flusher metrics
listener of its own), read from RELAYGATE_WORKER_METRICS_PORT, off by default."""

from __future__ import annotations

import pytest

from relaygate.cli.parser import build_parser
from relaygate.config import ConfigError, Settings, from_env


def flags(command: str) -> set[str]:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    p = sub.choices[command]
    return {f for a in p._actions for f in a.option_strings}


def test_worker_takes_the_metrics_port_and_host_but_not_the_relay_listeners() -> None:
    worker = flags("worker")
    assert {"--worker-metrics-port", "--host"} <= worker
    assert not {"--port", "--workers", "--trusted-proxies"} & worker
    assert "--worker-metrics-port" not in flags("serve") | flags("dev")


def test_the_setting_defaults_off_and_is_checked() -> None:
    assert Settings().worker_metrics_port == 0
    assert from_env({"RELAYGATE_WORKER_METRICS_PORT": "9464"}).worker_metrics_port == 9464
    with pytest.raises(ConfigError, match="RELAYGATE_WORKER_METRICS_PORT"):
        from_env({"RELAYGATE_WORKER_METRICS_PORT": "70000"})
    args = build_parser().parse_args(["worker", "--worker-metrics-port", "9100"])
    assert args.worker_metrics_port == "9100"
