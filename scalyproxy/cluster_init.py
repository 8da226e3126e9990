"""``scalyproxy init-cluster``: bring a fresh sharded cluster to the state the
config declares.

Initiates the config-server and shard replica sets (one member each), adds the
shards through mongos, and shards every collection that the config declares
with a shard key (creating the shard-key index first; a collection that
declares a default ``collation`` is created with it, and its shard-key index
and ``shardCollection`` take the simple collation, as MongoDB requires).
Idempotent: what is already done is skipped. Used by docker-compose's one-shot
``init`` service, which the Docker tier of the test suite runs as it is. The
config-server set is initiated first: mongos listens only once it has a
primary, so ``init`` starts beside a mongos that is not yet healthy and waits
for it here.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pymongo
from pymongo.errors import CollectionInvalid, OperationFailure, PyMongoError

from scalyproxy.config import CollectionConfig, ProxyConfig, load_config
from scalyproxy.logs import log


@dataclass(frozen=True)
class ReplicaSetSpec:
    """``host:port/replSetName``; ``connect`` is where this process reaches the
    member when that differs from the name the cluster knows it by (a port
    published by Docker)."""

    host: str
    name: str
    connect: str | None = None

    @classmethod
    def parse(cls, text: str) -> ReplicaSetSpec:
        host, sep, name = text.partition("/")
        if not sep or not host or not name:
            raise ValueError(f"expected HOST:PORT/REPLSET, got {text!r}")
        return cls(host, name)


def _direct(host: str) -> pymongo.MongoClient[dict[str, Any]]:
    return pymongo.MongoClient(f"mongodb://{host}/?directConnection=true", serverSelectionTimeoutMS=60_000)


def initiate_replica_set(rs: ReplicaSetSpec, configsvr: bool = False, timeout_s: float = 120) -> None:
    client = _direct(rs.connect or rs.host)
    try:
        try:
            client.admin.command(
                "replSetInitiate",
                {"_id": rs.name, "configsvr": configsvr, "members": [{"_id": 0, "host": rs.host}]},
            )
            log.info("replset_initiated", replset=rs.name, host=rs.host)
        except OperationFailure as exc:
            if exc.code != 23:  # AlreadyInitialized
                raise
        deadline = time.monotonic() + timeout_s
        while not client.admin.command("hello").get("isWritablePrimary"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"replica set {rs.name} has no primary after {timeout_s:.0f}s")
            time.sleep(0.5)
    finally:
        client.close()


def shard_key_document(cfg: ProxyConfig, namespace: str) -> dict[str, Any] | None:
    """The ``key`` of ``shardCollection`` for a declared collection, or None."""
    coll = cfg.collections[namespace]
    index = coll.shard_key
    if index is None:
        return None
    return {field: direction for field, direction in index.keys}


def shard_collections(mongos: pymongo.MongoClient[dict[str, Any]], cfg: ProxyConfig) -> list[str]:
    """Shard every declared collection that has a shard key; return their namespaces."""
    done: list[str] = []
    for namespace, coll in cfg.collections.items():
        key = shard_key_document(cfg, namespace)
        index = coll.shard_key
        if key is None or index is None:
            continue
        db_name, _, coll_name = namespace.partition(".")
        try:
            mongos.admin.command("enableSharding", db_name)
        except OperationFailure as exc:
            if exc.code != 23:  # AlreadyInitialized on old servers
                raise
        unique = bool(index.unique) and not index.hashed
        simple = _create_with_collation(mongos, coll)
        mongos[db_name][coll_name].create_index(list(key.items()), unique=unique, **simple)
        mongos.admin.command("shardCollection", namespace, key=key, unique=unique, **simple)
        log.info("collection_sharded", namespace=namespace, key=key, unique=unique)
        done.append(namespace)
    return done


def _create_with_collation(mongos: pymongo.MongoClient[dict[str, Any]], coll: CollectionConfig) -> dict[str, Any]:
    """Create a collection that declares a non-simple default collation with it; then the shard-key
    index and shardCollection must name the simple collation: the keyword arguments for them."""
    if coll.simple_collation:
        return {}
    try:
        mongos[coll.db].create_collection(coll.name, collation=dict(coll.collation or {}))
    except CollectionInvalid:  # it exists already (idempotent)
        pass
    return {"collation": {"locale": "simple"}}


def init_cluster(
    cfg: ProxyConfig,
    config_server: ReplicaSetSpec,
    shards: Sequence[ReplicaSetSpec],
    mongos_host: str,
) -> list[str]:
    """Initiate the replica sets, add the shards, shard the declared collections."""
    initiate_replica_set(config_server, configsvr=True)
    for shard in shards:
        initiate_replica_set(shard)
    mongos: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        f"mongodb://{mongos_host}/", serverSelectionTimeoutMS=120_000
    )
    try:
        existing = {s["_id"] for s in mongos.admin.command("listShards").get("shards", [])}
        for shard in shards:
            if shard.name not in existing:
                mongos.admin.command("addShard", f"{shard.name}/{shard.host}", name=shard.name)
                log.info("shard_added", shard=shard.name, host=shard.host)
        return shard_collections(mongos, cfg)
    finally:
        mongos.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scalyproxy init-cluster", description=__doc__)
    p.add_argument("--config", required=True)
    p.add_argument("--config-server", required=True, help="HOST:PORT/REPLSET of the config server")
    p.add_argument("--shard", action="append", required=True, help="HOST:PORT/REPLSET, repeatable")
    p.add_argument("--mongos", required=True, help="HOST:PORT of mongos")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config)
        sharded = init_cluster(
            cfg,
            ReplicaSetSpec.parse(args.config_server),
            [ReplicaSetSpec.parse(s) for s in args.shard],
            args.mongos,
        )
    except (ValueError, OSError, PyMongoError, TimeoutError) as exc:
        log.error("init_cluster_failed", reason=str(exc))
        return 1
    print(f"cluster ready: {len(args.shard)} shard(s); sharded {', '.join(sharded) or 'nothing'}")
    return 0
