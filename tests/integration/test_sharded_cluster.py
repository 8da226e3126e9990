"""The guard against real mongos (Docker tier). Skips with the reason where no
Docker engine answers; elsewhere it runs the seed scenario through the proxy."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from tests.conftest import BLOG_CONFIG, ProxyProcess
from tests.docker_tier import ShardedCluster, start_sharded_cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[ShardedCluster]:
    yield from start_sharded_cluster(str(BLOG_CONFIG))


@pytest.fixture(scope="module")
def mongos_proxy(cluster: ShardedCluster, proxy_factory: Callable[..., ProxyProcess]) -> ProxyProcess:
    return proxy_factory(BLOG_CONFIG, upstream=cluster.mongos_uri)


def test_collection_is_really_sharded(cluster: ShardedCluster) -> None:
    c: MongoClient = MongoClient(cluster.mongos_uri)
    try:
        meta = c.config.collections.find_one({"_id": "blog.blog_posts"})
        assert meta is not None and meta["key"] == {"author": 1, "title": 1}
    finally:
        c.close()


def test_seed_scenario_against_mongos(mongos_proxy: ProxyProcess) -> None:
    c: MongoClient = MongoClient(mongos_proxy.uri, serverSelectionTimeoutMS=20_000)
    try:
        coll = c.blog.blog_posts
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
        assert coll.find_one({"author": "Allan"}, comment="scaly:allow-global")["title"] == "My first post"
        # mongos itself reports that a targeted query went to one shard
        explained = c.blog.command(
            "explain", {"find": "blog_posts", "filter": {"author": "Allan", "title": "My first post"}}
        )
        assert explained["queryPlanner"]["winningPlan"]["stage"] in ("SINGLE_SHARD", "EXPRESS")
    finally:
        c.close()
