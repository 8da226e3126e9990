"""The Kubernetes examples hold together: each embedded config loads, and the
ports, probes and URIs agree with it. (No cluster here: this checks the files.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from scalyproxy.config import HostPort, ProxyConfig, load_config_text
from tests.compose_file import load_compose

ROOT = Path(__file__).resolve().parents[3]
K8S = ROOT / "deploy" / "kubernetes"


def _docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]


def _of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def _proxy_config(docs: list[dict[str, Any]]) -> ProxyConfig:
    [cm] = _of_kind(docs, "ConfigMap")
    return load_config_text(cm["data"]["scalyproxy.yaml"], source=cm["metadata"]["name"])


def _proxy_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [deployment] = _of_kind(docs, "Deployment")
    spec = deployment["spec"]["template"]["spec"]
    found = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == "scalyproxy"]
    assert len(found) == 1
    return found[0]


def _check_probes_and_admin(container: dict[str, Any], cfg: ProxyConfig) -> None:
    assert cfg.admin_listen is not None
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["admin"] == cfg.admin_listen.port
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["args"][:2] == ["run", "--config"]
    mount = container["volumeMounts"][0]["mountPath"]
    assert container["args"][2].startswith(mount + "/") and "subPath" not in container["volumeMounts"][0]


@pytest.mark.parametrize("name", ["sidecar.yaml", "proxy-tier.yaml"])
def test_config_loads_and_probes_match(name: str) -> None:
    docs = _docs(name)
    cfg = _proxy_config(docs)
    assert cfg.collections
    _check_probes_and_admin(_proxy_container(docs), cfg)


def test_sidecar_app_points_at_localhost() -> None:
    docs = _docs("sidecar.yaml")
    cfg = _proxy_config(docs)
    assert cfg.listen == HostPort("127.0.0.1", 27017)
    [deployment] = _of_kind(docs, "Deployment")
    [app] = deployment["spec"]["template"]["spec"]["containers"]
    uri = {e["name"]: e["value"] for e in app["env"]}["MONGODB_URI"]
    assert uri.startswith(f"mongodb://localhost:{cfg.listen.port}/")
    assert _proxy_container(docs).get("restartPolicy") == "Always"  # a native sidecar


def test_tier_service_reaches_the_listener() -> None:
    docs = _docs("proxy-tier.yaml")
    cfg = _proxy_config(docs)
    container = _proxy_container(docs)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["mongodb"] == cfg.listen.port and cfg.listen.host == "0.0.0.0"
    [service] = _of_kind(docs, "Service")
    targets = {p["name"]: p["targetPort"] for p in service["spec"]["ports"]}
    assert set(targets.values()) <= set(ports)
    [deployment] = _of_kind(docs, "Deployment")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert len(cfg.upstream_hosts) == 2


def test_compose_and_image_expose_the_admin_port() -> None:
    compose = load_compose()  # ${VAR:-default} read as its default
    docker_cfg = load_config_text((ROOT / "config" / "docker.yaml").read_text())
    assert docker_cfg.admin_listen is not None
    port = docker_cfg.admin_listen.port
    assert f"{port}:{port}" in compose["services"]["scalyproxy"]["ports"]
    assert "/readyz" in " ".join(compose["services"]["scalyproxy"]["healthcheck"]["test"])
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE 27017 {port}" in dockerfile and f"127.0.0.1:{port}/readyz" in dockerfile
