"""The Docker tier: docker-compose.yml itself, the file the README tells users to run,
brought up with testcontainers' DockerCompose (``docker compose up --build --wait``):
config server replica set, both shard replica sets, mongos, the one-shot ``init``
(``scalyproxy init-cluster``) and the compose file's own scalyproxy service.

Only what a test needs is added, by tests/docker/compose.test.yml and variables:
mongos is published too, and every published port is an ephemeral port of
127.0.0.1 read back from ``docker compose ps``. The project gets its own name, so a
test run never touches a cluster a user started from the same file.

Skips, saying why, where no Docker engine (or no ``docker compose``) answers.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILES = ["docker-compose.yml", "tests/docker/compose.test.yml"]
EPHEMERAL = {"SCALY_PROXY_PUBLISH": "127.0.0.1:", "SCALY_ADMIN_PUBLISH": "127.0.0.1:"}
PROXY_PORT, ADMIN_PORT, MONGOS_PORT = 27017, 9216, 27017  # inside the containers


def docker_unavailable_reason() -> str | None:
    """None when a Docker engine and ``docker compose`` answer, else why not."""
    try:
        import docker
    except ImportError as exc:  # pragma: no cover - testcontainers depends on it
        return f"the docker Python package is missing ({exc})"
    host = os.environ.get("DOCKER_HOST", "")
    if not host and not os.path.exists("/var/run/docker.sock"):
        return "no Docker engine: DOCKER_HOST is unset and /var/run/docker.sock does not exist"
    client = None
    try:
        client = docker.from_env(timeout=5)
        client.ping()
    except Exception as exc:  # docker raises several kinds when no engine runs
        return f"no Docker engine answers ({type(exc).__name__}: {exc})"
    finally:
        if client is not None:
            client.close()
    cli = shutil.which("docker")
    if cli is None:
        return "no docker command on PATH (testcontainers drives `docker compose`)"
    probe = subprocess.run([cli, "compose", "version"], capture_output=True, text=True, timeout=30)
    if probe.returncode != 0:
        return f"`docker compose` does not run: {(probe.stderr or probe.stdout).strip()[:200]}"
    return None


@dataclass(frozen=True)
class ComposeCluster:
    """Where the running compose project answers, from this machine."""

    proxy_uri: str  # the compose file's scalyproxy service
    admin_url: str  # its admin listener (http://HOST:PORT)
    mongos_uri: str  # mongos, behind the proxy
    project: str


def _compose_class() -> type:
    from testcontainers.compose import DockerCompose

    @dataclass
    class ProjectCompose(DockerCompose):
        """DockerCompose under its own project name (``--project-name`` beats the
        file's ``name: scalymongo``)."""

        project_name: str = "scalymongo-tests"

        @cached_property
        def compose_command_property(self) -> list[str]:
            base: list[str] = DockerCompose.compose_command_property.func(self)
            return [*base, "--project-name", self.project_name]

    return ProjectCompose


def start_compose_cluster() -> Iterator[ComposeCluster]:
    """Yield the running cluster; ``docker compose down --volumes`` afterwards."""
    reason = docker_unavailable_reason()
    if reason:
        pytest.skip(f"Docker tier skipped: {reason}")
    with tempfile.TemporaryDirectory(prefix="scaly-compose-") as tmp:
        env_file = Path(tmp) / "compose.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in EPHEMERAL.items()))
        project = f"scalymongo-tests-{os.getpid()}"
        compose = _compose_class()(
            context=str(ROOT), compose_file_name=COMPOSE_FILES, build=True, wait=True,
            env_file=str(env_file), project_name=project,
        )
        try:
            compose.start()  # up --build --wait: every service healthy, init exited 0
        except subprocess.CalledProcessError as exc:
            logs = _logs(compose)
            compose.stop()
            pytest.fail(f"docker compose up failed ({exc.returncode}):\n{exc.stderr.decode(errors='replace')[-3000:]}"
                        f"\n{logs}", pytrace=False)
        try:
            yield ComposeCluster(
                proxy_uri=f"mongodb://{_published(compose, 'scalyproxy', PROXY_PORT)}",
                admin_url=f"http://{_published(compose, 'scalyproxy', ADMIN_PORT)}",
                mongos_uri=f"mongodb://{_published(compose, 'mongos', MONGOS_PORT)}",
                project=project,
            )
        finally:
            compose.stop()


def _published(compose: Any, service: str, port: int) -> str:
    host, published = compose.get_service_host_and_port(service, port)
    assert published, f"{service}:{port} is not published"
    return f"{host or '127.0.0.1'}:{published}"


def _logs(compose: Any) -> str:
    try:
        out, err = compose.get_logs()
    except subprocess.CalledProcessError as exc:
        return f"(no logs: {exc})"
    return (out + err)[-8000:]
