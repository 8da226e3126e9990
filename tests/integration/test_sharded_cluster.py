"""The Docker tier: docker-compose.yml as users run it (tests/docker_tier.py), a real
sharded MongoDB 8.0 with two shards, brought up by the compose file's own ``init``
service and guarded by the compose file's own scalyproxy (config/docker.yaml).

Skips with the reason where no Docker engine answers. What it covers is listed in
the README ("A real sharded cluster (Docker)").
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from tests.docker_tier import ComposeCluster

pytestmark = pytest.mark.docker

Client = MongoClient[dict[str, Any]]
NS = "blog.blog_posts"
MARKER = "scaly:allow-global"  # policy.allow_marker in config/docker.yaml


@pytest.fixture(scope="module")
def mongos(compose_cluster: ComposeCluster) -> Iterator[Client]:
    c: Client = MongoClient(compose_cluster.mongos_uri, serverSelectionTimeoutMS=30_000)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture(scope="module")
def proxied(compose_cluster: ComposeCluster) -> Iterator[Client]:
    """A client of the compose file's scalyproxy service."""
    c: Client = MongoClient(compose_cluster.proxy_uri, serverSelectionTimeoutMS=30_000)
    try:
        yield c
    finally:
        c.close()


def test_init_added_both_shards(mongos: Client) -> None:
    shards = {s["_id"]: s["host"] for s in mongos.admin.command("listShards")["shards"]}
    assert shards == {"shard1": "shard1/shard1:27018", "shard2": "shard2/shard2:27018"}


def test_init_sharded_what_config_docker_yaml_declares(mongos: Client) -> None:
    meta = mongos.config.collections.find_one({"_id": NS})
    assert meta is not None and meta["key"] == {"author": 1, "title": 1}
    assert meta.get("unique") is True  # the shard-key index is declared unique


def test_the_compose_proxy_is_ready(compose_cluster: ComposeCluster) -> None:
    with urllib.request.urlopen(compose_cluster.admin_url + "/readyz", timeout=10) as resp:
        assert resp.status == 200
        assert json.loads(resp.read())["ready"] is True


def test_seed_scenario_through_the_compose_proxy(proxied: Client, mongos: Client) -> None:
    coll = proxied.blog.blog_posts
    coll.delete_many({"author": "Allan", "title": "My first post"})
    coll.insert_one({"author": "Allan", "title": "My first post", "body": "hi"})
    with pytest.raises(OperationFailure) as info:
        coll.find_one({"author": "Allan"})
    assert info.value.details is not None
    assert info.value.details["codeName"] == "ScalyGlobalQuery"
    assert str(info.value.details["errmsg"]) == (
        "Some or all of the shard key was not specified.  Missing fields were title."
    )
    assert coll.find_one({"author": "Allan", "title": "My first post"})["body"] == "hi"
    assert coll.find_one({"author": "Allan"}, comment=MARKER)["title"] == "My first post"
    with pytest.raises(OperationFailure) as refused:  # a write without the full shard key
        coll.insert_one({"author": "Allan", "body": "no title"})
    assert refused.value.details is not None and refused.value.details["code"] in (29002, 29003)
    assert mongos.blog.blog_posts.count_documents({"author": "Allan", "body": "no title"}) == 0


def _shards_in_plan(mongos: Client, query: dict[str, Any]) -> tuple[str, set[str]]:
    plan = mongos.blog.command("explain", {"find": "blog_posts", "filter": query})["queryPlanner"]["winningPlan"]
    return plan["stage"], {s["shardName"] for s in plan.get("shards", [])}


def test_data_on_both_shards_targeted_or_allowed(proxied: Client, mongos: Client) -> None:
    """With a chunk on each shard: a targeted query goes to one shard, a global one with
    the allow marker gathers from both, and without the marker the proxy refuses it."""
    primary = mongos.config.databases.find_one({"_id": "blog"})["primary"]
    other = ({"shard1", "shard2"} - {primary}).pop()
    split = {"author": "m", "title": ""}
    mongos.admin.command("split", NS, middle=split)  # a fresh cluster: one chunk, on the primary shard
    mongos.admin.command("moveRange", NS, min=split, toShard=other)
    coll = proxied.blog.blog_posts
    coll.delete_many({"author": {"$in": ["anna", "zoe"]}, "title": "both"}, comment=MARKER)
    coll.insert_many([{"author": "anna", "title": "both"}, {"author": "zoe", "title": "both"}])

    assert _shards_in_plan(mongos, {"author": "anna", "title": "both"}) == ("SINGLE_SHARD", {primary})
    assert _shards_in_plan(mongos, {"author": "zoe", "title": "both"}) == ("SINGLE_SHARD", {other})
    stage, shards = _shards_in_plan(mongos, {"title": "both"})
    assert stage == "SHARD_MERGE" and shards == {"shard1", "shard2"}

    found = {d["author"] for d in coll.find({"title": "both"}, comment=MARKER)}
    assert found == {"anna", "zoe"}
    with pytest.raises(OperationFailure) as info:
        coll.find_one({"title": "both"})
    assert info.value.details is not None and info.value.details["codeName"] == "ScalyGlobalQuery"
