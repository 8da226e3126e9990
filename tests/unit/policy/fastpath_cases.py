"""Configs, hypothesis strategies and helpers shared by the fast-path tests.

Two kinds of generated commands, for every command the fast path answers
(find, insert, update, delete, findAndModify, count, distinct, aggregate):
:func:`commands` draws anything (any namespace, any field, odd types, aliases,
extra sections), and :func:`plausible` draws what drivers send, mostly
targeted, with now and then one thing off. The fast answer of either must be
the very verdict the engine returns.
"""

from __future__ import annotations

import datetime
from typing import Any

import bson
from bson import Decimal128, Int64, ObjectId
from hypothesis import strategies as st

from bench import messages as m
from scalyproxy.policy import Engine
from scalyproxy.policy.fastpath import COMMANDS, SIMPLE_STAGES, UPDATE_OPERATORS
from scalyproxy.wire import command_view, encode_op_msg, make_frame
from scalyproxy.wire.documents import HAVE_SCAN
from tests.unit.policy.conftest import SHOP, blog_text, engine_for
from tests.unit.policy.strategies import scalar

if HAVE_SCAN:
    from scalyproxy._scan import fast_decide
else:  # the tests that call it are skipped

    def fast_decide(data: bytes | bytearray | memoryview, table: dict[str, Any], /) -> Any:
        raise RuntimeError("the C extension scalyproxy._scan is not built")

MORE = """
policy:
  targeting: prefix
  unknown_namespaces: deny
  rules: {unindexed_query: enforce, global_query: warn}
collections:
  t.dotted:
    structure: {a: {b: int}, c: string}
    indexes: [{fields: [a.b, c], shard_key: true}]
  t.hashed:
    indexes:
      - {fields: {h: hashed}, shard_key: true}
      - {fields: [other]}
  t.keyless:
    structure: {x: int}
    indexes: [{fields: [x]}]
  t.offkey:
    rules: {shard_key_write: off, schema: off, global_query: off}
    structure: {k: int}
    indexes: [{fields: [k], shard_key: true}]
  t.second:
    rules: {unindexed_query: warn}
    indexes:
      - {fields: [z], shard_key: true}
      - {fields: [y]}
  t.french:
    collation: {locale: fr, strength: 2}
    rules: {unindexed_query: off}
    indexes: [{fields: [f], shard_key: true}]
"""
#: A structure for the update checks: every numeric type, dates, unions, nullable
#: fields and arrays, arrays of documents with a required field, open documents.
RICH = """
policy:
  rules: {unindexed_query: enforce, pipeline_update: enforce}
collections:
  u.rich:
    structure:
      k: string
      n: {i: int, l: long, d: double, dec: decimal, num: number, ni: "int?", id: "int | double"}
      when: date
      ts: timestamp
      dt: "date | timestamp"
      bits: "long?"
      ib: "int | bool"
      tags: [string]
      nums: ["int?"]
      maybe: {$array: int, $nullable: true}
      items:
        - sku: string
          qty: int
      meta: object
      free: any
      sub: {a: int, b: "string?", $additional_fields: true}
    required: [n.i, sub.a, items.sku]
    indexes:
      - {fields: [k], shard_key: true}
      - {fields: [when]}
  u.open:
    structure: {k: {id: int}, x: int, arr: [object]}
    additional_fields: true
    rules: {schema: warn, shard_key_write: warn, global_query: warn}
    indexes: [{fields: {k.id: hashed}, shard_key: true}]
  u.loose:
    rules: {shard_key_write: off, schema: off, unindexed_query: off}
    structure: {k: int, v: int}
    indexes: [{fields: [k], shard_key: true}]
"""
WARN = (
    blog_text()
    .replace("global_query: enforce", "global_query: warn")
    .replace("shard_key_write: enforce", "shard_key_write: warn")
    .replace("schema: enforce", "schema: warn")
    .replace("rules: {unindexed_query: off}", "rules: {unindexed_query: warn}")
)
READ_ONLY = blog_text() + "\nread_only: true\n"
DENY = blog_text().replace("deny_commands: []", "deny_commands: [find, insert, update, aggregate]")
ENGINES = {
    "blog": engine_for(blog_text()),
    "shop": engine_for(SHOP),
    "more": engine_for(MORE),
    "rich": engine_for(RICH),
    "warn": engine_for(WARN),
    "read_only": engine_for(READ_ONLY),
    "deny": engine_for(DENY),
}
NAMESPACES = sorted({ns for e in ENGINES.values() for ns in e._collections} | {"blog.other", "x.y"})

names = st.sampled_from(
    ["author", "title", "body", "unique_views", "comments", "comments.0.rank", "customer", "customer.region",
     "customer.id", "region", "email", "created", "lines", "lines.$.qty", "total", "status", "tags", "tags.0", "a",
     "a.b", "b", "c", "h", "x", "k", "k.id", "z", "y", "f", "other", "n", "n.i", "n.l", "n.d", "n.num", "n.ni", "when",
     "ts", "dt", "bits", "ib", "nums", "nums.$", "maybe", "items", "items.0.qty", "items.$[].sku", "items.$[x].qty",
     "meta", "meta.x", "free.y", "sub", "sub.a", "sub.b", "sub.z", "_id", "", "a..b", "$and", "$or", "$ref", "$id",
     "$comment"]
)  # fmt: skip
operator_value = st.one_of(
    st.builds(lambda v: {"$eq": v}, scalar),
    st.builds(lambda vs: {"$in": vs}, st.lists(scalar, max_size=2)),
    st.builds(lambda v: {"$gt": v}, scalar),
    st.builds(lambda v: {"$exists": v}, st.booleans()),
)
values = st.recursive(
    scalar | operator_value,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(names, children, max_size=3),
    max_leaves=8,
)
documents = st.dictionaries(names, values, max_size=7)
#: What applications put in a shard key, and now and then any scalar.
key_values = st.one_of(
    st.integers(-(2**31), 2**31 - 1),
    st.text(max_size=8),
    st.just(ObjectId("5f1d2c3b4a59687766554433")),
    st.just(datetime.datetime(2024, 1, 2)),
    st.integers(0, 2**40).map(Int64),
    scalar,
)
sorts = st.dictionaries(names, st.sampled_from([1, -1]), max_size=2)
collations = st.sampled_from([{"locale": "simple"}, {"locale": "fr"}])

# -- updates --------------------------------------------------------------------------

push_values = st.one_of(
    values,
    st.builds(lambda each: {"$each": each}, st.lists(values, max_size=3)),
    st.builds(lambda each, n: {"$each": each, "$slice": n}, st.lists(scalar, max_size=2), st.integers(-3, 3)),
    st.builds(lambda v: {"$slice": v}, scalar),
)
date_values = st.sampled_from([True, False, {"$type": "date"}, {"$type": "timestamp"}, {"$type": 1}, {"x": 1}])
operator_args = st.one_of(
    st.dictionaries(names, values | push_values | date_values, max_size=3),
    st.dictionaries(names, names, max_size=2),  # $rename targets
)
operators = st.sampled_from([*UPDATE_OPERATORS, *UPDATE_OPERATORS, "$foo", "$each"])
operator_updates = st.dictionaries(operators, operator_args | scalar, min_size=1, max_size=3)
pipeline_updates = st.lists(st.dictionaries(st.sampled_from(["$set", "$unset", "$project"]), documents, max_size=1), max_size=2)
update_docs = st.one_of(operator_updates, operator_updates, documents, pipeline_updates, scalar)

#: Updates a driver would send, valid against each namespace's structure (and touching no key).
UPDATES: dict[str, list[dict[str, Any]]] = {
    "blog.blog_posts": [
        {"$inc": {"unique_views": 1}}, {"$set": {"body": "b", "comments.0.rank": 2}}, {"$unset": {"body": ""}},
        {"$push": {"comments": {"author": "a", "comment": "c", "rank": 1}}}, {"$max": {"unique_views": 5}},
    ],
    "shop.orders": [
        {"$set": {"status": None}}, {"$inc": {"total": 1.5}}, {"$currentDate": {"created": True}},
        {"$push": {"tags": {"$each": ["a", "b"]}}}, {"$set": {"lines.$.qty": 2}}, {"$unset": {"note": ""}},
        {"$bit": {"flags": {"or": 1}}}, {"$set": {"meta.x": 1}}, {"$mul": {"big": Int64(2)}},
        {"$currentDate": {"stamp": {"$type": "timestamp"}}},
    ],
    "shop.users": [{"$set": {"name": "n"}}, {"$set": {"age": None}}, {"$inc": {"age": 1}}],
    "shop.plain": [{"$set": {"anything": 1}}, {"$rename": {"a": "b"}}],
    "u.rich": [
        {"$inc": {"n.i": 1, "n.l": Int64(1), "n.d": 1.5, "n.num": Decimal128("1")}},
        {"$min": {"when": datetime.datetime(2024, 1, 1)}, "$max": {"n.num": 3}},
        {"$currentDate": {"when": True, "ts": {"$type": "timestamp"}, "dt": {"$type": "date"}}},
        {"$bit": {"bits": {"and": Int64(1)}}}, {"$push": {"tags": "x", "nums": {"$each": [1, None], "$slice": 3}}},
        {"$addToSet": {"items": {"sku": "s", "qty": 1}}}, {"$pull": {"tags": "x"}, "$pop": {"nums": 1}},
        {"$set": {"items.$[].qty": 3, "meta.deep.x": 1, "free": [1]}}, {"$unset": {"sub.b": "", "nums.0": ""}},
        {"$set": {"sub.extra": "ok", "maybe": None}}, {"$setOnInsert": {"n": {"i": 1}, "sub": {"a": 2}}},
    ],
    "u.open": [{"$set": {"x": 1, "y": "free"}}, {"$push": {"arr": {"a": 1}}}],
    "u.loose": [{"$set": {"v": "any type: schema is off"}}, {"$rename": {"v": "w"}}],
    "t.dotted": [{"$set": {"_id": 5}}],
    "t.hashed": [{"$set": {"other": 1}}],
    "t.offkey": [{"$inc": {"z": 1}}],
    "t.second": [{"$set": {"y": 1}}],
    "t.french": [{"$set": {"g": 1}}],
}  # fmt: skip

#: documents that match the declared structure, by namespace (others get their shard key only)
EXAMPLES: dict[str, dict[str, Any]] = {
    "blog.blog_posts": {"author": "a", "title": "t", "body": "b", "unique_views": 1, "comments": []},
    "shop.orders": {"customer": {"id": 1, "region": "eu"}, "created": datetime.datetime(2024, 1, 1),
                    "lines": [{"sku": "s", "qty": 1}], "total": 2.5},
    "shop.users": {"email": "e", "name": "n", "age": None},
    "t.keyless": {"x": 1},
    "t.offkey": {"k": 1},
    "u.rich": {"k": "k", "n": {"i": 1}, "sub": {"a": 1}, "items": [{"sku": "s"}]},
    "u.open": {"k": {"id": 1}, "x": 2},
}  # fmt: skip

stages = st.builds(
    lambda name, spec: {name: spec},
    st.sampled_from([*SIMPLE_STAGES, "$lookup", "$unionWith", "$facet", "$out", "$merge", "$graphLookup",
                     "$geoNear", "$collStats", "$foo"]),  # fmt: skip
    documents | scalar | st.text(max_size=3),
)


def key_paths(ns: str) -> tuple[str, ...]:
    for engine in ENGINES.values():
        cc = engine._collections.get(ns)
        if cc is not None and cc.shard_key is not None:
            return cc.shard_key.paths
    return ()


def near_targeted(ns: str) -> st.SearchStrategy[dict[str, Any]]:
    """A filter or document that gives every shard-key field of ``ns`` (when it has one), then maybe more."""
    paths = key_paths(ns)
    if not paths:
        return documents
    return st.builds(
        lambda given, extra: {**dict(zip(paths, given, strict=True)), **extra},
        st.tuples(*[key_values | key_values | values for _ in paths]),
        st.just({}) | documents,
    )


def queries(ns: str) -> st.SearchStrategy[Any]:
    targeted = near_targeted(ns)
    return targeted | targeted | targeted | documents | scalar


@st.composite
def statements(draw: st.DrawFn, ns: str, kind: str) -> dict[str, Any]:
    statement: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        statement["q"] = draw(queries(ns))
    if kind == "update" and draw(st.integers(0, 9)):
        statement["u"] = draw(update_docs)
    for key, value in (
        ("upsert", st.booleans() | scalar),
        ("multi", st.booleans()),
        ("limit", st.sampled_from([0, 1])),
        ("collation", collations),
        ("arrayFilters", st.just([{"x.qty": 1}])),
        ("$ref", st.just("c")),
    ):
        if draw(st.integers(0, 5)) == 0:
            statement[key] = draw(value)
    return statement


def _write_statements(
    draw: st.DrawFn, body: dict[str, Any], sequences: dict[str, list[Any]], field: str, items: list[Any]
) -> None:
    """Statements (or documents) in the body, in a kind-1 section, in both, or nowhere."""
    where = draw(st.sampled_from(["sequence"] * 4 + ["body"] * 3 + ["both", "none"]))
    if where in ("body", "both"):
        body[field] = items if draw(st.integers(0, 9)) else draw(scalar)
    if where in ("sequence", "both"):
        sequences[field] = items


@st.composite
def commands(draw: st.DrawFn) -> tuple[str, bytes]:
    """(engine, message): any command of those the fast path knows (and a few it does not),
    mostly on a namespace that engine declares."""
    which = draw(st.sampled_from(sorted(ENGINES)))
    declared = st.sampled_from(sorted(ENGINES[which]._collections))
    ns = draw(declared | declared | declared | st.sampled_from(NAMESPACES))
    db, _, coll = ns.partition(".")
    name = draw(st.sampled_from([*COMMANDS, *COMMANDS, "Find", "findandmodify", "explain"]))
    body: dict[str, Any] = {name: draw(st.sampled_from([coll] * 6 + ["", 5]))}
    sequences: dict[str, list[Any]] = {}
    kind = name.lower()
    if kind in ("find", "count", "distinct", "findandmodify") and draw(st.integers(0, 5)):
        body["filter" if kind == "find" else "query"] = draw(queries(ns))
    if kind == "insert":
        _write_statements(draw, body, sequences, "documents", draw(st.lists(near_targeted(ns) | documents, max_size=3)))
    elif kind in ("update", "delete"):
        items = draw(st.lists(statements(ns, kind), max_size=3))
        _write_statements(draw, body, sequences, f"{kind}s", items)
    elif kind == "findandmodify":
        if draw(st.booleans()):
            body["update"] = draw(update_docs)
        if draw(st.integers(0, 2)) == 0:
            body["remove"] = draw(st.booleans() | st.just(1))
    elif kind == "aggregate" and draw(st.integers(0, 9)):
        first = draw(st.builds(lambda f: {"$match": f}, queries(ns)) | stages)
        body["pipeline"] = [first, *draw(st.lists(stages | st.builds(lambda s: {"$sort": s}, sorts), max_size=3))]
    elif kind == "explain":
        body["explain"] = {"find": coll, "filter": draw(queries(ns))}
    for key, value in (
        ("sort", sorts),
        ("collation", collations),
        ("comment", st.sampled_from(["scaly:allow-global", "x", {"a": "scaly:allow-global"}])),
        ("upsert", st.booleans()),
        ("key", st.just("body")),
        ("projection", st.just({"title": 1})),
        ("ordered", st.booleans()),
    ):
        if draw(st.integers(0, 5)) == 0:
            body[key] = draw(value)
    if draw(st.integers(0, 19)) == 0:
        sequences[draw(st.sampled_from(["updates", "deletes", "documents"]))] = [{}]
    body["$db"] = draw(st.sampled_from([db] * 10 + ["", 1]))
    if draw(st.booleans()):
        body["lsid"] = m.LSID
    return which, encoded(body, sequences)


def encoded(body: dict[str, Any], sequences: dict[str, list[Any]]) -> bytes:
    try:
        return encode_op_msg(body, request_id=1, sequences=sequences or None)
    except (bson.errors.InvalidDocument, TypeError):  # a scalar where a document must be
        return encode_op_msg({"ping": 1, "$db": "admin"}, request_id=1)


# -- plausible driver traffic ------------------------------------------------------------


def _key_query(draw: st.DrawFn, paths: tuple[str, ...]) -> dict[str, Any]:
    query = {p: draw(key_values) for p in paths}
    if draw(st.integers(0, 4)) == 0:
        query.update(draw(documents))
    return query


def _update_of(draw: st.DrawFn, ns: str) -> Any:
    known = UPDATES.get(ns)
    if known and draw(st.integers(0, 5)):
        return draw(st.sampled_from(known))
    return draw(operator_updates)


def _plausible_stage(draw: st.DrawFn) -> dict[str, Any]:
    return draw(st.sampled_from([
        {"$project": {"body": 1}}, {"$sort": {"title": 1}}, {"$limit": 5}, {"$skip": 1}, {"$group": {"_id": "$x"}},
        {"$count": "n"}, {"$unwind": "$tags"}, {"$addFields": {"y": 1}}, {"$set": {"z": 2}}, {"$unset": "w"},
        {"$replaceRoot": {"newRoot": "$sub"}}, {"$sortByCount": "$x"}, {"$sample": {"size": 2}},
        {"$lookup": {"from": "other", "localField": "a", "foreignField": "b", "as": "c"}},
    ]))  # fmt: skip


@st.composite
def plausible(draw: st.DrawFn) -> tuple[str, str, bytes]:
    """(engine, command, message): mostly what drivers send for a targeted command, now and then one thing off."""
    which = draw(st.sampled_from(sorted(ENGINES)))
    engine = ENGINES[which]
    ns = draw(st.sampled_from(sorted(engine._collections)))
    cc = engine._collections[ns]
    paths = cc.shard_key.paths if cc.shard_key is not None else ()
    db, _, coll = ns.partition(".")
    command = draw(st.sampled_from(COMMANDS))
    body: dict[str, Any] = {command: coll}
    sequences: dict[str, list[Any]] = {}
    if command == "find":
        body["filter"] = _key_query(draw, paths)
    elif command in ("count", "distinct"):
        body["query"] = _key_query(draw, paths)
        if command == "distinct":
            body["key"] = "body"
    elif command == "aggregate":
        rest = [_plausible_stage(draw) for _ in range(draw(st.integers(0, 3)))]
        body["pipeline"] = [{"$match": _key_query(draw, paths)}, *rest]
        body["cursor"] = {}
    elif command == "findAndModify":
        body["query"] = _key_query(draw, paths)
        if draw(st.integers(0, 3)) == 0:
            body["remove"] = True
        else:
            body["update"] = _update_of(draw, ns)
            body["new"] = draw(st.booleans())
    elif command == "insert":
        docs = []
        for _ in range(draw(st.integers(1, 3))):
            doc = dict(EXAMPLES.get(ns) or {p: draw(scalar) for p in paths})
            if draw(st.integers(0, 3)) == 0:
                doc.update(draw(documents))
            docs.append(doc)
        _plausible_statements(draw, body, sequences, "documents", docs)
    else:
        items = []
        for _ in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
            item: dict[str, Any] = {"q": _key_query(draw, paths)}
            if command == "update":
                item["u"] = _update_of(draw, ns)
                item["multi"] = draw(st.booleans())
            else:
                item["limit"] = draw(st.sampled_from([0, 1]))
            if draw(st.integers(0, 5)) == 0:
                item["upsert"] = True
            items.append(item)
        _plausible_statements(draw, body, sequences, f"{command}s", items)
    for key, value in (("sort", sorts), ("collation", collations), ("comment", st.sampled_from(["scaly:allow-global", "x"]))):
        if draw(st.integers(0, 7)) == 0:
            body[key] = draw(value)
    body["$db"] = db
    body["lsid"] = m.LSID
    return which, command, encoded(body, sequences)


def _plausible_statements(
    draw: st.DrawFn, body: dict[str, Any], sequences: dict[str, list[Any]], field: str, items: list[Any]
) -> None:
    if draw(st.integers(0, 3)) == 0:
        body[field] = items
    else:
        sequences[field] = items


# -- helpers -----------------------------------------------------------------------------


def engine_verdict(engine: Engine, message: bytes) -> Any:
    try:
        view = command_view(make_frame(message))
    except Exception:  # the codec refuses it: the fast path must have left it too
        return None
    return engine.decide(view)


def fast_of(engine: Engine, body: dict[str, Any], sequences: dict[str, list[Any]] | None = None, **kw: Any) -> Any:
    """The fast answer for a command (every data shape the relay can hand over), checked against the engine."""
    message = encode_op_msg(body, request_id=3, sequences=sequences, **kw)
    verdict = fast_decide(message, engine.fast)
    assert fast_decide(bytearray(message), engine.fast) is verdict
    assert fast_decide(memoryview(message), engine.fast) is verdict
    if verdict is not None:
        assert engine_verdict(engine, message) is verdict
    return verdict


def blog_post(i: int = 0) -> dict[str, Any]:
    return {"_id": ObjectId(), "author": f"a{i}", "title": "t", "body": "b", "unique_views": 1}
