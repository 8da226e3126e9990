"""The guard through the proxy, with pymongo against a real FerretDB (issue 5)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.errors import BulkWriteError, OperationFailure

from tests.conftest import BLOG_CONFIG, ProxyProcess

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

GLOBAL_MSG = "Some or all of the shard key was not specified.  Missing fields were title."
MARKER = "scaly:allow-global"


def refusal(exc: OperationFailure) -> dict[str, Any]:
    details = exc.details or {}
    return {"code": exc.code, "codeName": details.get("codeName"), "errmsg": details.get("errmsg")}


@pytest.fixture()
def client(blog_proxy: ProxyProcess) -> Iterator[MongoClient]:
    c: MongoClient = MongoClient(blog_proxy.uri, serverSelectionTimeoutMS=10_000, appname="guard-test")
    try:
        yield c
    finally:
        c.close()


@pytest.fixture()
def posts(client: MongoClient, direct_client: MongoClient) -> Any:
    direct_client.blog.blog_posts.delete_many({})
    return client.blog.blog_posts


def test_seed_scenario(posts: Any) -> None:
    posts.insert_one({"author": "Allan", "title": "My first post", "body": "Well, I don't actually have anything"})
    with pytest.raises(OperationFailure) as info:
        posts.find_one({"author": "Allan"})
    assert refusal(info.value) == {"code": 29001, "codeName": "ScalyGlobalQuery", "errmsg": GLOBAL_MSG}
    found = posts.find_one({"author": "Allan", "title": "My first post"})
    assert found is not None and found["body"].startswith("Well")
    assert posts.find_one({"author": "Allan"}, comment=MARKER)["title"] == "My first post"
    assert posts.find_one({"author": "Allan"}, comment=f"report job {MARKER}")["title"] == "My first post"


def test_connection_stays_usable_after_refusals(posts: Any) -> None:
    for _ in range(5):
        with pytest.raises(OperationFailure):
            posts.find_one({"title": "x"})
    posts.insert_one({"author": "a", "title": "t"})
    assert posts.count_documents({"author": "a", "title": "t"}) == 1


def test_batch_with_one_bad_document_is_refused_whole(posts: Any, direct_client: MongoClient) -> None:
    docs = [{"author": f"a{i}", "title": f"t{i}", "unique_views": i} for i in range(1000)]
    docs[537]["unique_views"] = "lots"
    with pytest.raises((OperationFailure, BulkWriteError)) as info:
        posts.insert_many(docs)
    text = str(info.value)
    assert "ScalySchemaViolation" in text or "unique_views: expected int, got string" in text
    assert direct_client.blog.blog_posts.count_documents({}) == 0
    posts.insert_many(docs[:537])
    assert direct_client.blog.blog_posts.count_documents({}) == 537


def test_missing_shard_key_field_on_insert(posts: Any, direct_client: MongoClient) -> None:
    with pytest.raises(OperationFailure) as info:
        posts.insert_one({"author": "only-author"})
    assert refusal(info.value)["codeName"] in ("ScalyShardKeyViolation", "ScalySchemaViolation")
    assert "title" in str(refusal(info.value)["errmsg"])
    assert direct_client.blog.blog_posts.count_documents({}) == 0


def test_update_changing_the_shard_key_is_refused(posts: Any, direct_client: MongoClient) -> None:
    posts.insert_one({"author": "a", "title": "t"})
    with pytest.raises(OperationFailure) as info:
        posts.update_one({"author": "a", "title": "t"}, {"$set": {"title": "other"}})
    assert refusal(info.value)["codeName"] == "ScalyShardKeyViolation"
    assert direct_client.blog.blog_posts.find_one({"author": "a"})["title"] == "t"


def test_schema_on_update_operators(posts: Any, direct_client: MongoClient) -> None:
    posts.insert_one({"author": "a", "title": "t", "comments": []})
    with pytest.raises(OperationFailure) as info:
        posts.update_one(
            {"author": "a", "title": "t"},
            {"$push": {"comments": {"author": "b", "comment": "hi", "rank": "high"}}},
        )
    assert refusal(info.value)["codeName"] == "ScalySchemaViolation"
    assert "rank: expected int, got string" in str(refusal(info.value)["errmsg"])
    posts.update_one(
        {"author": "a", "title": "t"}, {"$push": {"comments": {"author": "b", "comment": "hi", "rank": 3}}}
    )
    assert direct_client.blog.blog_posts.find_one({"author": "a"})["comments"][0]["rank"] == 3


def test_aggregate_and_explain_are_checked(posts: Any, client: MongoClient) -> None:
    posts.insert_one({"author": "a", "title": "t"})
    with pytest.raises(OperationFailure) as info:
        list(posts.aggregate([{"$match": {"author": "a"}}]))
    assert refusal(info.value)["codeName"] == "ScalyGlobalQuery"
    assert len(list(posts.aggregate([{"$match": {"author": "a", "title": "t"}}]))) == 1
    with pytest.raises(OperationFailure) as info:
        client.blog.command("explain", {"find": "blog_posts", "filter": {"author": "a"}})
    assert refusal(info.value)["codeName"] == "ScalyGlobalQuery"


def test_unknown_namespaces_pass(client: MongoClient) -> None:
    client.other.things.insert_one({"x": 1})
    assert client.other.things.find_one({"x": 1}) is not None


# -- every rule once in enforce and once in warn ------------------------------------

RULES_CONFIG = BLOG_CONFIG.read_text()


def config_with(tmp_path: Path, name: str, policy_rules: dict[str, str], deny: list[str] | None = None) -> Path:
    text = RULES_CONFIG
    for rule, mode in policy_rules.items():
        text = text.replace(f"    {rule}: enforce", f"    {rule}: {mode}").replace(
            f"    {rule}: warn", f"    {rule}: {mode}"
        )
    text = text.replace("rules: {unindexed_query: off}", "rules: {}")
    if deny is not None:
        text = text.replace("deny_commands: []", f"deny_commands: {json.dumps(deny)}")
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


CASES: list[tuple[str, str, Callable[[Any], Any]]] = [
    ("global_query", "ScalyGlobalQuery", lambda c: c.blog.blog_posts.find_one({"author": "w"})),
    ("shard_key_write", "ScalyShardKeyViolation",
     lambda c: c.blog.blog_posts.update_one({"author": "w", "title": "w"}, {"$set": {"author": "z"}})),
    ("schema", "ScalySchemaViolation",
     lambda c: c.blog.blog_posts.insert_one({"author": "w", "title": "w2", "unique_views": "x"})),
    ("unindexed_query", "ScalyCommandDenied",
     lambda c: c.blog.blog_posts.find_one({"author": "w", "title": "w", "body": "b"}, sort=[("body", 1)])),
]


@pytest.mark.parametrize("rule,code_name,op", CASES, ids=[c[0] for c in CASES])
def test_rule_enforce_and_warn(
    rule: str, code_name: str, op: Callable[[Any], Any], tmp_path: Path,
    proxy_factory: Callable[..., ProxyProcess], direct_client: MongoClient,
) -> None:
    direct_client.blog.blog_posts.delete_many({})
    direct_client.blog.blog_posts.insert_one({"author": "w", "title": "w", "body": "b"})
    enforce = proxy_factory(config_with(tmp_path, "enforce", {rule: "enforce"}))
    warn = proxy_factory(config_with(tmp_path, "warn", {rule: "warn"}))
    with MongoClient(enforce.uri, serverSelectionTimeoutMS=10_000) as c:
        with pytest.raises(OperationFailure) as info:
            op(c)
        assert refusal(info.value)["codeName"] == code_name
    with MongoClient(warn.uri, serverSelectionTimeoutMS=10_000, appname="shadow") as c:
        op(c)  # forwarded: the server answers
    warned = [json.loads(line) for line in warn.log_text().splitlines() if '"event":"warned"' in line]
    assert any(w["rule"] == rule and w["app"] == "shadow" for w in warned), warn.log_text()[-2000:]


def test_deny_commands(tmp_path: Path, proxy_factory: Callable[..., ProxyProcess]) -> None:
    p = proxy_factory(config_with(tmp_path, "deny", {}, deny=["dropDatabase"]))
    with MongoClient(p.uri, serverSelectionTimeoutMS=10_000) as c:
        with pytest.raises(OperationFailure) as info:
            c.drop_database("blog")
        assert refusal(info.value)["codeName"] == "ScalyCommandDenied"
        assert c.admin.command("ping")["ok"] == 1.0  # still usable
