"""How the Docker tier drives docker-compose.yml, checked where no Docker engine runs:
the exact ``docker compose`` command testcontainers will run, and that the test
additions publish only ephemeral ports of 127.0.0.1 and change nothing else."""

from __future__ import annotations

import re

from tests.compose_file import ROOT, load_compose
from tests.docker_tier import COMPOSE_FILES, EPHEMERAL, _compose_class

FIXED_HOST_PORT = re.compile(r"^(?:[\d.]+:)?\d+:\d+$")  # HOST_PORT:CONTAINER_PORT, with or without an IP


def test_the_command_runs_the_users_file_under_its_own_project_name() -> None:
    compose = _compose_class()(context=str(ROOT), compose_file_name=COMPOSE_FILES, build=True, wait=True,
                               env_file="/x/compose.env", project_name="scalymongo-tests-1")
    assert compose.docker_compose_command() == [
        "docker", "compose", "-f", "docker-compose.yml", "-f", "tests/docker/compose.test.yml",
        "--env-file", "/x/compose.env", "--project-name", "scalymongo-tests-1",
    ]
    assert COMPOSE_FILES[0] == "docker-compose.yml" and all((ROOT / f).is_file() for f in COMPOSE_FILES)


def test_the_test_additions_only_publish_mongos() -> None:
    extra = load_compose(ROOT / COMPOSE_FILES[1])
    assert set(extra) == {"services"} and set(extra["services"]) == {"mongos"}
    assert extra["services"]["mongos"] == {"ports": ["127.0.0.1::27017"]}
    assert "ports" not in load_compose()["services"]["mongos"]  # so the addition is all it has


def test_every_port_the_tests_publish_is_ephemeral_on_localhost() -> None:
    services = load_compose(env=EPHEMERAL)["services"]
    services["mongos"]["ports"] = load_compose(ROOT / COMPOSE_FILES[1])["services"]["mongos"]["ports"]
    published = [p for svc in services.values() for p in svc.get("ports", [])]
    assert sorted(published) == ["127.0.0.1::27017", "127.0.0.1::27017", "127.0.0.1::9216"]  # mongos, proxy, admin
    assert not [p for p in published if FIXED_HOST_PORT.match(p)]
    users = [p for svc in load_compose()["services"].values() for p in svc.get("ports", [])]
    assert all(FIXED_HOST_PORT.match(p) for p in users)  # what `docker compose up` publishes for users
