"""The commands the fast path answers besides find and insert, by example.

update, delete, findAndModify, count, distinct and aggregate: the targeted
forms drivers send are answered in C with the engine's own verdict; the forms
the engine refuses, warns about or must look at go to it (``fast_of`` returns
None). ``fast_of`` checks every answer against the engine and on each data
shape the relay hands over."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from bson import SON, Decimal128, Int64, Regex
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import messages as m
from scalyproxy.policy.fastpath import SIMPLE_STAGES
from scalyproxy.wire import encode_op_msg
from scalyproxy.wire.documents import HAVE_SCAN
from tests.unit.policy.fastpath_cases import (
    ENGINES,
    UPDATES,
    engine_verdict,
    fast_decide,
    fast_of,
    operator_updates,
)

pytestmark = pytest.mark.skipif(not HAVE_SCAN, reason="the C extension is not built")

BLOG, SHOP, RICH, MORE = ENGINES["blog"], ENGINES["shop"], ENGINES["rich"], ENGINES["more"]
KEY = {"author": "ann", "title": "t"}
BASE = {"$db": "blog", "lsid": m.LSID}


def update(u: Any, q: Any = KEY, **statement: Any) -> dict[str, Any]:
    return {"update": "blog_posts", "updates": [{"q": q, "u": u, **statement}], **BASE}


def refused(engine: Any, body: dict[str, Any], sequences: dict[str, list[Any]] | None = None) -> bool:
    verdict = engine_verdict(engine, encode_op_msg(body, request_id=1, sequences=sequences))
    return verdict is not None and verdict.refusal is not None


# -- what drivers send ---------------------------------------------------------------


@pytest.mark.parametrize("command", ["update", "delete", "findAndModify", "count", "distinct", "aggregate"])
def test_the_benchmark_messages_are_decided_in_c(command: str) -> None:
    message = m.targeted(command, 5)
    verdict = fast_decide(message, BLOG.fast)
    assert verdict is not None and verdict.command == command and verdict.namespaces == ("blog.blog_posts",)
    assert engine_verdict(BLOG, message) is verdict


@pytest.mark.parametrize(
    "body",
    [
        update({"$inc": {"unique_views": 1}, "$set": {"body": "b"}}, multi=False),
        update({"$set": {"comments.0.rank": 2}}, upsert=True, multi=True),  # the key by equality in q: upsert passes
        update({"$push": {"comments": {"$each": [{"author": "a", "comment": "c", "rank": 1}], "$slice": -5}}}),
        update({"$setOnInsert": {"body": "new"}, "$max": {"unique_views": 3}}, upsert=True, hint={"author": 1}),
        update({"$unset": {"body": ""}}, q={**KEY, "unique_views": {"$gt": 1}}, arrayFilters=[{"x.rank": 1}]),
        {"update": "blog_posts", "updates": [{"q": KEY, "u": {"$inc": {"unique_views": 1}}}] * 3, **BASE},
        {**update({"$set": {"body": "b"}}), "comment": "scaly:allow-global", "ordered": False, "writeConcern": {"w": 1}},
    ],
)
def test_targeted_updates_are_decided_in_c(body: dict[str, Any]) -> None:
    assert fast_of(BLOG, body) is not None
    statements = body.pop("updates")
    assert fast_of(BLOG, body, {"updates": statements}) is not None  # the kind-1 form pymongo uses


@pytest.mark.parametrize(
    "body",
    [
        update({"$set": {"body": "b"}}, q={"author": "ann"}),  # not targeted: refused
        update({"$set": {"body": "b"}}, q={"author": "ann", "title": {"$eq": "t"}}),  # targeted, by an operator
        update({"$set": {"body": "b"}}, q={"author": "ann", "title": "t", "$comment": "c"}),
        update({"author": "ann", "title": "t", "body": "whole"}),  # a replacement
        update([{"$set": {"body": "b"}}]),  # a pipeline
        update({"$set": {"author": "bob"}}),  # the shard key changes: refused
        update({"$set": {"author.x": 1}}),
        update({"$unset": {"title": ""}}),
        update({"$rename": {"body": "title"}}),
        update({"$setOnInsert": {"author": "x"}}, upsert=True),  # the engine allows it; C looks at every operator
        update({"$rename": {"body": "text"}}),  # with a structure, $rename is checked in Python
        update({"$set": {"unique_views": "many"}}),  # schema: refused
        update({"$set": 1}),
        update({"$foo": {"body": 1}}),
        update({}),
        update({"$set": {"body": "b"}}, collation={"locale": "fr"}),
        {**update({"$set": {"body": "b"}}), "collation": {"locale": "simple"}},
        {"update": "blog_posts", "updates": [SON([("$ref", "c"), ("$id", 1), ("q", KEY), ("u", {"$set": {}})])], **BASE},
        {"update": "blog_posts", "updates": [], **BASE},
        {"update": "blog_posts", "updates": [{"u": {"$set": {"body": "b"}}}], **BASE},
        {"update": "blog_posts", "updates": [{"q": KEY}], **BASE},
        {"update": "blog_posts", "updates": [{"q": KEY, "u": {"$set": {"body": "b"}}}, {"q": {}, "u": {}}], **BASE},
    ],
)
def test_other_updates_go_to_the_engine(body: dict[str, Any]) -> None:
    assert fast_of(BLOG, body) is None


def test_key_changes_and_bad_updates_are_refused_by_the_engine() -> None:
    for u in ({"$set": {"author": "bob"}}, {"$rename": {"body": "title"}}, {"$set": {"unique_views": "many"}}):
        assert refused(BLOG, update(u))


def test_update_statements_in_both_places_or_other_sections_go_to_the_engine() -> None:
    statement = {"q": KEY, "u": {"$set": {"body": "b"}}}
    assert fast_of(BLOG, update(statement["u"]), {"updates": [statement]}) is None
    assert fast_of(BLOG, {"update": "blog_posts", **BASE}, {"updates": [statement], "deletes": [{"q": KEY}]}) is None
    assert fast_of(BLOG, {"update": "blog_posts", **BASE}, {"deletes": [statement]}) is None


def test_dotted_and_hashed_keys_in_updates() -> None:
    orders = {"update": "orders", "$db": "shop"}
    key = {"customer.region": "eu", "customer.id": 1}
    assert fast_of(SHOP, orders, {"updates": [{"q": key, "u": {"$set": {"status": "x"}}}]}) is not None
    for u in ({"$set": {"customer": {"id": 2, "region": "us"}}}, {"$set": {"customer.region": "us"}},
              {"$inc": {"customer.id": 1}}, {"$unset": {"customer": ""}}):  # fmt: skip
        assert fast_of(SHOP, orders, {"updates": [{"q": key, "u": u}]}) is None
        assert refused(SHOP, orders, {"updates": [{"q": key, "u": u}]})
    assert fast_of(SHOP, orders, {"updates": [{"q": {"customer": {"id": 1, "region": "eu"}}, "u": {"$set": {"status": "x"}}}]}) is None
    users = {"update": "users", "$db": "shop"}
    assert fast_of(SHOP, users, {"updates": [{"q": {"email": "e"}, "u": {"$set": {"name": "n"}}}]}) is not None
    open_ = {"update": "open", "$db": "u"}
    assert fast_of(RICH, open_, {"updates": [{"q": {"k.id": 1}, "u": {"$set": {"x": 2, "other": "y"}}}]}) is not None
    # schema and shard_key_write only warn there: the engine's warnings, never a fast answer
    for u in ({"$set": {"x": "two"}}, {"$set": {"k": {"id": 3}}}):
        assert fast_of(RICH, open_, {"updates": [{"q": {"k.id": 1}, "u": u}]}) is None


def test_rules_off_and_no_structure() -> None:
    loose = {"update": "loose", "$db": "u"}
    assert fast_of(RICH, loose, {"updates": [{"q": {"k": 1}, "u": {"$set": {"v": "no schema check"}}}]}) is not None
    assert fast_of(RICH, loose, {"updates": [{"q": {"k": 1}, "u": {"$rename": {"v": "w"}}}]}) is not None
    # shard_key_write is off: the engine allows a key change, the fast path still leaves it to the engine
    touching = {"updates": [{"q": {"k": 1}, "u": {"$rename": {"v": "k"}}}]}
    assert fast_of(RICH, loose, touching) is None and not refused(RICH, loose, touching)
    plain = {"update": "plain", "$db": "shop"}
    key = {"region": "eu", "day": 1}
    assert fast_of(SHOP, plain, {"updates": [{"q": key, "u": {"$rename": {"a": "b"}, "$set": {"c": [1]}}}]}) is not None
    assert fast_of(SHOP, plain, {"updates": [{"q": key, "u": {"$rename": {"a": 5}}}]}) is None  # a target that is no string
    assert fast_of(MORE, {"update": "keyless", "$db": "t"}, {"updates": [{"q": {"x": 1}, "u": {"$set": {"x": 2}}}]}) is None


# -- the update operators against a structure (u.rich) -----------------------------------

CONFIRMED = [
    *UPDATES["u.rich"],
    {"$set": {"n.i": 5, "n.l": 5, "n.num": 2.5, "n.ni": None, "n.id": 1.5}},
    {"$inc": {"n.l": 1, "n.num": Int64(2), "n.id": 2}},
    {"$mul": {"n.dec": Decimal128("2"), "free.x": 1.5, "sub.extra": 3}},
    {"$min": {"dt": datetime.datetime(2024, 1, 1), "n.id": 1}},
    {"$set": {"items.0": {"sku": "s"}, "items.$[x].qty": 1, "tags.$": "t"}},
    {"$unset": {"maybe": "", "meta": "", "free": "", "items.0.qty": ""}},
    {"$push": {"maybe": 1, "free": [1], "meta": 2}},
    {"$pull": {"items": {"sku": "s"}}, "$pullAll": {"nums": [1]}, "$addToSet": {"nums": None}},
    {"$currentDate": {"free": True, "dt": {"$type": "timestamp"}}},
    {"$bit": {"bits": {"xor": 1}, "free": {"or": 1}, "n.i": {"and": 1}}},
    {"$set": {"_id": 1, "_id.x": 2}},
]
REPORTED = [
    {"$unset": {"n.i": ""}},  # required
    {"$unset": {"sub.a": ""}},
    {"$unset": {"items.0.sku": ""}},
    {"$unset": {"tags.0": ""}},  # an array element becomes null: strings only
    {"$inc": {"n.i": Int64(1)}},  # the result would be a long
    {"$inc": {"n.d": 1}},  # an int, were the field absent
    {"$inc": {"tags": 1}},
    {"$inc": {"n.num": "1"}},
    {"$mul": {"when": 2}},
    {"$mul": {"n.dec": 2}},  # an int, were the field absent
    {"$min": {"k2": 1, "tags": 1}},
    {"$min": {"n.i": 1.5}},
    {"$max": {"when": 1}},
    {"$set": {"n.i": "one"}},
    {"$set": {"unknown": 1}},
    {"$set": {"n.x": 1}},
    {"$set": {"tags.x": "t"}},  # an array needs an index
    {"$set": {"when.x": 1}},
    {"$set": {"items.0": {"qty": 1}}},  # sku is required
    {"$push": {"tags": 1}},
    {"$push": {"tags": {"$each": ["a", 1]}}},
    {"$push": {"tags": {"$each": "a"}}},
    {"$push": {"when": 1}},
    {"$addToSet": {"items": {"sku": 1}}},
    {"$pull": {"when": 1}},
    {"$pop": {"n": 1}},
    {"$currentDate": {"ts": True}},
    {"$currentDate": {"when": {"$type": "timestamp"}}},
    {"$currentDate": {"tags": True}},
    {"$bit": {"n.d": {"and": 1}}},
    {"$bit": {"ib": {"and": 1}}},
    {"$set": {"": 1}},
    {"$set": {"n..i": 1}},
    {"$rename": {"n.i": "n.l"}},
]
UNSURE = [
    {"$rename": {"n.l": "n.num"}},  # allowed by the engine: $rename compares declared shapes, in Python
    {"$set": {"nums.\u0663": 1}},  # an Arabic-Indic digit: an index for str.isdigit(), not for C
    {"$push": {"tags": {"x": "not modifiers", "$each": ["a"]}}},
    {"$currentDate": {"when": {"$type": "date", "x": 1}}},
]


def rich(u: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    return {"update": "rich", "$db": "u"}, {"updates": [{"q": {"k": "key"}, "u": u}]}


@pytest.mark.parametrize("u", CONFIRMED)
def test_updates_the_structure_confirms_are_decided_in_c(u: dict[str, Any]) -> None:
    assert fast_of(RICH, *rich(u)) is not None


@pytest.mark.parametrize("u", REPORTED)
def test_updates_the_structure_check_reports_go_to_the_engine(u: dict[str, Any]) -> None:
    assert fast_of(RICH, *rich(u)) is None
    assert refused(RICH, *rich(u))


@pytest.mark.parametrize("u", UNSURE)
def test_updates_the_c_checker_cannot_judge_go_to_the_engine(u: dict[str, Any]) -> None:
    assert fast_of(RICH, *rich(u)) is None


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(["u.rich", "u.open", "u.loose", "shop.orders", "blog.blog_posts", "t.dotted"]), operator_updates)
def test_any_operator_update_on_a_targeted_statement(ns: str, u: dict[str, Any]) -> None:
    """The update checks in C against UpdateChecker.check, on any operators, paths and values."""
    which = {"u": "rich", "shop": "shop", "blog": "blog", "t": "more"}[ns.partition(".")[0]]
    engine = ENGINES[which]
    cc = engine._collections[ns]
    assert cc.shard_key is not None
    q = {p: 7 for p in cc.shard_key.paths}
    db, _, coll = ns.partition(".")
    message = encode_op_msg({"update": coll, "$db": db}, request_id=1, sequences={"updates": [{"q": q, "u": u}]})
    fast = fast_decide(message, engine.fast)
    if fast is not None:
        assert engine_verdict(engine, message) is fast


# -- delete ---------------------------------------------------------------------------


def test_targeted_deletes_are_decided_in_c() -> None:
    body = {"delete": "blog_posts", **BASE}
    assert fast_of(BLOG, body, {"deletes": [{"q": KEY, "limit": 1}]}) is not None
    assert fast_of(BLOG, {**body, "deletes": [{"q": KEY, "limit": 0}, {"q": {**KEY, "body": "x"}, "limit": 1}]}) is not None
    assert fast_of(SHOP, {"delete": "orders", "$db": "shop"}, {"deletes": [{"q": {"customer.id": 1, "customer.region": "eu"}, "limit": 1}]}) is not None  # fmt: skip


@pytest.mark.parametrize(
    "statement",
    [{"q": {"author": "ann"}, "limit": 1}, {"limit": 1}, {"q": KEY, "collation": {"locale": "simple"}},
     {"q": {**KEY, "$or": [{"a": 1}]}}, {"q": {"author": "ann", "title": Regex("t")}}],
)  # fmt: skip
def test_other_deletes_go_to_the_engine(statement: dict[str, Any]) -> None:
    assert fast_of(BLOG, {"delete": "blog_posts", **BASE}, {"deletes": [statement]}) is None
    assert fast_of(ENGINES["read_only"], {"delete": "blog_posts", **BASE}, {"deletes": [{"q": KEY}]}) is None


# -- findAndModify --------------------------------------------------------------------

FAM = {"findAndModify": "blog_posts", "query": KEY, **BASE}


@pytest.mark.parametrize(
    "body",
    [
        {**FAM, "update": {"$inc": {"unique_views": 1}}, "new": True, "fields": {"body": 1}},
        {**FAM, "remove": True},
        {**FAM, "remove": True, "update": {"author": "the engine ignores it"}},
        {**FAM, "update": {"$setOnInsert": {"body": "b"}}, "upsert": True},
        {**FAM, "update": {"$set": {"body": "b"}}, "sort": {"unique_views": -1}},  # unindexed_query is off
    ],
)
def test_targeted_find_and_modify_is_decided_in_c(body: dict[str, Any]) -> None:
    assert fast_of(BLOG, body) is not None


@pytest.mark.parametrize(
    "body",
    [
        {**FAM, "query": {"author": "ann"}, "remove": True},
        {**FAM, "update": {"author": "ann", "title": "t"}},  # a replacement
        {**FAM, "update": [{"$set": {"body": 1}}]},
        {**FAM, "update": {"$set": {"title": "u"}}},
        {**FAM},  # neither update nor remove
        {**FAM, "remove": 1},
        {**FAM, "remove": True, "collation": {"locale": "simple"}},
        {"findandmodify": "blog_posts", "query": KEY, "remove": True, **BASE},  # the alias: the engine
    ],
)
def test_other_find_and_modify_go_to_the_engine(body: dict[str, Any]) -> None:
    assert fast_of(BLOG, body) is None


def test_find_and_modify_sort_needs_the_index_check_where_the_rule_is_on() -> None:
    body = {"findAndModify": "rich", "query": {"k": "a"}, "remove": True, "$db": "u"}
    assert fast_of(RICH, body) is not None
    assert fast_of(RICH, {**body, "sort": {"when": 1}}) is None
    assert fast_of(RICH, body, {"updates": [{}]}) is None  # findAndModify takes no section


# -- count, distinct ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["count", "distinct"])
def test_targeted_count_and_distinct(name: str) -> None:
    body = {name: "blog_posts", "query": KEY, "key": "body", "limit": 5, "skip": 1, **BASE}
    assert fast_of(BLOG, body) is not None
    for query in ({"author": "ann"}, {**KEY, "$comment": "c"}, "not a document"):
        assert fast_of(BLOG, {**body, "query": query}) is None
    del body["query"]
    assert fast_of(BLOG, body) is None
    assert fast_of(BLOG, {**body, "query": KEY, "collation": {"locale": "fr"}}) is None
    assert fast_of(ENGINES["read_only"], {**body, "query": KEY}) is not None  # a read


# -- aggregate ------------------------------------------------------------------------

AGG = {"aggregate": "blog_posts", "cursor": {}, **BASE}
STAGE_SPECS: dict[str, Any] = {
    "$match": {"body": "x"}, "$sort": {"title": 1}, "$project": {"body": 1}, "$addFields": {"x": 1},
    "$set": {"x": 1}, "$unset": "x", "$limit": 1, "$skip": 1, "$group": {"_id": "$body"}, "$count": "n",
    "$unwind": "$comments", "$replaceRoot": {"newRoot": "$x"}, "$replaceWith": "$x", "$sortByCount": "$body",
    "$bucket": {"groupBy": "$unique_views", "boundaries": [0, 10]},
    "$bucketAuto": {"groupBy": "$unique_views", "buckets": 2}, "$sample": {"size": 1},
}  # fmt: skip


@pytest.mark.parametrize("stage", SIMPLE_STAGES)
def test_aggregations_of_simple_stages_after_a_targeted_match(stage: str) -> None:
    assert fast_of(BLOG, {**AGG, "pipeline": [{"$match": KEY}, {stage: STAGE_SPECS[stage]}]}) is not None


@pytest.mark.parametrize(
    "pipeline",
    [
        [{"$match": {"author": "ann"}}],
        [{"$project": {"a": 1}}, {"$match": KEY}],
        [],
        [{"$match": KEY, "$limit": 1}],  # two stage names in one document
        [{"$match": {**KEY, "$expr": {"$eq": ["$a", 1]}}}],
        [{"$match": KEY}, {"$lookup": {"from": "x", "localField": "a", "foreignField": "b", "as": "c"}}],
        [{"$match": KEY}, {"$graphLookup": {"from": "x", "startWith": "$a", "connectFromField": "a",
                                            "connectToField": "b", "as": "c"}}],  # fmt: skip
        [{"$match": KEY}, {"$unionWith": "other"}],
        [{"$match": KEY}, {"$facet": {"a": [{"$count": "n"}]}}],
        [{"$match": KEY}, {"$out": "copy"}],
        [{"$match": KEY}, {"$merge": {"into": "copy"}}],
        [{"$match": KEY}, {"$geoNear": {}}],
        [{"$match": KEY}, 5],
    ],
)
def test_other_aggregations_go_to_the_engine(pipeline: list[Any]) -> None:
    assert fast_of(BLOG, {**AGG, "pipeline": pipeline}) is None


def test_aggregate_sort_collation_and_read_only() -> None:
    rich_agg = {"aggregate": "rich", "cursor": {}, "$db": "u"}
    assert fast_of(RICH, {**rich_agg, "pipeline": [{"$match": {"k": "a"}}, {"$limit": 1}, {"$sort": {"x": 1}}]}) is not None
    assert fast_of(RICH, {**rich_agg, "pipeline": [{"$match": {"k": "a"}}, {"$sort": {"x": 1}}]}) is None  # unindexed check
    assert fast_of(BLOG, {**AGG, "pipeline": [{"$match": KEY}], "collation": {"locale": "simple"}}) is None
    assert fast_of(BLOG, {**AGG, "aggregate": 1, "pipeline": [{"$match": KEY}]}) is None
    read_only = ENGINES["read_only"]
    assert fast_of(read_only, {**AGG, "pipeline": [{"$match": KEY}, {"$group": {"_id": 1}}]}) is not None
    assert fast_of(read_only, {**AGG, "pipeline": [{"$match": KEY}, {"$out": "x"}]}) is None
    assert refused(read_only, {**AGG, "pipeline": [{"$match": KEY}, {"$out": "x"}]})
    assert fast_of(ENGINES["deny"], {**AGG, "pipeline": [{"$match": KEY}]}) is None


def test_warn_rules_leave_the_verdict_to_the_engine() -> None:
    warn = ENGINES["warn"]
    assert fast_of(warn, update({"$set": {"body": "b"}})) is not None
    assert fast_of(warn, update({"$set": {"unique_views": "x"}})) is None  # a schema warning
    assert fast_of(warn, update({"$set": {"title": "x"}})) is None  # a shard_key_write warning
    assert fast_of(warn, {**FAM, "remove": True, "sort": {"body": 1}}) is None  # an unindexed sort warns
    verdict = engine_verdict(warn, encode_op_msg(update({"$set": {"title": "x"}}), request_id=1))
    assert verdict.allowed and verdict.warnings
