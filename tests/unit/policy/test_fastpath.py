"""The C fast path (``_scan.fast_decide``) against the Python engine.

It may only ever allow what the engine allows without a warning, with the very
verdict the engine returns; everything else must be left to the engine (None).
And it must answer the ordinary targeted find and insert, or it would be
useless (P1 and P2 of docs/benchmarks.md would show it)."""

from __future__ import annotations

import datetime
from typing import Any

import bson
import pytest
from bson import SON, Int64, ObjectId, Regex
from bson.binary import Binary
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench import messages as m
from scalyproxy.policy import Engine
from scalyproxy.wire import command_view, encode_op_msg, make_frame
from scalyproxy.wire.documents import HAVE_SCAN
from tests.unit.policy.conftest import SHOP, blog_text, engine_for
from tests.unit.policy.strategies import scalar

pytestmark = pytest.mark.skipif(not HAVE_SCAN, reason="the C extension is not built")

if HAVE_SCAN:
    from scalyproxy._scan import fast_decide

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
READ_ONLY = blog_text() + "\nread_only: true\n"
DENY = blog_text().replace("deny_commands: []", "deny_commands: [find, insert]")
ENGINES = {
    "blog": engine_for(blog_text()),
    "shop": engine_for(SHOP),
    "more": engine_for(MORE),
    "read_only": engine_for(READ_ONLY),
    "deny": engine_for(DENY),
}
NAMESPACES = sorted({ns for e in ENGINES.values() for ns in e._collections} | {"blog.other", "x.y"})

names = st.sampled_from(
    ["author", "title", "body", "unique_views", "comments", "customer", "customer.region", "customer.id",
     "region", "email", "created", "lines", "total", "a", "a.b", "b", "c", "h", "x", "k", "z", "y", "f", "other",
     "_id", "$and", "$or", "$ref", "$id", "$comment"]
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


def blog_post(i: int = 0) -> dict[str, Any]:
    return {"_id": ObjectId(), "author": f"a{i}", "title": "t", "body": "b", "unique_views": 1}


def near_targeted(ns: str) -> st.SearchStrategy[dict[str, Any]]:
    """A filter or document that gives every shard-key field of ``ns`` (when it has one), then more."""
    for engine in ENGINES.values():
        cc = engine._collections.get(ns)
        if cc is not None and cc.shard_key is not None:
            paths = cc.shard_key.paths
            return st.builds(
                lambda given, extra, keys=paths: {**dict(zip(keys, given, strict=True)), **extra},
                st.tuples(*[values for _ in paths]),
                documents,
            )
    return documents


@st.composite
def commands(draw: st.DrawFn) -> bytes:
    ns = draw(st.sampled_from(NAMESPACES))
    db, _, coll = ns.partition(".")
    name = draw(st.sampled_from(["find", "insert", "find", "insert", "Find", "count"]))
    body: dict[str, Any] = {name: draw(st.sampled_from([coll, coll, "", 5]))}
    sequences: dict[str, list[dict[str, Any]]] = {}
    if name != "insert":
        if draw(st.booleans()):
            body["filter"] = draw(near_targeted(ns) | documents | scalar)
    else:
        docs = draw(st.lists(near_targeted(ns) | documents, max_size=3))
        where = draw(st.sampled_from(["sequence", "sequence", "body", "both", "none"]))
        if where in ("body", "both"):
            body["documents"] = docs if draw(st.integers(0, 9)) else draw(scalar)
        if where in ("sequence", "both"):
            sequences["documents"] = docs
    for key, value in (
        ("sort", st.dictionaries(names, st.sampled_from([1, -1]), max_size=2)),
        ("collation", st.sampled_from([{"locale": "simple"}, {"locale": "fr"}])),
        ("comment", st.sampled_from(["scaly:allow-global", "x", {"a": "scaly:allow-global"}])),
        ("projection", st.just({"title": 1})),
        ("ordered", st.booleans()),
    ):
        if draw(st.integers(0, 3)) == 0:
            body[key] = draw(value)
    if draw(st.integers(0, 9)) == 0:
        sequences["updates"] = [{}]
    body["$db"] = draw(st.sampled_from([db, db, db, "", 1]))
    if draw(st.booleans()):
        body["lsid"] = m.LSID
    try:
        return encode_op_msg(body, request_id=1, sequences=sequences or None)
    except bson.errors.InvalidDocument:
        return encode_op_msg({"ping": 1, "$db": "admin"}, request_id=1)


#: documents that match the declared structure, by namespace (others get their shard key only)
EXAMPLES: dict[str, dict[str, Any]] = {
    "blog.blog_posts": {"author": "a", "title": "t", "body": "b", "unique_views": 1, "comments": []},
    "shop.orders": {"customer": {"id": 1, "region": "eu"}, "created": datetime.datetime(2024, 1, 1),
                    "lines": [{"sku": "s", "qty": 1}], "total": 2.5},
    "shop.users": {"email": "e", "name": "n", "age": None},
    "t.keyless": {"x": 1},
    "t.offkey": {"k": 1},
}  # fmt: skip


@st.composite
def plausible(draw: st.DrawFn) -> tuple[str, bytes]:
    """Mostly what drivers send for a targeted find or insert, with now and then one thing off."""
    which = draw(st.sampled_from(sorted(ENGINES)))
    engine = ENGINES[which]
    ns = draw(st.sampled_from(sorted(engine._collections)))
    cc = engine._collections[ns]
    paths = cc.shard_key.paths if cc.shard_key is not None else ()
    db, _, coll = ns.partition(".")
    sequences: dict[str, list[dict[str, Any]]] = {}
    if draw(st.booleans()):
        filt = {p: draw(scalar) for p in paths}
        if draw(st.integers(0, 2)) == 0:
            filt.update(draw(documents))
        body: dict[str, Any] = {"find": coll, "filter": filt}
    else:
        docs = []
        for _ in range(draw(st.integers(1, 3))):
            doc = dict(EXAMPLES.get(ns) or {p: draw(scalar) for p in paths})
            if draw(st.integers(0, 3)) == 0:
                doc.update(draw(documents))
            docs.append(doc)
        body = {"insert": coll}
        if draw(st.integers(0, 3)) == 0:
            body["documents"] = docs
        else:
            sequences["documents"] = docs
    for key, value in (
        ("sort", st.dictionaries(names, st.sampled_from([1, -1]), max_size=2)),
        ("collation", st.sampled_from([{"locale": "simple"}, {"locale": "fr"}])),
        ("comment", st.sampled_from(["scaly:allow-global", "x"])),
    ):
        if draw(st.integers(0, 5)) == 0:
            body[key] = draw(value)
    body["$db"] = db
    body["lsid"] = m.LSID
    try:
        return which, encode_op_msg(body, request_id=1, sequences=sequences or None)
    except bson.errors.InvalidDocument:
        return which, encode_op_msg({"ping": 1, "$db": "admin"}, request_id=1)


def engine_verdict(engine: Engine, message: bytes) -> Any:
    try:
        view = command_view(make_frame(message))
    except Exception:  # the codec refuses it: the fast path must have left it too
        return None
    return engine.decide(view)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(ENGINES)), commands())
def test_fast_path_allows_only_what_the_engine_allows(which: str, message: bytes) -> None:
    engine = ENGINES[which]
    fast = fast_decide(message, engine.fast)
    if fast is not None:
        verdict = engine_verdict(engine, message)
        assert verdict is fast, (which, command_view(make_frame(message)).body, verdict)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible())
def test_fast_path_agrees_on_plausible_commands(case: tuple[str, bytes]) -> None:
    which, message = case
    engine = ENGINES[which]
    fast = fast_decide(message, engine.fast)
    if fast is not None:
        assert engine_verdict(engine, message) is fast, (which, command_view(make_frame(message)).body)


def fast_of(engine: Engine, body: dict[str, Any], docs: list[dict[str, Any]] | None = None, **kw: Any) -> Any:
    message = encode_op_msg(body, request_id=3, sequences={"documents": docs} if docs is not None else None, **kw)
    verdict = fast_decide(message, engine.fast)
    # each data shape the relay can hand over (a bytes message, a framed bytearray or memoryview)
    assert fast_decide(bytearray(message), engine.fast) is verdict
    assert fast_decide(memoryview(message), engine.fast) is verdict
    if verdict is not None:
        assert engine_verdict(engine, message) is verdict
    return verdict


BLOG = ENGINES["blog"]
FIND = {"find": "blog_posts", "$db": "blog", "lsid": m.LSID}


@pytest.mark.parametrize(
    "body",
    [
        {**FIND, "filter": {"author": "ann", "title": "t"}},
        {**FIND, "filter": {"title": 1.5, "author": None, "body": {"$gt": 1}}, "limit": 1, "singleBatch": True},
        {**FIND, "filter": {"author": ObjectId(), "title": Int64(3)}, "sort": {"x": 1}, "comment": "anything"},
        {**FIND, "filter": {"author": Binary(b"x", 5), "title": datetime.datetime(2020, 1, 1)}},
    ],
)
def test_targeted_finds_are_decided_in_c(body: dict[str, Any]) -> None:
    verdict = fast_of(BLOG, body)
    assert verdict is not None and verdict.allowed and verdict.namespaces == ("blog.blog_posts",)


@pytest.mark.parametrize(
    "body",
    [
        {**FIND, "filter": {"author": "ann"}},  # refused: the engine explains
        {**FIND},
        {**FIND, "filter": {"author": "ann", "title": {"$eq": "t"}}},  # allowed, but by an operator
        {**FIND, "filter": {"author": "ann", "title": ["t"]}},
        {**FIND, "filter": {"author": "ann", "title": Regex("^t")}},
        {**FIND, "filter": {"author": "ann", "title": {"x": 1}}},
        {**FIND, "filter": {"author": "ann", "title": "t", "$comment": "c"}},
        {**FIND, "filter": {"author": "ann", "title": "t"}, "collation": {"locale": "simple"}},
        {"find": "blog_posts", "filter": {"author": "ann", "title": "t"}, "$db": "other"},  # undeclared
        {"find": "blog_posts", "filter": {"author": "ann", "title": "t"}},  # no $db
        {"FIND": "blog_posts", "filter": {"author": "ann", "title": "t"}, "$db": "blog"},
        {"explain": {"find": "blog_posts", "filter": {"author": "ann", "title": "t"}}, "$db": "blog"},
    ],
)
def test_other_finds_go_to_the_engine(body: dict[str, Any]) -> None:
    assert fast_of(BLOG, body) is None


INSERT = {"insert": "blog_posts", "$db": "blog", "lsid": m.LSID, "ordered": True}


def test_inserts_that_carry_the_key_and_match_are_decided_in_c() -> None:
    assert fast_of(BLOG, INSERT, [blog_post(i) for i in range(50)]) is not None
    assert fast_of(BLOG, {**INSERT, "documents": [blog_post(1), blog_post(2)]}) is not None
    assert fast_decide(m.insert_one(0), BLOG.fast) is not None
    assert fast_decide(m.find_by_key(0), BLOG.fast) is not None


@pytest.mark.parametrize(
    "docs",
    [
        [blog_post(), {"author": "a", "body": "no title"}],
        [blog_post(), {**blog_post(), "unique_views": "many"}],
        [{**blog_post(), "extra": 1}],
        [SON([("$ref", "c"), ("$id", 1), ("author", "a"), ("title", "t")])],
        [],
    ],
)
def test_other_inserts_go_to_the_engine(docs: list[dict[str, Any]]) -> None:
    assert fast_of(BLOG, INSERT, docs) is None


def test_inserts_with_body_and_sequence_or_extra_sections_go_to_the_engine() -> None:
    message = encode_op_msg({**INSERT, "documents": [blog_post()]}, request_id=1, sequences={"documents": [blog_post()]})
    assert fast_decide(message, BLOG.fast) is None
    message = encode_op_msg(INSERT, request_id=1, sequences={"documents": [blog_post()], "updates": [{}]})
    assert fast_decide(message, BLOG.fast) is None


def test_rules_that_need_python_leave_no_slot() -> None:
    assert ENGINES["read_only"].fast["blog.blog_posts"][1] is None  # inserts are refused
    assert ENGINES["read_only"].fast["blog.blog_posts"][0] is not None
    assert "blog.blog_posts" not in ENGINES["deny"].fast
    more = ENGINES["more"].fast
    assert more["t.keyless"][0] is None and more["t.keyless"][1] is not None  # no shard key: no find slot
    assert more["t.hashed"][0] is not None
    assert more["t.second"][5] is False  # a sort needs the unindexed check
    assert Engine.ALLOW_ALL.fast == {}


def test_a_non_simple_default_collation_leaves_find_to_the_engine() -> None:
    """A string key value does not target under the collection's French collation: the engine decides."""
    engine = ENGINES["more"]
    assert engine.fast["t.french"][0] is None and engine.fast["t.french"][1] is not None
    by_string = {"find": "french", "$db": "t", "filter": {"f": "x"}}
    assert fast_of(engine, by_string) is None
    def global_query(body: dict[str, Any]) -> bool:  # this config only warns about it
        return any(w.rule == "global_query" for w in engine_verdict(engine, encode_op_msg(body, request_id=1)).warnings)

    assert global_query(by_string)
    by_number = {"find": "french", "$db": "t", "filter": {"f": 1}}
    assert fast_of(engine, by_number) is None and not global_query(by_number)
    assert not global_query({**by_string, "collation": {"locale": "simple"}})


def test_dotted_and_prefix_keys() -> None:
    engine = ENGINES["more"]
    targeted = {"find": "dotted", "$db": "t", "filter": {"a.b": 1, "c": "x"}}
    assert fast_of(engine, targeted) is not None
    assert fast_of(engine, {**targeted, "filter": {"a": {"b": 1}, "c": "x"}}) is None  # Python: a sub-document
    assert fast_of(engine, {"find": "hashed", "$db": "t", "filter": {"h": 5}}) is not None
    assert fast_of(engine, {"insert": "dotted", "$db": "t"}, [{"a.b": 1, "c": "x"}]) is None  # structure: no "a.b"
    assert fast_of(engine, {"insert": "dotted", "$db": "t"}, [{"a": {"b": 1}, "c": "x"}]) is None  # Python walks it
    assert fast_of(engine, {"insert": "offkey", "$db": "t"}, [{"no": "key"}]) is not None  # rules off


def test_bad_tables_are_type_errors() -> None:
    with pytest.raises(TypeError):
        fast_decide(m.find_by_key(0), {"blog.blog_posts": (None,)})
    with pytest.raises(TypeError):
        fast_decide(m.find_by_key(0), {"blog.blog_posts": (None, None, ("author",), True, None, True)})
    with pytest.raises(TypeError):
        fast_decide(m.find_by_key(0), [])
    assert fast_decide(b"\x00" * 10, BLOG.fast) is None
    assert fast_decide(m.find_by_key(0)[:-1], BLOG.fast) is None
