"""The skeleton of a command is decided like the command, under any config.

This is what makes the traffic profile evidence: ``scalyproxy whatif`` decides
recorded skeletons with the engine that decides live traffic, so each skeleton
must give the verdict its command gives: the same refusal (rule, code,
namespace) or none, the same warning rules, the same namespaces, the same use
of the allow marker. Commands go through the wire codec first, as in the relay.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import bson
from bson.int64 import Int64
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from scalyproxy.config import ProxyConfig
from scalyproxy.evidence.skeleton import command_of, hash_json, skeleton_of
from scalyproxy.policy import Engine, Verdict
from scalyproxy.wire import command_view, encode_op_msg, make_frame
from scalyproxy.wire.errors import ProtocolError

try:
    from scalyproxy._scan import shape_hash
except ImportError:  # pragma: no cover
    shape_hash = None  # type: ignore[assignment]
from tests.property.commands import MARK, bodies, configs


def summary(v: Verdict) -> tuple[Any, ...]:
    refusal = None if v.refusal is None else (v.refusal.rule, v.refusal.code, _ns(v.refusal.namespace))
    warnings = sorted({w.rule for w in v.warnings}) if v.refusal is None else None
    return refusal, warnings, tuple(_ns(n) for n in v.namespaces), v.marker_used, v.command


def _ns(namespace: str | None) -> str | None:
    """A namespace whose name is not UTF-8 (wire.ambiguous) is undeclared whatever its bytes:
    a skeleton keeps that, not the bytes."""
    if namespace is None:
        return None
    try:
        namespace.encode("utf-8")
    except UnicodeEncodeError:
        return namespace.partition(".")[0] + ".<not UTF-8>"
    return namespace


def view_of(body: dict[str, Any], sequences: dict[str, list[Any]]) -> Any:
    try:
        message = encode_op_msg(body, request_id=7, sequences=sequences or None)
        return command_view(make_frame(message))
    except (bson.errors.InvalidDocument, OverflowError, ValueError):
        return None


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(configs(), bodies())
def test_a_skeleton_is_decided_like_its_command(cfg: ProxyConfig, command: tuple[dict[str, Any], dict[str, list[Any]]]) -> None:
    view = view_of(*command)
    assume(view is not None)
    engine = Engine(cfg)
    skeleton = skeleton_of(view.name, view.body, view.sequences, MARK)
    again = command_of(json.loads(json.dumps(skeleton)), MARK)  # through its JSON, as sinks store it
    assert summary(engine.decide(again)) == summary(engine.decide(view)), json.dumps(skeleton)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies())
def test_the_skeleton_of_a_rebuilt_command_is_the_same(command: tuple[dict[str, Any], dict[str, list[Any]]]) -> None:
    """Fresh values in the same places give the same skeleton: shapes group."""
    view = view_of(*command)
    assume(view is not None)
    skeleton = skeleton_of(view.name, view.body, view.sequences, MARK)
    rebuilt = command_of(skeleton, MARK)
    again = view_of(dict(rebuilt.body), {k: list(v) for k, v in rebuilt.sequences.items()})
    assert again is not None
    assert skeleton_of(again.name, again.body, again.sequences, MARK) == skeleton
    assert hash_json(skeleton) == hash_json(json.loads(json.dumps(skeleton)))


MARKS = st.sampled_from([MARK, "other-marker"])


@settings(max_examples=300, deadline=None)
@given(configs(), st.sampled_from(["find", "aggregate"]), MARKS)
def test_the_marker_flag_follows_the_running_marker(cfg: ProxyConfig, name: str, marker: str) -> None:
    """A comment counts as "carried the marker" for the marker of the config it ran under."""
    body = {name: "a", "filter": {}, "pipeline": [], "comment": f"job {marker}", "$db": "d"}
    skeleton = skeleton_of(name, body, None, MARK)
    assert ("comment" in skeleton) == (marker == MARK)


secrets = st.text("0123456789abcdef", min_size=12, max_size=12).map(lambda s: "S" + s)
numbers = st.integers(10**9, 2**31 - 1) | st.floats(1e12, 1e15)
leaf = secrets | numbers
value_trees = st.recursive(leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(
    st.sampled_from(["a", "b", "$in", "$gt", "$eq", "x"]), c, max_size=3), max_leaves=8)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), value_trees, max_size=4),
       st.lists(st.dictionaries(st.sampled_from(["a", "b"]), value_trees, max_size=3), max_size=3),
       value_trees, st.sampled_from(["find", "update", "insert", "aggregate", "findAndModify", "delete"]))
def test_a_skeleton_carries_no_value(filt: dict[str, Any], docs: list[dict[str, Any]], extra: Any, name: str) -> None:
    """Random strings and numbers in every value position: none of them is in the skeleton's JSON."""
    body: dict[str, Any] = {name: "c", "$db": "d", "comment": "S-not-a-marker"}
    if name == "find":
        body.update(filter=filt, projection={"a": extra})
    elif name == "update":
        body["updates"] = [{"q": filt, "u": {"$set": {"a": extra}}}, {"q": filt, "u": docs[0] if docs else {"a": extra}}]
    elif name == "insert":
        body["documents"] = [*docs, {"a": extra}]
    elif name == "aggregate":
        body.update(pipeline=[{"$match": filt}, {"$set": {"x": {"$literal": extra}}}, {"$limit": extra}], cursor={})
    elif name == "findAndModify":
        body.update(query=filt, update={"a": extra, **(docs[0] if docs else {})})
    else:
        body["deletes"] = [{"q": filt, "limit": 0}]
    view = view_of(body, {})
    assume(view is not None)
    text = json.dumps(skeleton_of(view.name, view.body, view.sequences, MARK))
    leaves: list[Any] = []
    _collect(body, leaves)
    for v in leaves:
        if isinstance(v, str) and v.startswith("S"):
            assert v not in text
        elif isinstance(v, int | float) and not isinstance(v, bool) and abs(v) >= 10**9:
            assert repr(v) not in text and str(int(v)) not in text


def _collect(value: Any, out: list[Any]) -> None:
    if isinstance(value, dict):
        for v in value.values():
            _collect(v, out)
    elif isinstance(value, list):
        for v in value:
            _collect(v, out)
    else:
        out.append(value)


# -- the engine compares the values a query puts on a shard-key field -------------------


def decided_alike(cfg: ProxyConfig, body: dict[str, Any]) -> None:
    """``body`` and its skeleton (through JSON) get the same verdict under ``cfg``."""
    view = view_of(body, {})
    assume(view is not None)
    engine = Engine(cfg)
    skeleton = skeleton_of(view.name, view.body, view.sequences, MARK)
    again = command_of(json.loads(json.dumps(skeleton)), MARK)
    assert summary(engine.decide(again)) == summary(engine.decide(view)), json.dumps(skeleton)


SMALL = [1, 2, 3, 1.0, 2.5, Int64(2), "a", "b", None, True, [1, 2], [2], []]
small = st.sampled_from(SMALL)
key_predicate = st.one_of(
    small,
    st.builds(lambda vs: {"$in": vs}, st.lists(small, min_size=1, max_size=4)),
    st.builds(lambda a, b: {"$gte": a, "$lte": b}, small, small),
    st.builds(lambda a, b: {"$gt": a, "$lt": b}, small, small),
    st.builds(lambda a, vs: {"$eq": a, "$in": vs}, small, st.lists(small, min_size=1, max_size=3)),
    st.builds(lambda vs: {"$all": vs}, st.lists(small, min_size=1, max_size=2)),
)


@st.composite
def key_queries(draw: st.DrawFn) -> dict[str, Any]:
    query: dict[str, Any] = {}
    for path in draw(st.lists(st.sampled_from(["k", "a"]), unique=True, max_size=2)):
        query[path] = draw(key_predicate)
    for _ in range(draw(st.integers(0, 2))):
        branches = [{draw(st.sampled_from(["k", "a"])): draw(key_predicate)} for _ in range(draw(st.integers(1, 3)))]
        query.setdefault("$and", []).append({"$or": branches} if draw(st.booleans()) else branches[0])
    return query


@st.composite
def keyed_configs(draw: st.DrawFn) -> ProxyConfig:
    from scalyproxy.config import load_config_text

    hashed = draw(st.booleans())
    fields = "{k: hashed}" if hashed else draw(st.sampled_from(["[k]", "[k, a]", "[a, k]"]))
    text = f"""
policy:
  targeting: {draw(st.sampled_from(["full", "prefix"]))}
  rules: {{global_query: enforce, unindexed_query: off}}
collections:
  d.c:
    indexes:
      - {{fields: {fields}, shard_key: true}}
"""
    return load_config_text(text)


@settings(max_examples=2500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keyed_configs(), key_queries(), st.sampled_from(["find", "update", "delete"]))
def test_ranked_values_keep_the_points_and_ranges_of_shard_key_fields(cfg: ProxyConfig, query: dict[str, Any],
                                                                     name: str) -> None:
    """``{k: {$in: [1, 1]}}`` is one point, ``{k: {$gt: 3, $lt: 1}}`` is empty: the skeleton must say so."""
    if name == "find":
        body: dict[str, Any] = {"find": "c", "filter": query, "$db": "d"}
    elif name == "update":
        body = {"update": "c", "updates": [{"q": query, "u": {"$set": {"z": 1}}, "multi": True}], "$db": "d"}
    else:
        body = {"delete": "c", "deletes": [{"q": query, "limit": 0}], "$db": "d"}
    decided_alike(cfg, body)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keyed_configs(), key_queries(), st.lists(st.tuples(st.sampled_from(["$k", "$a"]), small), max_size=2),
       small, st.sampled_from(["$k", "$a"]), st.sampled_from(["find", "aggregate", "update"]))
def test_expression_constants_and_let_variables_compare_with_the_query(
        cfg: ProxyConfig, query: dict[str, Any], lets: list[tuple[str, Any]], constant: Any, field: str,
        name: str) -> None:
    """``{k: 1, $expr: {$eq: ["$k", "$$x"]}}`` with ``let: {x: 1}`` is one point, with ``x: 2`` none."""
    exprs: list[Any] = [{"$eq": [path, f"$$x{i}"]} for i, (path, _) in enumerate(lets)] + [{"$eq": [constant, field]}]
    query = {**query, "$expr": {"$and": exprs} if len(exprs) > 1 else exprs[0]}
    let = {f"x{i}": v for i, (_, v) in enumerate(lets)}
    if name == "find":
        body: dict[str, Any] = {"find": "c", "filter": query, "let": let, "$db": "d"}
    elif name == "aggregate":
        body = {"aggregate": "c", "pipeline": [{"$match": query}], "cursor": {}, "let": let, "$db": "d"}
    else:
        body = {"update": "c", "updates": [{"q": query, "u": {"$set": {"z": 1}}}], "let": let, "$db": "d"}
    decided_alike(cfg, body)


# -- parts the proxy and the server could read two ways (wire.ambiguous) -----------------


class Pairs(list):  # type: ignore[type-arg]
    """A document as (key, value) pairs, a key maybe twice."""


BAD = object()  # a string that is not UTF-8


def _doc(pairs: list[tuple[str, Any]]) -> bytes:
    elements = b"".join(_element(k, v) for k, v in pairs)
    return struct.pack("<i", 5 + len(elements)) + elements + b"\x00"


def _element(key: str, value: Any) -> bytes:
    name = key.encode() + b"\x00"
    if isinstance(value, Pairs):
        return b"\x03" + name + _doc(value)
    if isinstance(value, dict):
        return b"\x03" + name + _doc(list(value.items()))
    if isinstance(value, list):
        return b"\x04" + name + _doc([(str(i), v) for i, v in enumerate(value)])
    if value is BAD:
        return b"\x02" + name + struct.pack("<i", 3) + b"\xff\xfe\x00"
    return bson.encode({key: value})[4:-1]


@st.composite
def corrupted(draw: st.DrawFn, value: Any, depth: int = 0) -> Any:
    """``value`` with, here and there, a key repeated or a string made not UTF-8."""
    if isinstance(value, dict):
        pairs = Pairs((k, draw(corrupted(v, depth + 1))) for k, v in value.items())
        if pairs and depth and draw(st.integers(0, 5)) == 0:
            key, item = pairs[draw(st.integers(0, len(pairs) - 1))]
            pairs.append((key, item if draw(st.booleans()) else draw(small)))
        return pairs
    if isinstance(value, list):
        return [draw(corrupted(v, depth + 1)) for v in value]
    if isinstance(value, str) and depth > 1 and draw(st.integers(0, 4)) == 0:
        return BAD
    return value


@settings(max_examples=1200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(configs(), bodies(), st.data())
def test_doubtful_parts_are_decided_as_before(cfg: ProxyConfig, command: tuple[dict[str, Any], dict[str, list[Any]]],
                                             data: st.DataObject) -> None:
    """A repeated key or a string that is not UTF-8 where the verdict reads is refused (rule ambiguous),
    elsewhere ignored: the skeleton keeps the doubt, so its verdict is the command's."""
    body, _ = command
    pairs = data.draw(corrupted(body))
    raw = _doc(pairs)
    message = struct.pack("<iiii", 16 + 5 + len(raw), 7, 0, 2013) + b"\x00\x00\x00\x00\x00" + raw
    try:
        view = command_view(make_frame(message))
    except ProtocolError:
        assume(False)
    engine = Engine(cfg)
    skeleton = skeleton_of(view.name, view.body, view.sequences, MARK)
    again = command_of(json.loads(json.dumps(skeleton)), MARK)
    assert summary(engine.decide(again)) == summary(engine.decide(view)), json.dumps(skeleton)
    c_hash = shape_hash(message, MARK.encode()) if shape_hash is not None else None
    assert c_hash is None or c_hash == hash_json(skeleton)


def test_a_doubt_deep_in_a_filter_is_rebuilt_inside_a_lenient_document() -> None:
    """Found by the test above: a string that is not UTF-8 in an array under ``$or`` makes the codec
    decode the whole command leniently, and the engine then reads ``$or`` and refuses; the command
    rebuilt from the skeleton must be lenient throughout too, not only where the doubt stands."""
    from scalyproxy.config import load_config_text

    cfg = load_config_text(
        "listen: 127.0.0.1:27017\nupstream: mongodb://127.0.0.1:27018\n"
        "collections:\n  d.a:\n    indexes:\n      - fields: [k]\n        shard_key: true\n")
    for inner in ([BAD], [Pairs([("s", BAD)])], [Pairs([("x", 1), ("x", 2)])]):
        pairs = Pairs([("find", "a"), ("$db", "d"), ("limit", 1),
                       ("filter", Pairs([("k", None), ("$and", [Pairs([("$and", [])])]), ("$or", [Pairs([("a", inner)])])]))])
        raw = _doc(pairs)
        view = command_view(make_frame(struct.pack("<iiii", 16 + 5 + len(raw), 7, 0, 2013) + b"\x00" * 5 + raw))
        skeleton = skeleton_of(view.name, view.body, view.sequences, MARK)
        again = command_of(json.loads(json.dumps(skeleton)), MARK)
        engine = Engine(cfg)
        assert summary(engine.decide(again)) == summary(engine.decide(view)), json.dumps(skeleton)
    assert summary(Engine(cfg).decide(view))[0] is None  # a repeated key there is not read: allowed
