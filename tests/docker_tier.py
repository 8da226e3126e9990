"""The Docker tier: a real sharded MongoDB (config server, one shard, mongos)
started with testcontainers, brought up by the same ``init_cluster`` as
docker-compose's init service. Skips, saying why, where no Docker engine answers."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from scalyproxy.cluster_init import ReplicaSetSpec, init_cluster
from scalyproxy.config import load_config

MONGO_IMAGE = "mongo:8.0"


def docker_unavailable_reason() -> str | None:
    """None when a Docker engine answers, else why not."""
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
    return None


@dataclass
class ShardedCluster:
    mongos_uri: str


def start_sharded_cluster(config_path: str) -> Iterator[ShardedCluster]:
    """Yield a running cluster; every container and the network are removed afterwards."""
    reason = docker_unavailable_reason()
    if reason:
        pytest.skip(f"Docker tier skipped: {reason}")
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.network import Network

    with Network() as net:
        cfgsvr = (
            DockerContainer(MONGO_IMAGE)
            .with_command("mongod --configsvr --replSet cfg --port 27019 --bind_ip_all")
            .with_network(net).with_network_aliases("configsvr").with_exposed_ports(27019)
        )
        shard = (
            DockerContainer(MONGO_IMAGE)
            .with_command("mongod --shardsvr --replSet shard1 --port 27018 --bind_ip_all")
            .with_network(net).with_network_aliases("shard1").with_exposed_ports(27018)
        )
        mongos = (
            DockerContainer(MONGO_IMAGE)
            .with_command("mongos --configdb cfg/configsvr:27019 --port 27017 --bind_ip_all")
            .with_network(net).with_network_aliases("mongos").with_exposed_ports(27017)
        )
        with cfgsvr, shard:
            def published(c: DockerContainer, port: int) -> str:
                return f"{c.get_container_host_ip()}:{c.get_exposed_port(port)}"

            cfg = load_config(config_path)
            # mongos needs the config server's replica set initiated before it starts
            from scalyproxy.cluster_init import initiate_replica_set

            initiate_replica_set(ReplicaSetSpec("configsvr:27019", "cfg", published(cfgsvr, 27019)), configsvr=True)
            with mongos:
                mongos_addr = published(mongos, 27017)
                init_cluster(
                    cfg,
                    ReplicaSetSpec("configsvr:27019", "cfg", published(cfgsvr, 27019)),
                    [ReplicaSetSpec("shard1:27018", "shard1", published(shard, 27018))],
                    mongos_addr,
                )
                yield ShardedCluster(mongos_uri=f"mongodb://{mongos_addr}")
