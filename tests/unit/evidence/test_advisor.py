"""Issue 18's pieces without sockets: the value sketches (salted, mergeable, serializable),
the fields traffic fixes by equality, the targeting code's routing classes, the recorder's
sampling (the C fast path included), and the advisor's figures and ranking on a known workload."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from scalyproxy.admin.profile_cli import advise_main
from scalyproxy.config import load_config_text
from scalyproxy.evidence.advisor import AdviseError, advise, format_advice, parse_candidate
from scalyproxy.evidence.fields import candidate_keys, equality_paths, keys_of
from scalyproxy.evidence.recorder import Recorder
from scalyproxy.evidence.sketches import KeySketch, KeyTracker, SketchTable, identity
from scalyproxy.evidence.table import ProfileTable
from scalyproxy.policy import Engine
from scalyproxy.policy.targeting import MULTI, SCATTER, SINGLE, ShardKey
from scalyproxy.wire import command_view, encode_op_msg, make_frame
from scalyproxy.wire.documents import HAVE_SCAN

SALT = "0123456789abcdef0123"
NS = "shop.orders"
CONFIG = f"""
collections:
  {NS}:
    structure: {{order_id: int, customer_id: int, status: string, created_at: int}}
    indexes:
      - {{fields: {{order_id: 1}}, shard_key: true}}
    rules: {{global_query: warn, shard_key_write: warn}}
profile:
  salt: "{SALT}"
  sample_rate: 1.0
  candidates: {{{NS}: [created_at]}}
"""


# -- sketches ------------------------------------------------------------------------


def _tracker(salt: str = SALT) -> KeyTracker:
    return KeyTracker(salt, 8, {NS: [("k",)]})


def test_the_distinct_count_is_within_its_stated_error_and_merges_by_union() -> None:
    tracker, a, b = _tracker(), SketchTable(), SketchTable()
    tracker.feed(a, NS, [("k",)], ({"k": i} for i in range(0, 6000)))
    tracker.feed(b, NS, [("k",)], ({"k": i} for i in range(4000, 10000)))  # 2,000 values in both
    a.merge(b)
    distinct = a.get(NS, "k").distinct()  # type: ignore[union-attr]
    assert distinct["lower"] <= 10_000 <= distinct["upper"]
    assert abs(distinct["estimate"] - 10_000) <= 10_000 * distinct["relative_error"]
    assert a.get(NS, "k").documents == 12_000  # type: ignore[union-attr]


def test_values_never_reach_the_sketch_only_their_salted_hash() -> None:
    table = SketchTable()
    _tracker().feed(table, NS, [("k",)], [{"k": "secret-value-42"}] * 3)
    text = json.dumps(table.to_json())
    assert "secret-value-42" not in text and "secret" not in text
    other = SketchTable()
    _tracker("another-salt-0123456").feed(other, NS, [("k",)], [{"k": "secret-value-42"}])
    mine, theirs = _tracker().digest(["secret-value-42"]), _tracker("another-salt-0123456").digest(["secret-value-42"])
    assert mine != theirs  # another salt, another hash
    table.merge(other)  # sketches of another salt are not merged, but counted
    assert table.salt_mismatches == 1 and table.get(NS, "k").documents == 3  # type: ignore[union-attr]


def test_equal_bson_values_hash_alike() -> None:
    assert identity(1) == identity(1.0) and identity(1) != identity("1")
    tracker = _tracker()
    assert tracker.digest([1]) == tracker.digest([1.0]) != tracker.digest(["1"])


def test_frequencies_are_percentages_and_monotonicity_follows_the_order_of_arrival() -> None:
    tracker, table = _tracker(), SketchTable()
    docs = [{"k": "hot" if i % 2 else f"v{i}", "t": i, "r": random.Random(i).random()} for i in range(400)]
    tracker.feed(table, NS, [("k",), ("t",), ("r",)], docs)
    hot = table.get(NS, "k").most_common()[0]  # type: ignore[union-attr]
    assert hot["percentage"] == 50.0
    assert table.get(NS, "t").monotonicity()["type"] == "monotonic"  # type: ignore[union-attr]
    assert table.get(NS, "r").monotonicity()["type"] == "not monotonic"  # type: ignore[union-attr]
    few = SketchTable()
    tracker.feed(few, NS, [("x",)], [{"x": i} for i in range(3)])
    assert few.get(NS, "x").monotonicity()["type"] == "unknown"  # type: ignore[union-attr]


def test_documents_without_the_key_or_with_an_array_are_counted_apart() -> None:
    table = SketchTable()
    _tracker().feed(table, NS, [("a.b",)], [{"a": {"b": 1}}, {"a": [1]}, {"c": 1}, {"a": {"b": [1, 2]}}])
    sketch = table.get(NS, "a.b")
    assert sketch is not None and (sketch.documents, sketch.missing) == (1, 3)


def test_a_sketch_table_survives_json() -> None:
    tracker, table = _tracker(), SketchTable()
    tracker.feed(table, NS, [("k",), ("k", "t")], [{"k": i % 7, "t": i} for i in range(100)])
    back = SketchTable.from_json(json.loads(json.dumps(table.to_json())))
    assert back.salt_id == table.salt_id
    for ident, sketch in table:
        again = back.keys[ident]
        assert again.distinct() == sketch.distinct() and again.most_common() == sketch.most_common()
        assert again.monotonicity() == sketch.monotonicity()
    with pytest.raises(ValueError):
        KeySketch.from_json({"hll": "not base64!", "freq": ""})


# -- fields --------------------------------------------------------------------------


def test_the_fields_a_query_fixes_by_equality() -> None:
    assert equality_paths({"a": 1, "b": {"$eq": 2}, "c": {"$in": [3]}, "d": {"$gt": 1}, "e": {"$in": [1, 2]}}) == [
        "a", "b", "c"]
    assert equality_paths({"$and": [{"a": 1}, {"b": 2}], "$or": [{"c": 1}, {"d": 1}]}) == ["a", "b"]
    assert equality_paths({"a": [1, 2], "b": {"x": 1}}) == ["b"]
    assert candidate_keys(["a", "b", "c", "d"]) == [("a",), ("b",), ("c",), ("d",), ("a", "b"), ("a", "b", "c")]
    body = {"update": "orders", "updates": [{"q": {"customer_id": 1}, "u": {"$set": {"x": 1}}}]}
    assert keys_of("update", body, {}) == [("customer_id",)]
    assert keys_of("insert", {"insert": "orders"}, {}) == []


# -- routing -------------------------------------------------------------------------


@pytest.mark.parametrize(("keys", "query", "expected"), [
    ((("a", 1),), {"a": 1}, SINGLE),
    ((("a", 1),), {"a": {"$in": [1, 2]}}, MULTI),
    ((("a", 1),), {"a": {"$gt": 1}}, MULTI),
    ((("a", 1),), {"b": 1}, SCATTER),
    ((("a", 1),), {"a": {"$ne": 1}}, SCATTER),
    ((("a", "hashed"),), {"a": {"$gt": 1}}, SCATTER),
    ((("a", "hashed"),), {"a": 5}, SINGLE),
    ((("a", 1), ("b", 1)), {"a": 1}, MULTI),
    ((("a", 1), ("b", 1)), {"a": 1, "b": 2}, SINGLE),
    ((("a", 1), ("b", 1)), {"a": 1, "b": {"$gt": 3, "$lt": 2}}, SINGLE),  # empty: no shard at all
])  # fmt: skip
def test_routing_agrees_with_the_guard(keys: Any, query: Any, expected: int) -> None:
    key = ShardKey(keys, False)
    assert key.routing(query) == expected
    if expected != MULTI:  # one shard: the guard allows it; every shard: it refuses it
        assert (key.missing(query) == []) == (expected == SINGLE)


# -- the recorder --------------------------------------------------------------------


def _msg(body: dict[str, Any], docs: list[dict[str, Any]] | None = None) -> bytes:
    return encode_op_msg(body, request_id=1, sequences={"documents": docs} if docs is not None else None)


def _record(recorder: Recorder, engine: Engine, message: bytes, app: str = "web") -> None:
    view = command_view(make_frame(message))
    recorder.record(app, view, engine.decide(view), message)


def orders_profile(recorder: Recorder, engine: Engine, finds: int = 1000, inserts: int = 3000,
                   app_of_status: str = "reports") -> None:
    """The issue's workload: finds 70% by customer_id, 20% by order_id, 10% by status; inserts."""
    rng = random.Random(18)
    statuses = ["new", "paid", "shipped"]
    for i in range(finds):
        pick = i % 10
        if pick < 7:
            _record(recorder, engine, _msg({"find": "orders", "filter": {"customer_id": rng.randrange(1000)}, "$db": "shop"}))
        elif pick < 9:
            _record(recorder, engine, _msg({"find": "orders", "filter": {"order_id": rng.randrange(10**6)}, "$db": "shop"}))
        else:
            _record(recorder, engine, _msg({"find": "orders", "filter": {"status": rng.choice(statuses)}, "$db": "shop"}),
                    app_of_status)
    for i in range(inserts):
        doc = {"order_id": i, "customer_id": i % 1000, "status": statuses[i % 3], "created_at": 1_700_000_000 + i}
        _record(recorder, engine, _msg({"insert": "orders", "$db": "shop"}, [doc]))


def _recorder(cfg_text: str = CONFIG) -> tuple[Recorder, Engine, Any]:
    cfg = load_config_text(cfg_text)
    from scalyproxy.evidence.fields import configured_keys

    recorder = Recorder(1000, cfg.policy.allow_marker)
    recorder.configure_sketches(cfg.profile.salt, cfg.profile.sample_rate, cfg.profile.sketch_keys,
                                configured_keys(cfg))
    return recorder, Engine.from_config(cfg), cfg


def test_the_advisor_on_the_issue_workload() -> None:
    recorder, engine, cfg = _recorder()
    orders_profile(recorder, engine)
    advice = advise(recorder.snapshot(), cfg, [NS])
    [ns] = advice.namespaces
    by_key = {a.candidate.label: a for a in ns.assessments}
    customer = by_key["{customer_id: 1}"]
    assert customer.dist.read_json()["percentageOfSingleShardReads"] == 70.0
    assert customer.dist.read_json()["percentageOfScatterGatherReads"] == 30.0
    chars = customer.chars
    assert chars is not None
    low, high = chars["numDistinctValuesBounds"]
    assert low <= 1000 <= high
    assert chars["monotonicity"]["type"] == "not monotonic"
    assert by_key["{status: 1}"].blocking and "too low cardinality" in by_key["{status: 1}"].risks[0]
    assert by_key["{created_at: 1}"].chars["monotonicity"]["type"] == "monotonic"  # type: ignore[index]
    assert any("monotonic inserts" in r for r in by_key["{created_at: 1}"].risks)
    assert "{created_at: hashed}" in by_key  # the hashed variant of a monotonic key
    assert ns.assessments[0].candidate.label == "{customer_id: 1}"
    assert ns.recommendation().startswith("shard shop.orders on {customer_id: 1} (ranged)")
    assert "reports (10.0%)" in ns.recommendation()  # who sends the scatter-gather reads that remain
    assert by_key["{order_id: 1}"].candidate.origins[0] == "current shard key"
    text = format_advice(advice)
    assert "Recommendation: shard shop.orders on {customer_id: 1}" in text


def test_sampling_counts_one_insert_in_n_and_the_fast_path_is_sketched_too() -> None:
    recorder, engine, _ = _recorder(CONFIG.replace("sample_rate: 1.0", "sample_rate: 0.25"))
    orders_profile(recorder, engine, finds=10, inserts=400)
    sketch = recorder.table.sketches.get(NS, "customer_id")
    assert sketch is not None and sketch.documents == 100
    if not HAVE_SCAN:
        return
    from scalyproxy._scan import fast_decide

    recorder, engine, _ = _recorder()
    orders_profile(recorder, engine, finds=10, inserts=0)
    for i in range(50):
        message = _msg({"insert": "orders", "$db": "shop"},
                       [{"order_id": i, "customer_id": i, "status": "new", "created_at": i}])
        verdict = fast_decide(message, engine.fast)
        assert verdict is not None  # allowed in C: no view decoded by the engine
        recorder.record("web", None, verdict, message)
    sketch = recorder.table.sketches.get(NS, "order_id")
    assert sketch is not None and sketch.documents == 50


def test_sketches_go_with_a_take_and_merge_back() -> None:
    recorder, engine, _ = _recorder()
    orders_profile(recorder, engine, finds=20, inserts=100)
    taken = recorder.take()
    orders_profile(recorder, engine, finds=0, inserts=100)
    total = ProfileTable(1000)
    total.merge(taken)
    total.merge(recorder.table)
    assert total.sketches.get(NS, "order_id").documents == 200  # type: ignore[union-attr]
    again = ProfileTable.from_json(json.loads(json.dumps(total.to_json())))
    assert again.sketches.get(NS, "order_id").distinct() == total.sketches.get(NS, "order_id").distinct()  # type: ignore[union-attr]


def test_no_salt_no_sketches() -> None:
    recorder, engine, _ = _recorder(CONFIG.replace(f'salt: "{SALT}"', "salt: null"))
    orders_profile(recorder, engine, finds=10, inserts=10)
    assert not recorder.table.sketches


# -- the command line ---------------------------------------------------------------


def test_candidates_parse_or_say_why() -> None:
    c = parse_candidate("shop.orders=customer_id:hashed,created_at")
    assert c.keys == (("customer_id", "hashed"), ("created_at", 1)) and c.label == "{customer_id: hashed, created_at: 1}"
    for bad in ("customer_id", "shop=customer_id", "shop.orders=", "shop.orders=a:ranged", "shop.orders=a:hashed,b:hashed",
                "shop.orders=a,a"):
        with pytest.raises(AdviseError):
            parse_candidate(bad)


def test_advise_command_exit_codes(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    recorder, engine, _ = _recorder()
    orders_profile(recorder, engine, finds=100, inserts=300)
    source = tmp_path / "profile.json"
    source.write_text(json.dumps(recorder.snapshot().to_json()))
    assert advise_main([str(source)], [], ["shop.orders=customer_id:hashed"], None, True) == 0
    doc = json.loads(capsys.readouterr().out)
    keys = [c["key"] for c in doc["namespaces"][0]["candidates"]]
    assert {"customer_id": "hashed"} in keys
    assert advise_main([str(source)], ["shop.nothing"], [], None, False) == 1
    assert advise_main([str(source)], [], ["bad"], None, False) == 2
    assert advise_main([str(tmp_path / "missing.json")], [], [], None, False) == 2
    assert "cannot read" in capsys.readouterr().err


def test_picking_top_level_fields_from_bytes_decodes_them_as_the_codec_does() -> None:
    import datetime

    import bson
    from bson import Decimal128, Int64, ObjectId

    from scalyproxy.wire.documents import decode_run, pick_fields

    docs = [
        {"a": "ünï", "b": 5, "c": Int64(7), "d": 1.5, "e": ObjectId(b"x" * 12), "f": {"g": [1, {"h": None}]},
         "i": datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC), "j": Decimal128("2.5"), "k": True, "l": None,
         "m": bson.Regex("^x", "i"), "n": b"\x00\x01", "o": [1, 2]},
        {"b": -1, "zz": "skip me"},
    ]  # fmt: skip
    run = b"".join(bson.encode(d) for d in docs)
    names = frozenset(k.encode() for k in "abcdefijklmno")
    full = decode_run(run)
    assert pick_fields(run, names) == [{k: v for k, v in d.items() if k.encode() in names} for d in full]
    assert pick_fields(run, frozenset({b"zz"})) == [{}, {"zz": "skip me"}]


def test_a_failing_sketch_never_costs_the_command_its_row(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder, engine, _ = _recorder()
    orders_profile(recorder, engine, finds=10, inserts=0)
    assert recorder.tracker is not None

    def broken(*args: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(recorder.tracker, "feed", broken)
    orders_profile(recorder, engine, finds=0, inserts=3)
    [row] = [r for r in recorder.table if r.command == "insert"]
    assert row.count == 3 and recorder.sketch_errors == 3


def test_a_fleet_of_workers_merges_its_sketches_in_profile() -> None:
    from scalyproxy.admin.fleet import merge_profiles

    halves = []
    for part in range(2):
        recorder, engine, _ = _recorder()
        orders_profile(recorder, engine, finds=10, inserts=0)
        for i in range(part, 200, 2):
            _record(recorder, engine, _msg({"insert": "orders", "$db": "shop"},
                                           [{"order_id": i, "customer_id": i % 50, "status": "new", "created_at": i}]))
        halves.append(recorder.snapshot().to_json())
    merged = ProfileTable.from_json(merge_profiles(halves))
    sketch = merged.sketches.get(NS, "customer_id")
    assert sketch is not None and sketch.documents == 200 and sketch.distinct()["estimate"] == 50
