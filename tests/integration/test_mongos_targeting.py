"""The targeting verdicts that follow mongos (issue 15, section 4), through the proxy to a real FerretDB.

What mongos targets is forwarded: the reply is the server's own, the same as
straight to FerretDB (a result, or FerretDB's own error where it does not
implement ``let``, ``$expr`` ``$eq`` or ``collation``: then the proxy did not
judge it, the server did). What mongos would broadcast is refused with
ScalyGlobalQuery and never reaches the server.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import OperationFailure

from tests.conftest import ProxyProcess

CONFIG = """\
policy:
  unknown_namespaces: allow
  targeting: full
  rules: {unindexed_query: off}
collections:
  tgt.single: {indexes: [{fields: [k], shard_key: true}]}
  tgt.nested: {indexes: [{fields: [a.b, c], shard_key: true}]}
  tgt.hashed: {indexes: [{fields: {a.b: hashed}, shard_key: true}]}
  tgt.rw: {indexes: [{fields: [a.x, b.y], shard_key: true}]}
  tgt.posts: {indexes: [{fields: [author, title], shard_key: true}]}
  tgt.loose:
    rules: {shard_key_write: off}
    indexes: [{fields: [author, title], shard_key: true}]
  tgt.french:
    collation: {locale: fr}
    indexes: [{fields: [name], shard_key: true}]
"""
SEED: dict[str, list[dict[str, Any]]] = {
    "single": [{"_id": 1, "k": 10}, {"_id": 2, "k": 11}],
    "nested": [{"_id": 1, "a": {"b": 10, "d": 40}, "c": 30}, {"_id": 2, "a": {"d": 40}, "c": 30}],
    "hashed": [{"_id": 1, "a": {"b": "x", "c": "x"}}],
    "rw": [{"_id": 1, "a": {"x": 100}, "b": {"y": "A"}}],
    "posts": [{"_id": 1, "author": "a", "title": "t", "body": "old"}],
    "loose": [{"_id": 1, "author": "a", "title": "t", "body": "old"}],
    "french": [{"_id": 1, "name": "léa", "n": 5}],
}


@pytest.fixture(scope="module")
def proxy(proxy_factory: Callable[..., ProxyProcess], tmp_path_factory: pytest.TempPathFactory) -> ProxyProcess:
    path: Path = tmp_path_factory.mktemp("targeting") / "targeting.yaml"
    path.write_text(CONFIG)
    return proxy_factory(path)


@pytest.fixture()
def clients(proxy: ProxyProcess, direct_client: MongoClient) -> Iterator[tuple[MongoClient, MongoClient]]:
    through: MongoClient = MongoClient(proxy.uri, serverSelectionTimeoutMS=10_000, appname="targeting-test")
    try:
        yield through, direct_client
    finally:
        through.close()


def reset(direct: MongoClient) -> None:
    for name, docs in SEED.items():
        direct.tgt[name].delete_many({})
        direct.tgt[name].insert_many([dict(d) for d in docs])


def outcome(call: Callable[[], Any]) -> Any:
    """What the client sees: the result, or the error's code and codeName."""
    try:
        result = call()
        return ("ok", list(result) if hasattr(result, "__iter__") and not isinstance(result, dict) else result)
    except OperationFailure as exc:
        return ("error", exc.code, (exc.details or {}).get("codeName"))


def same_as_direct(clients: tuple[MongoClient, MongoClient], act: Callable[[Collection], Any], coll: str) -> Any:
    """Run ``act`` straight against FerretDB and through the proxy, from the same data: same reply, same data after."""
    through, direct = clients
    reset(direct)
    expected = outcome(lambda: act(direct.tgt[coll]))
    after_direct = list(direct.tgt[coll].find({}, sort=[("_id", 1)]))
    reset(direct)
    got = outcome(lambda: act(through.tgt[coll]))
    assert got == expected
    assert list(direct.tgt[coll].find({}, sort=[("_id", 1)])) == after_direct
    assert got[0] == "ok" or got[1] < 29000, "the server answered, not the proxy"
    return got


def refused(clients: tuple[MongoClient, MongoClient], act: Callable[[Collection], Any], coll: str, code: int = 29001) -> None:
    through, direct = clients
    reset(direct)
    before = list(direct.tgt[coll].find({}, sort=[("_id", 1)]))
    with pytest.raises(OperationFailure) as info:
        act(through.tgt[coll])
    assert info.value.code == code, info.value.details
    assert list(direct.tgt[coll].find({}, sort=[("_id", 1)])) == before


LET = {"value": 100}
EXPR = {"$expr": {"$and": [{"$eq": ["$a.x", "$$value"]}, {"$eq": ["$b.y", "A"]}]}}


def test_all_of_one_value_is_forwarded(clients: tuple[MongoClient, MongoClient]) -> None:
    got = same_as_direct(clients, lambda c: c.find({"k": {"$all": [10]}}), "single")
    assert got == ("ok", [{"_id": 1, "k": 10}])


def test_an_embedded_document_lacking_the_key_sub_field_is_refused(clients: tuple[MongoClient, MongoClient]) -> None:
    refused(clients, lambda c: c.find_one({"a": {"d": 40}, "c": 30}), "nested")
    refused(clients, lambda c: c.find_one({"a": {"c": "x"}}), "hashed")
    refused(clients, lambda c: c.delete_one({"a": {"d": 40}, "c": 30}), "nested")
    same_as_direct(clients, lambda c: c.find({"a": {"b": 10, "d": 40}, "c": 30}), "nested")
    same_as_direct(clients, lambda c: c.find({"a": {"b": "x", "c": "x"}}), "hashed")


def test_replacement_by_exact_id_is_forwarded(clients: tuple[MongoClient, MongoClient]) -> None:
    replacement = {"author": "a", "title": "t", "body": "new"}
    got = same_as_direct(clients, lambda c: c.replace_one({"_id": 1}, replacement).raw_result, "loose")
    assert got[0] == "ok" and got[1]["n"] == 1
    # an upsert by _id takes mongos' two-phase protocol (a broadcast read): a global query
    refused(clients, lambda c: c.replace_one({"_id": 1}, replacement, upsert=True), "loose")
    # a filter that is not an exact _id is no better
    refused(clients, lambda c: c.replace_one({"_id": {"$gt": 0}}, replacement), "loose")


def test_replacement_by_id_answers_to_shard_key_write_under_its_own_name(clients: tuple[MongoClient, MongoClient]) -> None:
    """Not a global query any more; shard_key_write still objects: the filter does not pin the key."""
    refused(clients, lambda c: c.replace_one({"_id": 1}, {"author": "b", "title": "t"}), "posts", code=29002)


@pytest.mark.parametrize(
    "act",
    [
        lambda c: c.find(EXPR, let=LET),
        lambda c: c.aggregate([{"$match": EXPR}], let=LET),
        lambda c: c.update_one(EXPR, {"$set": {"z": 1}}, let=LET).raw_result,
        lambda c: c.update_many(EXPR, {"$set": {"z": 1}}, let=LET).raw_result,
        lambda c: c.delete_one(EXPR, let=LET).raw_result,
        lambda c: c.find_one_and_update(EXPR, {"$set": {"z": 1}}, let=LET),
    ],
    ids=["find", "aggregate", "update_one", "update_many", "delete_one", "find_one_and_update"],
)
def test_expr_equalities_with_let_are_forwarded(clients: tuple[MongoClient, MongoClient], act: Callable[[Collection], Any]) -> None:
    same_as_direct(clients, act, "rw")


def test_expr_with_an_undefined_variable_is_refused(clients: tuple[MongoClient, MongoClient]) -> None:
    refused(clients, lambda c: c.find_one(EXPR), "rw")


def test_the_collections_default_collation_decides_for_strings(clients: tuple[MongoClient, MongoClient]) -> None:
    refused(clients, lambda c: c.find_one({"name": "léa"}), "french")
    refused(clients, lambda c: c.find_one({"name": "léa"}, collation={"locale": "en"}), "french")
    same_as_direct(clients, lambda c: c.find({"name": "léa"}, collation={"locale": "simple"}), "french")
    same_as_direct(clients, lambda c: c.find({"name": 5}), "french")


def test_or_of_full_keys_is_a_range_for_mongos(clients: tuple[MongoClient, MongoClient]) -> None:
    """mongos unions the branches per field, then makes every field after the first multi-point one a range."""
    refused(clients, lambda c: c.find_one({"$or": [{"author": "a", "title": "t"}, {"author": "b", "title": "u"}]}), "posts")
    same_as_direct(clients, lambda c: c.find({"$or": [{"author": "a", "title": "t"}, {"author": "a", "title": "u"}]}), "posts")
