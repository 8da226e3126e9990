"""Rule 1 (global_query): targeting by shard key, the allow marker, explain, sub-pipelines."""

from __future__ import annotations

from typing import Any

import pytest
from bson.regex import Regex

from scalyproxy.config import load_config_text
from scalyproxy.policy import Engine, global_query_message

from .conftest import merged, run

MARK = "scaly:allow-global"
EXACT_TITLE = "Some or all of the shard key was not specified.  Missing fields were title."


def find(filt: Any = None, db: str = "blog", coll: str = "blog_posts", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"find": coll}
    if filt is not None:
        body["filter"] = filt
    body.update(extra)
    body["$db"] = db
    return body


# (id, command body, None when allowed / the missing fields of the refusal)
CASES: list[tuple[str, dict[str, Any], str | None]] = [
    ("full key", find({"author": "a", "title": "t"}), None),
    ("author only", find({"author": "a"}), "title"),
    ("title only", find({"title": "t"}), "author"),
    ("empty filter", find({}), "author, title"),
    ("no filter", find(), "author, title"),
    ("$eq both", find({"author": {"$eq": "a"}, "title": {"$eq": "t"}}), None),
    ("$in of literals", find({"author": "a", "title": {"$in": ["x", "y"]}}), None),
    ("$in with a regex", find({"author": "a", "title": {"$in": ["x", Regex("^y")]}}), "title"),
    ("$and", find({"$and": [{"author": "a"}, {"title": "t"}]}), None),
    ("nested $and", find({"$and": [{"$and": [{"author": "a"}]}, {"title": "t"}]}), None),
    ("$or of points on both fields: mongos widens title", find({"$or": [{"author": "a", "title": "t"}, {"author": "b", "title": "u"}]}), "title"),
    ("$or of full keys, one author", find({"$or": [{"author": "a", "title": "t"}, {"author": "a", "title": "u"}]}), None),
    ("$or one untargeted branch", find({"$or": [{"author": "a", "title": "t"}, {"author": "b"}]}), "title"),
    ("key part outside $or", find({"author": "a", "$or": [{"title": "t"}, {"title": "u"}]}), None),
    ("$or inside $and", find({"$and": [{"author": "a"}, {"$or": [{"title": "t"}, {"title": "u"}]}]}), None),
    ("range in full mode", find({"author": "a", "title": {"$gt": "t"}}), "title"),
    ("regex literal", find({"author": "a", "title": Regex("^t")}), "title"),
    ("array value: the array and its first element", find({"author": "a", "title": ["t"]}), None),
    ("$all of one value", find({"author": "a", "title": {"$all": ["t"]}}), None),
    ("$in on both fields", find({"author": {"$in": ["a", "b"]}, "title": {"$in": ["t", "u"]}}), "title"),
    ("$ne", find({"author": "a", "title": {"$ne": "t"}}), "title"),
    ("$nor does not target", find({"author": "a", "$nor": [{"title": "t"}]}), "title"),
    ("$expr $eq with a constant", find({"author": "a", "$expr": {"$eq": ["$title", "t"]}}), None),
    ("$expr $eq with a let variable", find({"author": "a", "$expr": {"$eq": ["$title", "$$t"]}}, let={"t": "x"}), None),
    ("$expr $eq with an undefined variable", find({"author": "a", "$expr": {"$eq": ["$title", "$$t"]}}), "title"),
    ("$expr $eq of two fields", find({"author": "a", "$expr": {"$eq": ["$title", "$body"]}}), "title"),
    ("eq plus range", find({"author": "a", "title": {"$gte": "a", "$eq": "t"}}), None),
    ("null equality", find({"author": "a", "title": None}), None),
    ("simple collation", find({"author": "a", "title": "t"}, collation={"locale": "simple"}), None),
    ("non-simple collation, strings", find({"author": "a", "title": "t"}, collation={"locale": "fr"}), "author, title"),
    ("string marker", find({"author": "a"}, comment=f"report {MARK} ok"), None),
    ("marker in document comment", find({"author": "a"}, comment={"why": {"tags": ["x", MARK]}}), None),
    ("comment without marker", find({"author": "a"}, comment={"why": "batch job"}), "title"),
    ("marker as a key only", find({"author": "a"}, comment={MARK: 1}), "title"),
    ("other database", find({"author": "a"}, db="other"), None),
    ("undeclared collection", find({"x": 1}, coll="other"), None),
    ("count untargeted", {"count": "blog_posts", "query": {"author": "a"}, "$db": "blog"}, "title"),
    ("count targeted", {"count": "blog_posts", "query": {"author": "a", "title": "t"}, "$db": "blog"}, None),
    ("count without query", {"count": "blog_posts", "$db": "blog"}, "author, title"),
    ("distinct untargeted", {"distinct": "blog_posts", "key": "body", "query": {"title": "t"}, "$db": "blog"}, "author"),
    ("distinct targeted", {"distinct": "blog_posts", "key": "body", "query": {"title": "t", "author": "a"}, "$db": "blog"}, None),
    ("getMore needs no marker", {"getMore": 12345, "collection": "blog_posts", "$db": "blog"}, None),
    ("findandmodify alias", {"findandmodify": "blog_posts", "query": {"author": "a"}, "remove": True, "$db": "blog"}, "title"),
    ("findAndModify targeted", {"findAndModify": "blog_posts", "query": {"author": "a", "title": "t"}, "remove": True, "$db": "blog"}, None),
    ("findAndModify marker", {"findAndModify": "blog_posts", "query": {}, "remove": True, "comment": MARK, "$db": "blog"}, None),
]


@pytest.mark.parametrize(("body", "missing"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_targeting(blog_engine: Engine, body: dict[str, Any], missing: str | None) -> None:
    verdict = run(blog_engine, body)
    if missing is None:
        assert verdict.allowed, verdict.refusal
        return
    assert verdict.refusal is not None
    assert verdict.refusal.rule == "global_query"
    assert verdict.refusal.code == 29001 and verdict.refusal.code_name == "ScalyGlobalQuery"
    assert verdict.refusal.message == f"Some or all of the shard key was not specified.  Missing fields were {missing}."


def test_exact_seed_message(blog_engine: Engine) -> None:
    verdict = run(blog_engine, find({"author": "a"}))
    assert verdict.refusal is not None
    assert verdict.refusal.message == EXACT_TITLE
    assert verdict.refusal.namespace == "blog.blog_posts"
    assert verdict.refusal.command == "find"
    assert verdict.refusal.shape == '{"author":"string"}'
    assert global_query_message(["a", "b"]) == "Some or all of the shard key was not specified.  Missing fields were a, b."


def test_marker_used_is_reported(blog_engine: Engine) -> None:
    used = run(blog_engine, find({"author": "a"}, comment=MARK))
    assert used.allowed and used.marker_used
    targeted = run(blog_engine, find({"author": "a", "title": "t"}, comment=MARK))
    assert targeted.allowed and not targeted.marker_used


def test_custom_marker() -> None:
    text = "policy: {allow_marker: OVERRIDE}\ncollections:\n  d.c: {indexes: [{fields: [k], shard_key: true}]}\n"
    engine = Engine.from_config(load_config_text(text))
    assert run(engine, find({}, db="d", coll="c", comment="OVERRIDE!")).allowed
    assert not run(engine, find({}, db="d", coll="c", comment=MARK)).allowed


def test_aliases_name_the_canonical_command(blog_engine: Engine) -> None:
    verdict = run(blog_engine, {"findandmodify": "blog_posts", "query": {}, "update": {"$set": {"body": "x"}}, "$db": "blog"})
    assert verdict.command == "findAndModify"
    assert verdict.refusal is not None and verdict.refusal.command == "findAndModify"


DOTTED: list[tuple[str, dict[str, Any], str | None]] = [
    ("dotted paths", {"customer.region": "eu", "customer.id": 1}, None),
    ("embedded document", {"customer": {"region": "eu", "id": 1}}, None),
    ("embedded document in $eq", {"customer": {"$eq": {"region": "eu", "id": 1}}}, None),
    ("embedded documents in $in", {"customer": {"$in": [{"region": "eu", "id": 1}, {"region": "us", "id": 2}]}}, "customer.region, customer.id"),
    ("one embedded document in $in", {"customer": {"$in": [{"region": "eu", "id": 1}]}}, None),
    ("embedded document lacking a key field", {"customer": {"region": "eu"}}, "customer.id"),
    ("embedded document and its own dotted path conflict", {"customer": {"region": "eu", "id": 1}, "customer.id": 1}, "customer.region, customer.id"),
    ("dotted paths beside a conflicting embedded document", {"customer": {"region": "eu"}, "customer.region": "eu", "customer.id": 1}, None),
    ("embedded in $and", {"$and": [{"customer": {"region": "eu", "id": 1}}]}, None),
    ("one dotted path", {"customer.region": "eu"}, "customer.id"),
    ("operator inside the subdocument", {"customer": {"region": {"$gt": "a"}, "id": 1}}, "customer.region"),
    ("subdocument range", {"customer": {"$gt": {"region": "eu"}}}, "customer.region, customer.id"),
]


@pytest.mark.parametrize(("filt", "missing"), [c[1:] for c in DOTTED], ids=[c[0] for c in DOTTED])
def test_dotted_shard_key(engine: Engine, filt: dict[str, Any], missing: str | None) -> None:
    verdict = run(engine, find(filt, db="shop", coll="orders"))
    if missing is None:
        assert verdict.allowed, verdict.refusal
    else:
        assert verdict.refusal is not None and verdict.refusal.rule == "global_query"
        assert verdict.refusal.message.endswith(f"Missing fields were {missing}.")


HASHED: list[tuple[str, dict[str, Any], bool]] = [
    ("equality", {"email": "a@b"}, True),
    ("$in", {"email": {"$in": ["a@b", "c@d"]}}, True),
    ("range", {"email": {"$gt": "a"}}, False),
    ("range and lt", {"email": {"$gte": "a", "$lt": "b"}}, False),
]


@pytest.mark.parametrize("prefix", [False, True], ids=["full", "prefix"])
@pytest.mark.parametrize(("filt", "allowed"), [c[1:] for c in HASHED], ids=[c[0] for c in HASHED])
def test_hashed_key_only_by_equality(filt: dict[str, Any], allowed: bool, prefix: bool) -> None:
    engine = Engine.from_config(merged(targeting="prefix" if prefix else "full"))
    assert run(engine, find(filt, db="shop", coll="users")).allowed is allowed


def test_collation_only_affects_strings(engine: Engine) -> None:
    numeric = find({"region": 1, "day": 2}, db="shop", coll="plain", collation={"locale": "fr", "strength": 1})
    assert run(engine, numeric).allowed
    text = find({"region": "eu", "day": 2}, db="shop", coll="plain", collation={"locale": "fr"})
    verdict = run(engine, text)
    assert verdict.refusal is not None and verdict.refusal.message.endswith("Missing fields were region.")


PREFIX: list[tuple[str, dict[str, Any], bool]] = [
    ("first field equality", find({"author": "a"}), True),
    ("first field range", find({"author": {"$gt": "a"}}), True),
    ("second field only", find({"title": "t"}), False),
    ("empty", find({}), False),
    ("$or of prefixes", find({"$or": [{"author": "a"}, {"author": {"$lt": "c"}}]}), True),
    ("$or with a branch missing", find({"$or": [{"author": "a"}, {"title": "t"}]}), False),
    ("range on ranged compound", find({"region": {"$lt": 5}}, db="shop", coll="plain"), True),
]


@pytest.mark.parametrize(("body", "allowed"), [c[1:] for c in PREFIX], ids=[c[0] for c in PREFIX])
def test_prefix_targeting(body: dict[str, Any], allowed: bool) -> None:
    engine = Engine.from_config(merged(targeting="prefix"))
    assert run(engine, body).allowed is allowed


def agg(pipeline: list[Any], coll: Any = "blog_posts", db: str = "blog", **extra: Any) -> dict[str, Any]:
    return {"aggregate": coll, "pipeline": pipeline, "cursor": {}, **extra, "$db": db}


TARGETED_MATCH = {"$match": {"author": "a", "title": "t"}}
AGGREGATES: list[tuple[str, dict[str, Any], str | None]] = [
    ("first $match targeted", agg([TARGETED_MATCH, {"$group": {"_id": "$body"}}]), None),
    ("first $match untargeted", agg([{"$match": {"author": "a"}}]), "blog.blog_posts"),
    ("$match not first", agg([{"$sort": {"x": 1}}, TARGETED_MATCH]), "blog.blog_posts"),
    ("empty pipeline", agg([]), "blog.blog_posts"),
    ("$collStats first", agg([{"$collStats": {"count": {}}}]), None),
    ("$geoNear query targeted", agg([{"$geoNear": {"near": [0, 0], "query": {"author": "a", "title": "t"}}}]), None),
    ("marker", agg([], comment=MARK), None),
    (
        "$lookup by foreignField only",
        agg([TARGETED_MATCH, {"$lookup": {"from": "blog_posts", "localField": "x", "foreignField": "author", "as": "y"}}]),
        "blog.blog_posts",
    ),
    (
        "$lookup pipeline targeted",
        agg([TARGETED_MATCH, {"$lookup": {"from": "blog_posts", "pipeline": [TARGETED_MATCH], "as": "y"}}]),
        None,
    ),
    (
        "$lookup foreignField plus $match",
        agg([TARGETED_MATCH, {"$lookup": {"from": "blog_posts", "localField": "x", "foreignField": "author", "pipeline": [{"$match": {"title": "t"}}], "as": "y"}}]),
        None,
    ),
    (
        "$lookup with $expr equalities",
        agg([TARGETED_MATCH, {"$lookup": {"from": "blog_posts", "let": {"a": "$a", "t": "$t"}, "pipeline": [{"$match": {"$expr": {"$and": [{"$eq": ["$author", "$$a"]}, {"$eq": ["$title", "$$t"]}]}}}], "as": "y"}}]),
        None,
    ),
    (
        "$lookup pipeline untargeted",
        agg([TARGETED_MATCH, {"$lookup": {"from": "blog_posts", "pipeline": [{"$match": {"author": "a"}}], "as": "y"}}]),
        "blog.blog_posts",
    ),
    (
        "$lookup into an unsharded collection",
        agg([TARGETED_MATCH, {"$lookup": {"from": "logs", "localField": "x", "foreignField": "msg", "as": "y"}}]),
        None,
    ),
    (
        "$lookup from another database",
        agg([{"$lookup": {"from": {"db": "blog", "coll": "blog_posts"}, "pipeline": [], "as": "y"}}], coll="logs", db="shop"),
        "blog.blog_posts",
    ),
    (
        "$lookup nested in a $lookup",
        agg([TARGETED_MATCH, {"$lookup": {"from": "logs", "pipeline": [{"$lookup": {"from": "blog_posts", "pipeline": [], "as": "z"}}], "as": "y"}}]),
        "blog.blog_posts",
    ),
    (
        "$graphLookup untargeted",
        agg([TARGETED_MATCH, {"$graphLookup": {"from": "blog_posts", "startWith": "$a", "connectFromField": "a", "connectToField": "author", "as": "g"}}]),
        "blog.blog_posts",
    ),
    (
        "$graphLookup with restrictSearchWithMatch",
        agg([TARGETED_MATCH, {"$graphLookup": {"from": "blog_posts", "startWith": "$a", "connectFromField": "a", "connectToField": "author", "as": "g", "restrictSearchWithMatch": {"title": "t"}}}]),
        None,
    ),
    ("$unionWith a name", agg([TARGETED_MATCH, {"$unionWith": "blog_posts"}]), "blog.blog_posts"),
    ("$unionWith targeted", agg([TARGETED_MATCH, {"$unionWith": {"coll": "blog_posts", "pipeline": [TARGETED_MATCH]}}]), None),
    (
        "$facet with a $lookup",
        agg([TARGETED_MATCH, {"$facet": {"a": [{"$lookup": {"from": "blog_posts", "pipeline": [], "as": "y"}}]}}]),
        "blog.blog_posts",
    ),
    ("$facet harmless", agg([TARGETED_MATCH, {"$facet": {"a": [{"$count": "n"}]}}]), None),
    (
        "undeclared source, sharded $lookup",
        agg([{"$lookup": {"from": "blog_posts", "localField": "x", "foreignField": "title", "as": "y"}}], coll="other"),
        "blog.blog_posts",
    ),
    ("database-level aggregate", agg([{"$documents": [{"a": 1}]}, {"$unionWith": "blog_posts"}], coll=1), "blog.blog_posts"),
]


@pytest.mark.parametrize(("body", "refused_ns"), [c[1:] for c in AGGREGATES], ids=[c[0] for c in AGGREGATES])
def test_aggregate(engine: Engine, body: dict[str, Any], refused_ns: str | None) -> None:
    verdict = run(engine, body)
    if refused_ns is None:
        assert verdict.allowed, verdict.refusal
    else:
        assert verdict.refusal is not None and verdict.refusal.rule == "global_query"
        assert verdict.refusal.namespace == refused_ns
        assert verdict.refusal.message.startswith("Some or all of the shard key was not specified.  ")


def test_aggregate_lists_every_namespace(engine: Engine) -> None:
    body = agg([TARGETED_MATCH, {"$lookup": {"from": "logs", "localField": "a", "foreignField": "level", "as": "x"}}, {"$out": "report"}])
    assert run(engine, body).namespaces == ("blog.blog_posts", "blog.logs", "blog.report")


EXPLAINS: list[tuple[str, dict[str, Any], bool]] = [
    ("find untargeted", {"explain": find({"author": "a"}), "verbosity": "queryPlanner", "$db": "blog"}, False),
    ("find targeted", {"explain": {"find": "blog_posts", "filter": {"author": "a", "title": "t"}}, "$db": "blog"}, True),
    ("inner db is the explain's $db", {"explain": {"find": "blog_posts", "filter": {"author": "a"}}, "$db": "other"}, True),
    ("inner comment marker", {"explain": {"find": "blog_posts", "filter": {}, "comment": MARK}, "$db": "blog"}, True),
    ("outer comment marker", {"explain": {"find": "blog_posts", "filter": {}}, "comment": MARK, "$db": "blog"}, True),
    ("aggregate", {"explain": agg([{"$match": {"title": "t"}}]), "$db": "blog"}, False),
    ("count", {"explain": {"count": "blog_posts", "query": {}}, "$db": "blog"}, False),
    ("distinct", {"explain": {"distinct": "blog_posts", "key": "a"}, "$db": "blog"}, False),
    ("update", {"explain": {"update": "blog_posts", "updates": [{"q": {"author": "a"}, "u": {"$set": {"body": "b"}}}]}, "$db": "blog"}, False),
    ("delete", {"explain": {"delete": "blog_posts", "deletes": [{"q": {"author": "a"}, "limit": 0}]}, "$db": "blog"}, False),
    ("findAndModify alias", {"explain": {"findandmodify": "blog_posts", "query": {}, "remove": True}, "$db": "blog"}, False),
]


@pytest.mark.parametrize(("body", "allowed"), [c[1:] for c in EXPLAINS], ids=[c[0] for c in EXPLAINS])
def test_explain(blog_engine: Engine, body: dict[str, Any], allowed: bool) -> None:
    verdict = run(blog_engine, body)
    assert verdict.command == "explain"
    assert verdict.allowed is allowed, verdict.refusal
    if not allowed:
        assert verdict.refusal is not None and verdict.refusal.rule == "global_query"
        assert verdict.refusal.command != "explain"
