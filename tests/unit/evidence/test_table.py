"""The profile table: latency buckets, outcomes, bounds, merging, JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalyproxy.evidence.table import (
    ALLOWED,
    BUCKETS,
    ProfileTable,
    Row,
    bucket_of,
    outcome_of,
    percentile,
    upper_bound,
)
from scalyproxy.policy import Finding, Verdict


@given(st.floats(min_value=1e-5, max_value=200.0))
def test_a_latency_falls_in_its_bucket(seconds: float) -> None:
    i = bucket_of(seconds)
    assert 0 <= i < BUCKETS
    assert seconds < upper_bound(i)
    if i > 0:
        assert upper_bound(i - 1) <= seconds
    assert upper_bound(i) / seconds < 1.26  # at most ~25% above the value (12.5% wide buckets)


def test_buckets_are_increasing_and_clamped() -> None:
    bounds = [upper_bound(i) for i in range(BUCKETS)]
    assert bounds == sorted(bounds) and len(set(bounds)) == BUCKETS
    assert bucket_of(0) == bucket_of(-1) == bucket_of(1e-9) == 0
    assert bucket_of(1e6) == BUCKETS - 1
    assert upper_bound(bucket_of(0.001)) == 0.001220703125  # 0.001 = 0.512 * 2**-9: [2**-10, 0.625 * 2**-9)


def test_percentiles_from_buckets() -> None:
    buckets = {bucket_of(0.001): 90, bucket_of(0.010): 9, bucket_of(1.0): 1}
    assert percentile(buckets, 0.5) == upper_bound(bucket_of(0.001))
    assert percentile(buckets, 0.95) == upper_bound(bucket_of(0.010))
    assert percentile(buckets, 0.999) == upper_bound(bucket_of(1.0))
    assert percentile({}, 0.5) is None


def _finding(rule: Any) -> Finding:
    return Finding(rule, 1, "X", "why", "d.c", "find", None)


def test_outcomes() -> None:
    assert outcome_of(Verdict(None, (), ("d.c",), "find", False)) == ALLOWED
    warned = Verdict(None, (_finding("unindexed_query"), _finding("global_query"), _finding("global_query")), (), "find", False)
    assert outcome_of(warned) == "warned:global_query,unindexed_query"
    assert outcome_of(Verdict(_finding("schema"), (_finding("global_query"),), (), "insert", False)) == "refused:schema"


# -- rows and tables -----------------------------------------------------------------

rows = st.builds(
    lambda shape, app, allowed, outcomes, latencies, first, span: (shape, app, allowed, outcomes, latencies, first, span),
    st.integers(1, 6), st.sampled_from([None, "web", "batch"]), st.integers(0, 5),
    st.dictionaries(st.sampled_from(["warned:global_query", "refused:schema"]), st.integers(1, 4), max_size=2),
    st.lists(st.floats(min_value=1e-5, max_value=10), max_size=4), st.floats(1e9, 2e9), st.floats(0, 1000),
)


def build(spec: tuple[Any, ...]) -> Row:
    shape, app, allowed, outcomes, latencies, first, span = spec
    row = Row(shape, app, "d.c", "find", {"find": "c", "filter": {"a": f"<int#{shape}>"}}, first)
    row.last_seen = first + span
    row.allowed = allowed
    row.outcomes = dict(outcomes)
    row.count = allowed + sum(outcomes.values())
    for s in latencies:
        row.observe(s)
    return row


def table_of(specs: list[tuple[Any, ...]], max_shapes: int = 100) -> ProfileTable:
    t = ProfileTable(max_shapes, since=1e9)
    t.merge_rows(build(s) for s in specs)
    return t


def figures(t: ProfileTable) -> dict[Any, Any]:
    doc = t.to_json()
    return {(r["shape_id"], r["app"]): (r["count"], r["outcomes"], r["latency"]["buckets"], r["first_seen_s"],
                                         r["last_seen_s"], round(r["latency"]["sum_s"], 9)) for r in doc["rows"]}


@settings(max_examples=300, deadline=None)
@given(st.lists(rows, max_size=12), st.lists(rows, max_size=12))
def test_merging_two_tables_is_the_table_of_both(a: list[Any], b: list[Any]) -> None:
    merged = table_of(a)
    merged.merge(table_of(b))
    assert figures(merged) == figures(table_of(a + b))
    assert merged.total() == sum(build(s).count for s in a + b)


@settings(max_examples=200, deadline=None)
@given(st.lists(rows, max_size=12))
def test_json_round_trip_loses_nothing(specs: list[Any]) -> None:
    t = table_of(specs)
    t.overflow.count, t.overflowed_rows = 3, 1
    t.overflow.observe(0.5)
    doc = json.loads(json.dumps(t.to_json()))
    again = ProfileTable.from_json(doc)
    assert again.to_json() == t.to_json()


def test_a_full_table_counts_the_rest_in_the_overflow_row() -> None:
    t = ProfileTable(2, since=0)
    for i in range(1, 4):
        row = t.add(Row(i, None, "d.c", "find", {"find": "c"}, 0))
        row.count += 1
    assert len(t) == 2 and t.overflow.count == 1
    other = ProfileTable(10, since=0)
    for i in range(5, 8):
        other.add(Row(i, "x", "d.c", "find", {"find": "c"}, 0)).count += 2
    assert t.merge(other) == 3
    assert t.overflow.count == 7 and t.overflowed_rows == 3 and t.total() == 9
    doc = t.to_json()
    assert doc["overflow"]["shape_id"] == "overflow" and doc["overflow"]["shape"] is None
    with pytest.raises(ValueError):
        ProfileTable(0)


@pytest.mark.parametrize(
    "doc",
    [[], {"rows": "x"}, {"rows": [{"shape_id": "zz"}]}, {"rows": [{"count": 1}]},
     {"rows": [{"shape_id": "01", "count": "many", "first_seen_s": 1, "last_seen_s": 1}]},
     {"rows": [{"shape_id": "01", "count": 1, "first_seen_s": 1, "last_seen_s": 1, "shape": "text"}]}],
)
def test_what_is_not_a_profile_is_a_value_error(doc: Any) -> None:
    with pytest.raises(ValueError):
        ProfileTable.from_json(doc)


@given(st.floats(min_value=-1.0, max_value=1e7, allow_nan=False))
def test_observe_files_a_latency_where_bucket_of_does(seconds: float) -> None:
    row = Row(1, None, None, None, None, 0.0)
    row.observe(seconds)
    assert row.latency == {bucket_of(seconds): 1}
