"""The C structure checker (``_scan.schema_unconfirmed``) against the Python one.

It may only ever confirm: every document it confirms, the Python check on the
decoded document accepts. And it must confirm the ordinary valid documents,
or it would be useless (and P6 of docs/benchmarks.md would show it)."""

from __future__ import annotations

import datetime
from typing import Any

import bson
import pytest
from bson import SON, DBRef, Int64, ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalyproxy.config import load_config_text
from scalyproxy.policy.schema import Schema, describe
from scalyproxy.wire import command_view, encode_op_msg, make_frame
from scalyproxy.wire.command import DocumentRun
from scalyproxy.wire.documents import HAVE_SCAN
from tests.unit.policy.conftest import SHOP, blog_text, engine_for
from tests.unit.policy.strategies import scalar

pytestmark = pytest.mark.skipif(not HAVE_SCAN, reason="the C extension is not built")

EXTRA = """
collections:
  t.mixed:
    structure:
      n: number?
      l: long
      a: [[int]]
      o: {x: "string?", y: [object]}
      anyv: any
      flags: bool?
      d: "date | null"
    required: [n, o]
    indexes: [{fields: [n]}]
  t.open:
    structure: {k: int, sub: {q: string}}
    required: [k, sub.q]
    additional_fields: true
    indexes: [{fields: [k]}]
"""


def schemas() -> dict[str, Schema]:
    out: dict[str, Schema] = {}
    for text in (blog_text(), SHOP, EXTRA):
        for ns, coll in load_config_text(text).collections.items():
            if coll.structure is not None:
                out[ns] = Schema(coll.structure)
    return out


SCHEMAS = schemas()

names = st.sampled_from(
    ["author", "title", "body", "unique_views", "comments", "comment", "rank", "customer", "id",
     "region", "total", "created", "status", "tags", "lines", "sku", "qty", "meta", "note", "big",
     "flags", "stamp", "email", "name", "age", "msg", "level", "n", "l", "a", "o", "x", "y",
     "anyv", "d", "k", "sub", "q", "_id", "other", "$ref", "$id"]
)  # fmt: skip
values = st.recursive(
    scalar,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(names, children, max_size=4),
    max_leaves=10,
)
documents = st.dictionaries(names, values, max_size=8)


def c_confirms(schema: Schema, raw: bytes) -> bool:
    unsure = schema.unconfirmed(memoryview(raw))
    assert unsure is not None
    return unsure == []


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(SCHEMAS)), documents)
def test_c_confirms_only_what_python_accepts(ns: str, doc: dict[str, Any]) -> None:
    schema = SCHEMAS[ns]
    raw = bson.encode(doc)
    if c_confirms(schema, raw):
        assert schema.root.ok(bson.decode(raw)), (ns, doc)


VALID = {
    "blog.blog_posts": {
        "_id": ObjectId(),
        "author": "ann",
        "title": "t",
        "body": "b",
        "unique_views": 3,
        "comments": [{"author": "bob", "comment": "c", "rank": 1}, {}],
    },
    "t.mixed": {
        "n": 1.5,
        "l": 7,
        "a": [[1, 2], []],
        "o": {"x": None, "y": [{}, {"z": 1}]},
        "anyv": DBRef("c", 1),
        "flags": None,
        "d": datetime.datetime(2024, 1, 1),
    },
    "t.open": {"k": 1, "sub": {"q": "x", "more": 1}, "extra": [1]},
}


@pytest.mark.parametrize("ns", sorted(VALID))
def test_ordinary_documents_are_confirmed(ns: str) -> None:
    schema = SCHEMAS[ns]
    assert schema.compiled is not None
    raw = bson.encode(VALID[ns])
    assert schema.root.ok(bson.decode(raw)) and c_confirms(schema, raw)


@pytest.mark.parametrize(
    "ns, change",
    [
        ("blog.blog_posts", {"unique_views": Int64(3)}),  # long is not int
        ("blog.blog_posts", {"unique_views": 2**40}),
        ("blog.blog_posts", {"comments": [{"rank": "1"}]}),
        ("blog.blog_posts", {"comments": None}),  # not nullable
        ("blog.blog_posts", {"author": None}),
        ("blog.blog_posts", {"other": 1}),  # additional fields refused
        ("t.mixed", {"o": DBRef("c", 1)}),  # a DBRef is not an embedded document here
        ("t.mixed", {"o": SON([("$ref", "c"), ("$id", 1)])}),
        ("t.mixed", {"a": [[1, "x"]]}),
        ("t.mixed", {"l": 1.0}),
        ("t.open", {"sub": {"more": 1}}),  # sub.q required
    ],
)
def test_invalid_documents_are_left_to_python(ns: str, change: dict[str, Any]) -> None:
    schema = SCHEMAS[ns]
    raw = bson.encode({**VALID[ns], **change})
    assert not schema.root.ok(bson.decode(raw))
    assert not c_confirms(schema, raw)


def test_missing_required_field_and_positions() -> None:
    schema = SCHEMAS["blog.blog_posts"]
    good = bson.encode(VALID["blog.blog_posts"])
    bad = bson.encode({"title": "no author"})
    assert schema.unconfirmed(memoryview(good + bad + good + bad)) == [1, 3]
    with pytest.raises(ValueError):
        schema.unconfirmed(memoryview(good[:-1]))


def test_structures_it_cannot_express_are_not_compiled() -> None:
    fields = [f"f{i}" for i in range(65)]  # more required fields than the C checker tracks
    config = load_config_text(
        "collections:\n  t.c:\n    structure: {" + ", ".join(f"{f}: int" for f in fields) + "}\n"
        f"    required: [{', '.join(fields)}]\n    indexes: [{{fields: [f0]}}]\n"
    )
    spec = config.collections["t.c"].structure
    assert spec is not None
    schema = Schema(spec)
    assert describe(schema.root) is None and schema.compiled is None
    assert schema.unconfirmed(memoryview(bson.encode({"f0": 1}))) is None


def test_the_engine_refuses_through_either_path() -> None:
    """A refused insert names the bad document whether C or Python looked first."""
    engine = engine_for(blog_text())
    good = VALID["blog.blog_posts"]
    docs = [good, {**good, "unique_views": "many"}, good]
    message = encode_op_msg(
        {"insert": "blog_posts", "$db": "blog"}, request_id=1, sequences={"documents": docs}
    )
    view = command_view(make_frame(message))
    assert isinstance(view.sequences["documents"], DocumentRun)
    verdict = engine.decide(view)
    assert verdict.refusal is not None and "documents.1" in verdict.refusal.message
    ok_message = encode_op_msg(
        {"insert": "blog_posts", "$db": "blog"}, request_id=2, sequences={"documents": [good] * 3}
    )
    assert engine.decide(command_view(make_frame(ok_message))).refusal is None


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(VALID)), st.dictionaries(names, values, max_size=2), st.data())
def test_near_valid_documents_agree(ns: str, change: dict[str, Any], data: st.DataObject) -> None:
    """Valid documents with a field or two changed: confirmed only if Python accepts, and
    every document Python accepts whose values are all plain is confirmed too."""
    schema = SCHEMAS[ns]
    doc = {**VALID[ns], **change}
    for key in data.draw(st.lists(st.sampled_from(sorted(doc)), max_size=2)):
        doc.pop(key, None)
    raw = bson.encode(doc)
    py_ok = schema.root.ok(bson.decode(raw))
    c_ok = c_confirms(schema, raw)
    assert py_ok or not c_ok, doc
    if py_ok and not any(k.startswith("$") for k in _all_keys(doc)):
        assert c_ok, doc


def _all_keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in _all_keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in _all_keys(v)]
    return []
