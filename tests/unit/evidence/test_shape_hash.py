"""The C shape id (``_scan.shape_hash``, from bytes) against the Python skeleton's.

The relay's fast path finds a profiled row by the C hash of a find's or an
insert's bytes; a shape seen through the engine is found by the hash of its
Python skeleton. Both must name the same row: the C function answers the
Python hash or None (then Python says), never another number. And it must
answer for the ordinary commands, or the fast path would decode them."""

from __future__ import annotations

import datetime
import json
from typing import Any

import bson
import pytest
from bson import Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.binary import Binary
from hypothesis import HealthCheck, assume, given, settings

from bench import messages as m
from scalyproxy.evidence.skeleton import DROPPED, VERBATIM_KEYS, command_of, hash_json, skeleton_of
from scalyproxy.wire import command_view, encode_op_msg, make_frame
from scalyproxy.wire.documents import HAVE_SCAN
from tests.property.commands import MARK, bodies
from tests.unit.policy.fastpath_cases import commands as fastpath_commands
from tests.unit.policy.fastpath_cases import plausible

pytestmark = pytest.mark.skipif(not HAVE_SCAN, reason="the C extension is not built")

if HAVE_SCAN:
    from scalyproxy._scan import shape_hash

TOKEN = MARK.encode()


def python_hash(message: bytes) -> int | None:
    try:
        view = command_view(make_frame(message))
    except Exception:
        return None
    return hash_json(skeleton_of(view.name, view.body, view.sequences, MARK))


def c_agrees(message: bytes) -> int | None:
    """The C hash, after checking it is the Python one (or None). A message the codec
    refuses is never profiled: what C says of it does not matter."""
    got = shape_hash(message, TOKEN)
    expected = python_hash(message)
    if got is not None and expected is not None:
        assert got == expected, command_view(make_frame(message)).body
    return got


def encode(body: dict[str, Any], sequences: dict[str, list[Any]] | None = None) -> bytes:
    return encode_op_msg(body, request_id=9, sequences=sequences or None)


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fastpath_commands())
def test_c_and_python_agree_on_the_fast_path_commands(case: tuple[str, bytes]) -> None:
    c_agrees(case[1])


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible())
def test_c_and_python_agree_on_what_the_fast_path_takes(case: tuple[str, str, bytes]) -> None:
    """The targeted commands fast_decide allows are hashed in C, from their scanned bytes."""
    message = case[2]
    got = shape_hash(message, TOKEN, True)
    if got is not None:
        assert got == python_hash(message)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(bodies())
def test_c_and_python_agree_on_generated_commands(command: tuple[dict[str, Any], dict[str, list[Any]]]) -> None:
    body, sequences = command
    try:
        message = encode(body, sequences)
    except (bson.errors.InvalidDocument, OverflowError):
        assume(False)
    c_agrees(message)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(bodies(), bodies())
def test_same_id_if_and_only_if_same_shape(a: tuple[dict[str, Any], dict[str, list[Any]]],
                                           b: tuple[dict[str, Any], dict[str, list[Any]]]) -> None:
    """Two commands, and each one rebuilt with other values: ids equal exactly when shapes are."""
    shapes, ids = [], []
    for body, sequences in (a, b):
        try:
            message = encode(body, sequences)
            view = command_view(make_frame(message))
        except (bson.errors.InvalidDocument, OverflowError):
            assume(False)
        skeleton = skeleton_of(view.name, view.body, view.sequences, MARK)
        other = command_of(skeleton, MARK)
        rebuilt = encode(dict(other.body), {k: list(v) for k, v in other.sequences.items()})
        for msg in (message, rebuilt):
            v = command_view(make_frame(msg))
            shapes.append(json.dumps(skeleton_of(v.name, v.body, v.sequences, MARK), sort_keys=False))
            c_hash = c_agrees(msg)
            ids.append(c_hash if c_hash is not None else python_hash(msg))
    for i in range(4):
        for j in range(4):
            assert (ids[i] == ids[j]) == (shapes[i] == shapes[j])


FIND = {"find": "blog_posts", "$db": "blog", "lsid": m.LSID}
DOC = {"author": "a", "title": "t", "n": 1, "tags": ["x", "y", 3], "sub": {"a": 1.5, "b": [{"c": None}]}}
EVERY_TYPE = {
    "d": 1.5, "s": "x", "o": {"a": 1}, "a": [1, "x"], "b": Binary(b"x", 0), "u": Binary(b"0" * 16, 4),
    "oid": ObjectId(), "t": True, "dt": datetime.datetime(2020, 1, 1), "n": None, "re": Regex("a", "i"),
    "js": Code("f()"), "jss": Code("f()", {"x": 1}), "i": 5, "ts": Timestamp(1, 2), "l": Int64(7),
    "dec": Decimal128("1.5"), "min": MinKey(), "max": MaxKey(),
}  # fmt: skip


@pytest.mark.parametrize(
    "body, sequences",
    [
        ({**FIND, "filter": {"author": "ann", "title": "t"}}, None),
        ({**FIND, "filter": {"author": {"$in": ["a"]}, "n": {"$gte": 1}}, "sort": {"n": -1}}, None),
        ({**FIND, "filter": {"$or": [{"a": 1}, {"b": {"$exists": True}}], "c": {"$not": {"$gt": 2}}}}, None),
        ({**FIND, "filter": {"tags": {"$elemMatch": {"$eq": "x"}}, "sub": {"a": 1}}, "limit": 1, "singleBatch": True}, None),
        ({**FIND, "filter": {**EVERY_TYPE, "a": [1]}, "projection": {"a": 1}}, None),
        ({**FIND, "filter": {"a": 1}, "collation": {"locale": "fr", "strength": 2}, "hint": {"a": 1}}, None),
        ({**FIND, "filter": {"a": 1}, "hint": "<weird>", "comment": f"job {MARK}"}, None),
        ({**FIND, "filter": {"<a": 1, "\\b": "<x>"}, "comment": "no marker here", "sort": {"a": Int64(1)}}, None),
        ({**FIND, "filter": {"a": 1}, "sort": {"a": 1.0, "b": float("nan"), "c": "\\x", "d": True, "e": None}}, None),
        ({"insert": "blog_posts", "$db": "blog", "ordered": True}, {"documents": [DOC] * 5 + [EVERY_TYPE, DOC]}),
        ({"insert": "blog_posts", "$db": "blog", "documents": [DOC, EVERY_TYPE, DOC], "bypassDocumentValidation": False}, None),
        ({"insert": "c", "$db": "d"}, {"documents": [{"a": {"$gt": 1}, "b": [[1, 2], [2, 1], {"c": 1}]}]}),
    ],
)
def test_c_hashes_ordinary_finds_and_inserts(body: dict[str, Any], sequences: dict[str, list[Any]] | None) -> None:
    assert c_agrees(encode(body, sequences)) is not None


def test_the_benchmark_messages_are_hashed_in_c() -> None:
    assert c_agrees(m.find_by_key(1)) is not None
    assert c_agrees(m.insert_one(1)) is not None
    assert c_agrees(m.insert_many(0)) is not None
    assert shape_hash(m.find_by_key(1), TOKEN) == shape_hash(m.find_by_key(2), TOKEN)  # other values


@pytest.mark.parametrize("key", sorted(DROPPED | VERBATIM_KEYS | {"filter", "query", "documents", "x", "<y"}))
@pytest.mark.parametrize("value", [1, "s", {"a": [1, "b"]}, [1, {"a": "x"}], True, Int64(3), 2.5, None])
def test_every_top_level_field_agrees(key: str, value: Any) -> None:
    body = {"find": "c", "filter": {"a": 1}, "$db": "d"}
    body[key] = value
    if key == "$db" and not isinstance(value, str):
        return  # the codec refuses it
    c_agrees(encode(body))


UPDATE = {"q": {"a": 1, "k": {"$in": [1]}}, "u": {"$set": {"b": 2}, "$rename": {"c": "d"}, "$currentDate": {"t": True}},
          "upsert": True, "multi": False}
PIPELINE = [
    {"$match": {"a": {"$gt": 1}}}, {"$sort": {"a": -1}},
    {"$lookup": {"from": "o", "localField": "a", "foreignField": "b", "as": "j",
                 "pipeline": [{"$match": {"b": {"$exists": True}}}]}},
    {"$unionWith": {"coll": "u", "pipeline": [{"$project": {"a": 1, "b": "$c", "d": {"$literal": "v"}}}]}},
    {"$facet": {"f": [{"$set": {"z": {"$add": ["$a", 1]}}}], "g": [{"$count": "n"}]}},
    {"$graphLookup": {"from": "g", "startWith": "$a", "connectFromField": "a", "connectToField": "b", "as": "h",
                      "restrictSearchWithMatch": {"k": 1}, "maxDepth": 2}},
    {"$group": {"_id": "$a", "n": {"$sum": 1}}}, {"$unset": ["x", "y"]}, {"$merge": {"into": "out", "on": "_id"}},
]


@pytest.mark.parametrize(
    "body, sequences",
    [
        ({"update": "c", "updates": [UPDATE, UPDATE, {**UPDATE, "u": [{"$set": {"a": "$b"}}]}], "$db": "d"}, None),
        ({"update": "c", "ordered": False, "$db": "d"}, {"updates": [UPDATE] * 3}),
        ({"delete": "c", "deletes": [{"q": {"a": 1}, "limit": 1}, {"q": {}, "limit": 0}], "$db": "d"}, None),
        ({"delete": "c", "$db": "d"}, {"deletes": [{"q": {"a": {"$exists": True}}, "limit": 1}]}),
        ({"findAndModify": "c", "query": {"a": 1}, "update": {"$inc": {"n": 1}}, "new": True, "sort": {"a": 1},
          "$db": "d"}, None),
        ({"findAndModify": "c", "query": {"a": 1}, "remove": True, "$db": "d"}, None),
        ({"aggregate": "c", "pipeline": PIPELINE, "cursor": {}, "$db": "d"}, None),
        ({"aggregate": 1, "pipeline": [{"$currentOp": {}}], "cursor": {}, "$db": "admin"}, None),
        ({"count": "c", "query": {"a": 1, "$or": [{"b": 1}, {"c": 2}]}, "limit": 5, "$db": "d"}, None),
        ({"distinct": "c", "key": "a", "query": {"b": {"$in": ["x"]}}, "$db": "d"}, None),
        ({"getMore": Int64(12345), "collection": "c", "$db": "d"}, None),
        ({"bulkWrite": 1, "ops": [{"insert": 0, "document": {"a": 1}}, {"update": 1, "filter": {"a": 1},
          "updateMods": {"$set": {"b": 1}}, "multi": True}], "nsInfo": [{"ns": "d.c"}, {"ns": "d.e"}], "$db": "admin"},
         None),
        ({"drop": "c", "$db": "d"}, None),
        ({"ping": 1, "$db": "admin"}, None),
    ],
)
def test_c_hashes_the_other_common_commands(body: dict[str, Any], sequences: dict[str, list[Any]] | None) -> None:
    assert c_agrees(encode(body, sequences)) is not None


RANKED = [
    {"a": {"$in": [1, 2, 2.0, Int64(3)]}},
    {"a": {"$gte": 1, "$lt": 5.5}, "b": {"$gt": "x", "$lte": "y"}},
    {"$or": [{"a": 1}, {"a": 2}], "b": 1},
    {"a": [1, 2], "b": {"$in": [ObjectId(b"a" * 12), ObjectId(b"b" * 12)]}},
    {"a": 1, "$and": [{"a": 2}, {"a": {"$in": [True, False, None]}}]},
    {"k": {"$nin": [datetime.datetime(2020, 1, 1), datetime.datetime(2021, 1, 1)]}},
    {"t": {"$gt": Timestamp(1, 2), "$lt": Timestamp(1, 3)}, "d": {"$in": [float("nan"), 1.5, -0.0, 0]}},
    {"a": {"$elemMatch": {"b": 1, "c": {"$in": [2, 3]}}}, "z": {"$exists": True, "$ne": None}},
    {"a": {"$in": [MinKey(), MaxKey(), 2**40, -(2**40), 1e300, -1e300]}},
]


@pytest.mark.parametrize("query", RANKED)
def test_c_ranks_the_values_of_a_query_path(query: dict[str, Any]) -> None:
    for body in ({"find": "c", "filter": query, "$db": "d"},
                 {"delete": "c", "deletes": [{"q": query, "limit": 1}], "$db": "d"},
                 {"aggregate": "c", "pipeline": [{"$match": query}], "cursor": {}, "$db": "d"}):
        assert c_agrees(encode(body)) is not None, body


@pytest.mark.parametrize(
    "body, sequences",
    [
        ({"find": "c", "filter": {"r": {"$ref": "x", "$id": 1}}, "$db": "d"}, None),
        ({"find": "c", "filter": {"$expr": {"$eq": ["$a", 1]}}, "$db": "d"}, None),  # ranked as a whole
        ({"find": "c", "filter": {"a": 1}, "let": {"x": 1}, "$db": "d"}, None),
        ({"aggregate": "c", "pipeline": [{"$lookup": {"from": "o", "let": {"x": "$a"}, "as": "j",
          "pipeline": [{"$match": {"$expr": {"$eq": ["$b", "$$x"]}}}]}}], "cursor": {}, "$db": "d"}, None),
        ({"find": "c", "filter": {"a": {"$in": [Binary(b"x", 0), Binary(b"y", 0)]}}, "$db": "d"}, None),  # ranked
        ({"find": "c", "filter": {"a": {"$gte": Decimal128("1"), "$lt": 5}}, "$db": "d"}, None),  # in Python
        ({"find": "c", "filter": {}, "comment": {"a": MARK}, "$db": "d"}, None),
        ({"update": "c", "updates": [{"q": {"a": 1}, "u": {"a": 1, "b": 2}}], "$db": "d"}, None),  # a replacement
        ({"findAndModify": "c", "query": {"a": 1}, "update": {"a": 1}, "$db": "d"}, None),
        ({"explain": {"find": "c", "filter": {}}, "$db": "d"}, None),
        ({"insert": "c", "$db": "d"}, {"other": [{"a": 1}]}),
        ({"bulkWrite": 1, "$db": "admin"}, {"nsInfo": [{"ns": "d.c"}], "ops": [{"insert": 0, "document": {}}]}),
    ],
)
def test_what_c_leaves_to_python(body: dict[str, Any], sequences: dict[str, list[Any]] | None) -> None:
    message = encode(body, sequences)
    assert shape_hash(message, TOKEN) is None
    assert python_hash(message) is not None


def test_deep_nesting_is_left_to_python() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = {"a": deep}
    assert shape_hash(encode({"find": "c", "filter": deep, "$db": "d"}), TOKEN) is None
    shallow: Any = 1
    for _ in range(12):
        shallow = {"a": shallow}
    assert c_agrees(encode({"find": "c", "filter": shallow, "$db": "d"})) is not None


@pytest.mark.parametrize("cut", [0, 5, 16, 20, 21, 30, -1, -7])
def test_truncated_or_odd_bytes_are_none_or_agree(cut: int) -> None:
    message = encode({"find": "c", "filter": {"a": {"$in": [1, 2]}}, "$db": "d"}, None)
    broken = message[:cut] if cut >= 0 else message[:cut] + b"\x01" * -cut
    assert shape_hash(broken, TOKEN) is None
    assert shape_hash(bytearray(message), TOKEN) == shape_hash(memoryview(message), TOKEN) == c_agrees(message)
    with pytest.raises(TypeError):
        shape_hash(message, "not bytes")  # type: ignore[arg-type]


def test_the_marker_is_the_running_one() -> None:
    body = {"find": "c", "filter": {"a": 1}, "comment": "run by the nightly job", "$db": "d"}
    assert shape_hash(encode(body), b"nightly") != shape_hash(encode(body), TOKEN)
    assert shape_hash(encode(body), TOKEN) == shape_hash(encode({**body, "comment": "x"}), TOKEN)
