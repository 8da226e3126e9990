"""Rules 2 and 3: shard-key writes and the schema, statement by statement; batches whole."""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
from bson.decimal128 import Decimal128
from bson.int64 import Int64

from scalyproxy.policy import Command, Engine

from .conftest import merged, run

MARK = "scaly:allow-global"
POST = {"author": "a", "title": "t", "body": "b", "unique_views": 3, "comments": [{"author": "c", "comment": "x", "rank": 1}]}
KEY = {"author": "a", "title": "t"}
NOW = datetime.datetime(2024, 1, 1)
ORDER = {"customer": {"id": 1, "region": "eu"}, "created": NOW, "lines": [{"sku": "s", "qty": 1}]}
OKEY = {"customer.region": "eu", "customer.id": 1}


def insert(*docs: Any, db: str = "blog", coll: str = "blog_posts") -> dict[str, Any]:
    return {"insert": coll, "documents": list(docs), "$db": db}


def update(q: Any, u: Any, db: str = "blog", coll: str = "blog_posts", **st: Any) -> dict[str, Any]:
    return {"update": coll, "updates": [{"q": q, "u": u, **st}], "$db": db}


def post(**changes: Any) -> dict[str, Any]:
    doc = dict(POST)
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not DROP}


def order(**changes: Any) -> dict[str, Any]:
    doc = dict(ORDER)
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not DROP}


DROP = object()

# (id, body, None = allowed | (rule, substring of the message))
SHARD_KEY_WRITES: list[tuple[str, dict[str, Any], tuple[str, str] | None]] = [
    ("insert with the key", insert(post()), None),
    ("insert without title", insert(post(title=DROP)), ("shard_key_write", "documents.0: missing shard key field(s) title")),
    ("insert without both", insert(post(title=DROP, author=DROP)), ("shard_key_write", "field(s) author, title")),
    ("insert dotted key missing", insert(order(customer={"id": 1}), db="shop", coll="orders"), ("shard_key_write", "customer.region")),
    ("upsert with full key", update(KEY, {"$set": {"body": "x"}}, upsert=True), None),
    ("upsert without title", update({"author": "a"}, {"$set": {"body": "x"}}, upsert=True), ("shard_key_write", "upsert on blog.blog_posts must give the full shard key")),
    ("upsert with marker still refused", {**update({"author": "a"}, {"$set": {"body": "x"}}, upsert=True), "comment": MARK}, ("shard_key_write", "Missing fields were title.")),
    ("upsert with $in is not an equality", update({"author": "a", "title": {"$in": ["t", "u"]}}, {"$set": {"body": "x"}}, upsert=True), ("shard_key_write", "Missing fields were title.")),
    ("upsert with $eq and $and", update({"$and": [{"author": {"$eq": "a"}}, {"title": "t"}]}, {"$set": {"body": "x"}}, upsert=True), None),
    ("upsert with embedded dotted key", update({"customer": {"region": "eu", "id": 1}}, {"$set": {"total": 1}}, db="shop", coll="orders", upsert=True), None),
    ("$set of a key field", update(KEY, {"$set": {"title": "u"}}), ("shard_key_write", "$set of title would change shard key field(s) title")),
    ("$unset of a key field", update(KEY, {"$unset": {"author": ""}}), ("shard_key_write", "$unset of author")),
    ("$rename from a key field", update(KEY, {"$rename": {"title": "body"}}), ("shard_key_write", "title")),
    ("$rename onto a key field", update(KEY, {"$rename": {"body": "title"}}), ("shard_key_write", "title")),
    ("$inc of a key field", update({"region": 1, "day": 2}, {"$inc": {"day": 1}}, db="shop", coll="plain"), ("shard_key_write", "day")),
    ("$set of a parent of a dotted key", update(OKEY, {"$set": {"customer": {"id": 1, "region": "eu"}}}, db="shop", coll="orders"), ("shard_key_write", "$set of customer")),
    ("$set of a child of a key", update({"region": 1, "day": 2}, {"$set": {"day.x": 1}}, db="shop", coll="plain"), ("shard_key_write", "day")),
    ("$setOnInsert of a key is fine", update(KEY, {"$setOnInsert": {"title": "t"}, "$set": {"body": "x"}}, upsert=True), None),
    ("$set elsewhere", update(KEY, {"$set": {"body": "x"}}), None),
    ("replacement keeping the key", update(KEY, post()), None),
    ("replacement without the key", update(KEY, {"author": "a", "body": "x"}), ("shard_key_write", "lacks shard key field(s) title")),
    ("replacement changing the key", update(KEY, post(title="other")), ("shard_key_write", "changes shard key field title")),
    ("replacement, untargeted filter, marker", {**update({"author": "a"}, post()), "comment": MARK}, ("shard_key_write", "does not fix it to one value")),
    ("replacement with dotted key", update({"customer": {"region": "eu", "id": 1}}, order(), db="shop", coll="orders"), None),
    ("pipeline $set of a key", update(KEY, [{"$set": {"title": "u"}}]), ("shard_key_write", "$set of title in the update pipeline")),
    ("pipeline $unset of a key", update(KEY, [{"$unset": ["body", "author"]}]), ("shard_key_write", "author")),
    ("pipeline $replaceWith", update(KEY, [{"$replaceWith": "$$ROOT"}]), ("shard_key_write", "$replaceWith")),
    ("pipeline $project dropping the key", update(KEY, [{"$project": {"author": 1, "body": 1}}]), ("shard_key_write", "title")),
    ("pipeline $project keeping the key", update(KEY, [{"$project": {"author": 1, "title": 1, "body": 1}}]), None),
    ("pipeline $set elsewhere", update(KEY, [{"$set": {"body": "x"}}]), None),
    ("updateOne untargeted", update({"author": "a"}, {"$set": {"body": "x"}}), ("global_query", "Missing fields were title.")),
    ("updateMany untargeted", update({"author": "a"}, {"$set": {"body": "x"}}, multi=True), ("global_query", "Missing fields were title.")),
    ("updateMany untargeted, marker", {**update({"author": "a"}, {"$set": {"body": "x"}}, multi=True), "comment": MARK}, None),
    ("deleteOne untargeted", {"delete": "blog_posts", "deletes": [{"q": {"title": "t"}, "limit": 1}], "$db": "blog"}, ("global_query", "Missing fields were author.")),
    ("delete targeted", {"delete": "blog_posts", "deletes": [{"q": KEY, "limit": 0}], "$db": "blog"}, None),
    ("findAndModify untargeted", {"findAndModify": "blog_posts", "query": {"author": "a"}, "update": {"$set": {"body": "x"}}, "$db": "blog"}, ("global_query", "Missing fields were title.")),
    ("findAndModify upsert without key", {"findAndModify": "blog_posts", "query": {"author": "a"}, "update": {"$set": {"body": "x"}}, "upsert": True, "comment": MARK, "$db": "blog"}, ("shard_key_write", "upsert")),
    ("findAndModify changing the key", {"findAndModify": "blog_posts", "query": KEY, "update": {"$set": {"author": "b"}}, "$db": "blog"}, ("shard_key_write", "author")),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in SHARD_KEY_WRITES], ids=[c[0] for c in SHARD_KEY_WRITES])
def test_shard_key_writes(engine: Engine, body: dict[str, Any], expected: tuple[str, str] | None) -> None:
    _check(run(engine, body), expected)


def _check(verdict: Any, expected: tuple[str, str] | None) -> None:
    if expected is None:
        assert verdict.allowed, verdict.refusal
        return
    rule, text = expected
    assert verdict.refusal is not None, f"expected {rule} refusal"
    assert verdict.refusal.rule == rule, verdict.refusal
    assert text in verdict.refusal.message
    names = {"global_query": "ScalyGlobalQuery", "shard_key_write": "ScalyShardKeyViolation", "schema": "ScalySchemaViolation"}
    assert verdict.refusal.code_name == names[rule]


SCHEMA_DOCS: list[tuple[str, dict[str, Any], str | None]] = [
    ("valid post", insert(post()), None),
    ("rank as a string", insert(post(comments=[{"author": "c", "comment": "x", "rank": "1"}])), "comments.0.rank: expected int, got string"),
    ("unknown field", insert(post(extra=1)), "extra: unknown field"),
    ("unknown field in a comment", insert(post(comments=[{"author": "c", "likes": 1}])), "comments.0.likes: unknown field"),
    ("comments not an array", insert(post(comments={"author": "c"})), "comments: expected array, got object"),
    ("int64 for int", insert(post(unique_views=Int64(5))), "unique_views: expected int, got long"),
    ("big int for int", insert(post(unique_views=2**40)), "unique_views: expected int, got long"),
    ("bool for int", insert(post(unique_views=True)), "unique_views: expected int, got bool"),
    ("double for int", insert(post(unique_views=1.0)), "unique_views: expected int, got double"),
    ("null for string", insert(post(body=None)), "body: expected string, got null"),
    ("_id of any type", insert(post(_id={"x": 1})), None),
    ("valid order", insert(order(), db="shop", coll="orders"), None),
    ("required top field", insert(order(created=DROP), db="shop", coll="orders"), "created: required field missing"),
    ("required field in array elements", insert(order(lines=[{"qty": 1}]), db="shop", coll="orders"), "lines.0.sku: required field missing"),
    ("nullable accepts null", insert(order(status=None), db="shop", coll="orders"), None),
    ("nullable keeps its type", insert(order(status=1), db="shop", coll="orders"), "status: expected string or null, got int"),
    ("number accepts double", insert(order(total=1.5), db="shop", coll="orders"), None),
    ("number accepts decimal", insert(order(total=Decimal128("1.5")), db="shop", coll="orders"), None),
    ("number accepts long", insert(order(total=Int64(2)), db="shop", coll="orders"), None),
    ("number refuses string", insert(order(total="1"), db="shop", coll="orders"), "total: expected number, got string"),
    ("long accepts int", insert(order(big=5), db="shop", coll="orders"), None),
    ("long accepts Int64", insert(order(big=Int64(5)), db="shop", coll="orders"), None),
    ("long refuses double", insert(order(big=5.0), db="shop", coll="orders"), "big: expected long, got double"),
    ("object accepts any document", insert(order(meta={"a": [1, {"b": 2}]}), db="shop", coll="orders"), None),
    ("object refuses a string", insert(order(meta="x"), db="shop", coll="orders"), "meta: expected object, got string"),
    ("any accepts anything", insert(order(note=[1, "x", None]), db="shop", coll="orders"), None),
    ("date refuses a string", insert(order(created="2024"), db="shop", coll="orders"), "created: expected date, got string"),
    ("array of strings", insert(order(tags=["a", 1]), db="shop", coll="orders"), "tags.1: expected string, got int"),
    ("union with null", insert({"email": "e", "age": None}, db="shop", coll="users"), None),
    ("union refuses other", insert({"email": "e", "age": "x"}, db="shop", coll="users"), "age: expected int or null, got string"),
    ("additional fields allowed", insert({"msg": "m", "level": "l", "other": 1}, db="shop", coll="logs"), None),
    ("declared type still checked", insert({"msg": 1}, db="shop", coll="logs"), "msg: expected string, got int"),
    ("replacement checked", update(KEY, post(unique_views="x")), "unique_views: expected int, got string"),
]


@pytest.mark.parametrize(("body", "message"), [c[1:] for c in SCHEMA_DOCS], ids=[c[0] for c in SCHEMA_DOCS])
def test_schema_documents(engine: Engine, body: dict[str, Any], message: str | None) -> None:
    verdict = run(engine, body)
    if message is None:
        assert verdict.allowed, verdict.refusal
        return
    assert verdict.refusal is not None and verdict.refusal.rule == "schema", verdict.refusal
    assert verdict.refusal.code_name == "ScalySchemaViolation"
    assert verdict.refusal.message.startswith(message), verdict.refusal.message


def test_schema_message_names_path_expected_and_actual(engine: Engine) -> None:
    verdict = run(engine, insert(post(comments=[{"author": "c", "comment": "x", "rank": "high"}])))
    assert verdict.refusal is not None
    assert verdict.refusal.message == "comments.0.rank: expected int, got string (blog.blog_posts documents.0)"


def upd(u: dict[str, Any], db: str = "blog", coll: str = "blog_posts") -> dict[str, Any]:
    return update(KEY if coll == "blog_posts" else OKEY, u, db=db, coll=coll)


def oupd(u: dict[str, Any]) -> dict[str, Any]:
    return upd(u, db="shop", coll="orders")


UPDATES: list[tuple[str, dict[str, Any], str | None]] = [
    ("$set by index", upd({"$set": {"comments.0.rank": "x"}}), "comments.0.rank: expected int, got string"),
    ("$set positional", upd({"$set": {"comments.$.rank": 2}}), None),
    ("$set positional wrong", upd({"$set": {"comments.$.rank": "x"}}), "comments.$.rank: expected int, got string"),
    ("$set all positional", upd({"$set": {"comments.$[].rank": "x"}}), "comments.$[].rank: expected int"),
    ("$set filtered positional", upd({"$set": {"comments.$[el].rank": 1.5}}), "comments.$[el].rank: expected int, got double"),
    ("$set unknown field", upd({"$set": {"likes": 1}}), "likes: unknown field"),
    ("$set into a scalar", upd({"$set": {"body.x": 1}}), "body.x: body is string"),
    ("$set array field without index", upd({"$set": {"comments.rank": 1}}), "comments.rank: comments is an array"),
    ("$set whole array", upd({"$set": {"comments": [{"author": "a", "comment": "b", "rank": 1}]}}), None),
    ("$set whole array wrong", upd({"$set": {"comments": {"author": "a"}}}), "comments: expected array, got object"),
    ("$set element document", upd({"$set": {"comments.1": {"rank": "x"}}}), "comments.1.rank: expected int"),
    ("$set under object type", oupd({"$set": {"meta.a.b": [1]}}), None),
    ("$set under any", oupd({"$set": {"note.x": 1}}), None),
    ("$setOnInsert checked", upd({"$setOnInsert": {"unique_views": "x"}}), "unique_views: expected int, got string"),
    ("$inc int by int", upd({"$inc": {"unique_views": 1}}), None),
    ("$inc int by double", upd({"$inc": {"unique_views": 1.5}}), "unique_views: expected int, got double"),
    ("$inc int by long", upd({"$inc": {"unique_views": Int64(1)}}), "unique_views: expected int, got long"),
    ("$inc a string field", upd({"$inc": {"body": 1}}), "body: $inc/$mul needs a numeric field"),
    ("$inc by a string", upd({"$inc": {"unique_views": "1"}}), "unique_views: $inc/$mul needs a number, got string"),
    ("$inc in an array element", upd({"$inc": {"comments.$.rank": 1}}), None),
    ("$mul number by double", oupd({"$mul": {"total": 2.5}}), None),
    ("$inc long by int", oupd({"$inc": {"big": 1}}), None),
    ("$inc long by double", oupd({"$inc": {"big": 0.5}}), "big: expected long, got double"),
    ("$min numeric", oupd({"$min": {"total": 3}}), None),
    ("$max date", oupd({"$max": {"created": NOW}}), None),
    ("$max date by number", oupd({"$max": {"created": 1}}), "created: expected date, got int"),
    ("$min on a string", upd({"$min": {"body": "a"}}), "body: $min/$max needs a numeric field"),
    ("$push valid", upd({"$push": {"comments": {"author": "a", "comment": "b", "rank": 1}}}), None),
    ("$push wrong element", upd({"$push": {"comments": {"rank": "x"}}}), "comments.$.rank: expected int, got string"),
    ("$push $each", upd({"$push": {"comments": {"$each": [{"rank": 1}, {"rank": "x"}], "$slice": 5}}}), "comments.$each.1.rank: expected int"),
    ("$push $each not an array", upd({"$push": {"comments": {"$each": 1}}}), "comments: $each needs an array"),
    ("$addToSet string", oupd({"$addToSet": {"tags": "x"}}), None),
    ("$addToSet wrong type", oupd({"$addToSet": {"tags": 1}}), "tags.$: expected string, got int"),
    ("$addToSet $each", oupd({"$addToSet": {"tags": {"$each": ["a", 2]}}}), "tags.$each.1: expected string, got int"),
    ("$push on a non-array", upd({"$push": {"body": "x"}}), "body: $push/$addToSet needs an array field"),
    ("$pull on array", oupd({"$pull": {"tags": "x"}}), None),
    ("$pop on non-array", oupd({"$pop": {"total": 1}}), "total: $pull/$pullAll/$pop needs an array field"),
    ("$unset optional", oupd({"$unset": {"status": ""}}), None),
    ("$unset required", oupd({"$unset": {"created": ""}}), "created: cannot $unset a required field"),
    ("$unset required in elements", oupd({"$unset": {"lines.0.sku": ""}}), "lines.0.sku: cannot $unset a required field"),
    ("$unset array element", oupd({"$unset": {"tags.0": ""}}), "tags.0: $unset of an array element sets it to null"),
    ("$rename into any", oupd({"$rename": {"status": "note"}}), None),
    ("$rename type mismatch", oupd({"$rename": {"total": "flags"}}), "flags: expected int, got number"),
    ("$rename required", oupd({"$rename": {"created": "note"}}), "created: cannot $rename a required field"),
    ("$rename same type", upd({"$rename": {"body": "body"}}), None),
    ("$currentDate date", oupd({"$currentDate": {"created": True}}), None),
    ("$currentDate timestamp", oupd({"$currentDate": {"stamp": {"$type": "timestamp"}}}), None),
    ("$currentDate on a number", oupd({"$currentDate": {"total": True}}), "total: expected number, got date"),
    ("$currentDate date into timestamp", oupd({"$currentDate": {"stamp": True}}), "stamp: expected timestamp, got date"),
    ("$bit on int", oupd({"$bit": {"flags": {"and": 1}}}), None),
    ("$bit on number", oupd({"$bit": {"total": {"and": 1}}}), "total: $bit needs an int or long field"),
    ("unknown operator", upd({"$frobnicate": {"body": 1}}), "$frobnicate: unknown update operator"),
    ("operator argument not a document", upd({"$set": 1}), "$set: expected a document of paths"),
]


@pytest.mark.parametrize(("body", "message"), [c[1:] for c in UPDATES], ids=[c[0] for c in UPDATES])
def test_schema_update_operators(engine: Engine, body: dict[str, Any], message: str | None) -> None:
    verdict = run(engine, body)
    if message is None:
        assert verdict.allowed, verdict.refusal
        return
    assert verdict.refusal is not None and verdict.refusal.rule == "schema", verdict.refusal
    assert verdict.refusal.message.startswith(message), verdict.refusal.message


def test_pipeline_update_warns_by_default(engine: Engine) -> None:
    verdict = run(engine, update(KEY, [{"$set": {"body": "x"}}]))
    assert verdict.allowed
    assert [w.rule for w in verdict.warnings] == ["pipeline_update"]


@pytest.mark.parametrize(("mode", "allowed", "warned"), [("enforce", False, False), ("warn", True, True), ("off", True, False)])
def test_pipeline_update_modes(mode: str, allowed: bool, warned: bool) -> None:
    engine = Engine.from_config(merged(rules={"pipeline_update": mode}))
    verdict = run(engine, update(KEY, [{"$set": {"body": "x"}}]))
    assert verdict.allowed is allowed
    assert bool(verdict.warnings) is warned
    if not allowed:
        assert verdict.refusal is not None and verdict.refusal.code_name == "ScalySchemaViolation"


def test_batch_with_one_bad_document_refused_whole(engine: Engine) -> None:
    docs = [post(title=f"t{i}") for i in range(1000)]
    docs[537] = post(title="t537", comments=[{"rank": "x"}])
    verdict = run(engine, {"insert": "blog_posts", "$db": "blog"}, {"documents": docs})
    assert verdict.refusal is not None and verdict.refusal.rule == "schema"
    assert "documents.537" in verdict.refusal.message
    good = run(engine, {"insert": "blog_posts", "$db": "blog"}, {"documents": [post(title=f"t{i}") for i in range(1000)]})
    assert good.allowed


def test_update_batch_refused_whole(engine: Engine) -> None:
    body = {
        "update": "blog_posts",
        "updates": [{"q": KEY, "u": {"$set": {"body": "x"}}}, {"q": KEY, "u": {"$set": {"unique_views": "x"}}}],
        "$db": "blog",
    }
    verdict = run(engine, body)
    assert verdict.refusal is not None and "updates.1" in verdict.refusal.message


def test_statements_from_kind1_sequences(engine: Engine) -> None:
    head = {"update": "blog_posts", "$db": "blog"}
    bad = run(engine, head, {"updates": [{"q": {"author": "a"}, "u": {"$set": {"body": "x"}}}]})
    assert bad.refusal is not None and bad.refusal.rule == "global_query"
    assert run(engine, head, {"updates": [{"q": KEY, "u": {"$set": {"body": "x"}}}]}).allowed
    delete = run(engine, {"delete": "blog_posts", "$db": "blog"}, {"deletes": [{"q": {}, "limit": 0}]})
    assert delete.refusal is not None and delete.refusal.rule == "global_query"
    ins = run(engine, {"insert": "blog_posts", "$db": "blog"}, {"documents": [post(title=DROP)]})
    assert ins.refusal is not None and ins.refusal.rule == "shard_key_write"


class ExplodingSequences(Mapping[str, Sequence[Mapping[str, Any]]]):
    """A lazy sequences mapping that fails the test if any document is read.

    Its identifiers may be listed (the engine checks them against what the
    command takes, without decoding anything); its documents may not be read.
    """

    def __getitem__(self, key: str) -> Sequence[Mapping[str, Any]]:
        raise AssertionError(f"sequence {key!r} was read")

    def __iter__(self) -> Iterator[str]:
        return iter(["documents"])

    def __len__(self) -> int:
        return 1


class ExplodingCommand:
    name = "insert"
    db = "shop"

    def __init__(self, coll: str) -> None:
        self.body = {"insert": coll, "$db": "shop"}

    @property
    def sequences(self) -> Mapping[str, Sequence[Mapping[str, Any]]]:
        return ExplodingSequences()


@pytest.mark.parametrize("coll", ["undeclared", "nothing_to_check"])
def test_insert_without_document_rules_never_reads_documents(coll: str) -> None:
    engine = Engine.from_config(merged())
    assert engine.decide(ExplodingCommand(coll)).allowed
    assert engine.decide(Command("insert", "shop", {"insert": coll, "$db": "shop"}, ExplodingSequences())).allowed


def test_insert_reads_documents_when_rules_need_them(engine: Engine) -> None:
    verdict = engine.decide(Command("insert", "blog", {"insert": "blog_posts", "$db": "blog"}, ExplodingSequences()))
    assert verdict.refusal is not None and verdict.refusal.rule == "malformed"  # the exploding read was caught, fail closed


def test_unindexed_plain_collection_reads_nothing() -> None:
    text = "collections:\n  shop.plain2: {indexes: [{fields: [a]}]}\n"
    from scalyproxy.config import load_config_text

    engine = Engine.from_config(load_config_text(text))
    assert engine.decide(Command("insert", "shop", {"insert": "plain2", "$db": "shop"}, ExplodingSequences())).allowed
