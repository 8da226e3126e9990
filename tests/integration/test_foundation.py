"""The foundation: pymongo's bson is the one in use, and the real backend answers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import bson
import pymongo
import pytest

from scalyproxy.backend import FerretDB

ROOT = Path(__file__).resolve().parents[2]


def test_bson_is_pymongos() -> None:
    # The PyPI package named "bson" shadows pymongo's; pymongo's has these.
    assert hasattr(bson, "_ENCODERS") or hasattr(bson, "encode")
    assert Path(bson.__file__).parent.parent == Path(pymongo.__file__).parent.parent
    from bson import codec_options, raw_bson  # noqa: F401 - only pymongo's bson has them

    assert bson.has_c(), "pymongo's C extension for bson is missing"


def test_ferretdb_answers(direct_client: pymongo.MongoClient) -> None:
    assert direct_client.admin.command("ping")["ok"] == 1.0
    coll = direct_client.foundation.items
    coll.drop()
    coll.insert_one({"k": 1, "v": "one"})
    assert coll.find_one({"k": 1}, {"_id": 0}) == {"k": 1, "v": "one"}


def test_ferretdb_stops_by_pid() -> None:
    server = FerretDB().start()
    proc = server.proc
    assert proc is not None and proc.poll() is None
    server.stop()
    assert proc.poll() is not None


def test_docker_compose_config_is_valid() -> None:
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine")
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    res = subprocess.run(
        [docker, "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "--quiet"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr


def test_compose_file_declares_the_sharded_cluster() -> None:
    """Structure of docker-compose.yml, checked without Docker (the engine may be absent)."""
    from scalyproxy.config import load_config
    from tests.compose_file import load_compose

    compose = load_compose()  # ${VAR:-default} read as its default
    services = compose["services"]
    assert {"configsvr", "shard1", "shard2", "mongos", "init", "scalyproxy"} <= set(services)
    assert "--configsvr" in services["configsvr"]["command"]
    assert all("--shardsvr" in services[s]["command"] for s in ("shard1", "shard2"))
    assert "27017:27017" in services["scalyproxy"]["ports"]
    assert services["scalyproxy"]["depends_on"]["init"]["condition"] == "service_completed_successfully"
    init_args = services["init"]["command"]
    assert init_args[0] == "init-cluster"
    cfg_path = next(a.split("=", 1)[1] for a in init_args if a.startswith("--config="))
    cfg = load_config(ROOT / "config" / Path(cfg_path).name)  # the file the image ships
    assert cfg.upstream == "mongodb://mongos:27017"
    assert any(c.shard_key is not None for c in cfg.collections.values())
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "USER scaly" in dockerfile and "HEALTHCHECK" in dockerfile and "/readyz" in dockerfile
