"""deploy/ validates: Kubernetes manifests against the API schemas, the compose file against
the Compose Specification (and ``docker compose config`` where the plugin is installed), the
Dockerfile and the Grafana/Prometheus provisioning against what the stack needs.

The schemas come from pip packages (kubernetes-validate ships the Kubernetes OpenAPI schemas,
check-jsonschema the compose-spec schema), so nothing is downloaded at test time and the
check runs offline; docs/deploy.md says why not kubeconform.
"""

from __future__ import annotations

import importlib.resources
import pathlib
import re
import shutil
import subprocess
from typing import Any

import jsonschema
import kubernetes_validate
import orjson
import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
# The oldest Kubernetes release the manifests promise to work on, and the newest the
# installed schemas know.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.utils.latest_version())


def k8s_resources() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in K8S:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                found.append((path.name, doc))
    return found


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_resources() if doc["kind"] == kind]


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_kubernetes_manifests_validate_strictly(version: str) -> None:
    resources = k8s_resources()
    assert resources
    for name, doc in resources:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {doc['kind']}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_kubernetes_has_what_production_needs() -> None:
    kinds = {doc["kind"] for _, doc in k8s_resources()}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    deployments = {d["metadata"]["name"]: d for d in by_kind("Deployment")}
    assert set(deployments) == {"relaygate-relay", "relaygate-worker"}
    for deployment in deployments.values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["resources"]["requests"]["cpu"]
            assert container["resources"]["requests"]["memory"]
            env = {e["name"]: e for e in container.get("env", [])}
            # Secrets by reference, never inline values.
            for var in ("RELAYGATE_DATABASE_URL", "RELAYGATE_REDIS_URL"):
                assert "secretKeyRef" in env[var]["valueFrom"], var
            assert {"configMapRef": {"name": "relaygate-config"}} in container["envFrom"]
    # the worker serves its flusher metrics: annotated, port named, a Service selecting it
    worker_tpl = deployments["relaygate-worker"]["spec"]["template"]
    (worker,) = worker_tpl["spec"]["containers"]
    port = {e["name"]: e for e in worker["env"]}["RELAYGATE_WORKER_METRICS_PORT"]["value"]
    assert worker_tpl["metadata"]["annotations"]["prometheus.io/port"] == port
    assert worker["ports"] == [{"name": "metrics", "containerPort": int(port)}]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    services = {s["metadata"]["name"]: s for s in by_kind("Service")}
    metrics_svc = services["relaygate-worker-metrics"]["spec"]
    assert metrics_svc["selector"] == worker_tpl["metadata"]["labels"]
    assert metrics_svc["ports"][0]["targetPort"] == "metrics"
    relay = deployments["relaygate-relay"]["spec"]["template"]["spec"]["containers"][0]
    assert relay["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert relay["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert relay["lifecycle"]["preStop"]
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "relaygate-relay"
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    budgets = {
        p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
        for p in by_kind("PodDisruptionBudget")
    }
    assert budgets == {"relay", "worker"}


def test_kubernetes_config_names_only_real_settings() -> None:
    from relaygate.config import FIELDS

    known = {var for var, _ in FIELDS.values()}
    (config,) = by_kind("ConfigMap")
    assert set(config["data"]) <= known
    for doc in by_kind("Deployment"):
        for container in doc["spec"]["template"]["spec"]["containers"]:
            assert {e["name"] for e in container.get("env", [])} <= known


def compose_spec() -> dict[str, Any]:
    schema = (
        importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    )
    loaded: dict[str, Any] = orjson.loads(schema.read_bytes())
    return loaded


def test_compose_validates_against_the_compose_spec() -> None:
    jsonschema.validate(compose(), compose_spec())


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed here; the compose-spec schema check above covers the file",
)
def test_docker_compose_config() -> None:
    env = {
        "POSTGRES_PASSWORD": "x",
        "GRAFANA_ADMIN_PASSWORD": "x",
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    done = subprocess.run(
        ["docker", "compose", "-f", str(DEPLOY / "compose.yaml"), "config", "--quiet"],
        capture_output=True, text=True, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_compose_has_the_stack() -> None:
    services = compose()["services"]
    relays = sorted(
        name for name, s in services.items() if s.get("command", [""])[1:2] == ["serve"]
    )
    assert relays == ["relay-1", "relay-2"]
    assert services["worker"]["command"] == ["relaygate", "worker"]
    # Redis runs deploy/redis.conf, which keeps AOF on and never evicts.
    assert any("redis.conf" in v for v in services["redis"]["volumes"])
    conf = dict(
        line.split(None, 1) for line in (DEPLOY / "redis.conf").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )  # fmt: skip
    assert conf["maxmemory-policy"] == "noeviction"
    assert conf["appendonly"] == "yes"
    assert "postgres" in services
    # Prometheus scrapes every relay on its port, and the worker on its metrics port.
    prom = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in prom["scrape_configs"]
    }
    assert sorted(t.split(":")[0] for t in jobs["relaygate"]) == relays
    worker_port = services["worker"]["environment"]["RELAYGATE_WORKER_METRICS_PORT"]
    assert jobs["relaygate-worker"] == [f"worker:{worker_port}"]
    assert f":{worker_port}/healthz" in " ".join(services["worker"]["healthcheck"]["test"])
    assert set(jobs) == {"relaygate", "relaygate-worker"}
    # Grafana gets the provisioning folder and the dashboards folder it points at.
    grafana = services["grafana"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/relaygate.yaml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana:{path}:ro" in grafana
    datasources = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yaml").read_text()
    )
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    for name, service in services.items():
        for key in ("image",):
            image = service.get(key)
            if image and name not in relays and image != "relaygate:local":
                assert re.search(r":v?\d+\.\d+", image), f"{name}: pin {image} to an exact release"


def test_dockerfile_is_multi_stage_slim_non_root_pinned_and_hashed() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M)
    assert base is not None
    assert re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base.group(1))
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2
    assert "--require-hashes -r requirements.lock" in text
    user = re.findall(r"^USER (\S+)$", text, re.M)
    assert user and not user[-1].startswith(("root", "0"))
    assert re.search(r"^HEALTHCHECK .*healthz", text, re.M | re.S)


def docker_ready() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


@pytest.mark.skipif(
    not docker_ready(),
    reason="no Docker daemon here: `make image` builds the image where there is one (docs/deploy.md)",
)
def test_image_builds() -> None:
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert base is not None
    if (
        subprocess.run(
            ["docker", "image", "inspect", base.group(1)], capture_output=True
        ).returncode
        != 0
    ):
        pytest.skip(f"base image {base.group(1)} is not available locally")
    done = subprocess.run(
        ["docker", "build", "-q", "-f", "deploy/Dockerfile", "-t", "relaygate:test", "."],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
