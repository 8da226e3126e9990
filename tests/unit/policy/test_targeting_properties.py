"""Properties of the targeting model on generated filters (hypothesis): it never raises, it names
key fields only, and what it refuses is exactly what mongos' two steps leave unrouted."""

from __future__ import annotations

import datetime
from typing import Any

from bson import Decimal128, Int64
from bson.datetime_ms import DatetimeMS
from hypothesis import given, settings
from hypothesis import strategies as st

from scalyproxy.policy.bounds import SOME_RANGE, comparison, intersect, points, union
from scalyproxy.policy.targeting import ShardKey

from .strategies import scalar

odd = st.one_of(
    st.just(float("nan")),
    st.just(float("inf")),
    st.just(Decimal128("NaN")),
    st.just(Decimal128("sNaN")),
    st.just(Decimal128("-Infinity")),
    st.just(datetime.datetime(2024, 1, 2, tzinfo=datetime.timezone(datetime.timedelta(hours=2)))),
    st.just(DatetimeMS(-5)),
    st.just(Int64(2**62)),
)
leaf = scalar | odd
paths = st.sampled_from(["a", "b", "a.b", "a.b.c", "c", "a.0", "_id", ""])
ops = st.sampled_from(["$eq", "$in", "$all", "$gt", "$gte", "$lt", "$lte", "$ne", "$nin", "$exists", "$elemMatch", "$bad"])


def operator(children: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return st.dictionaries(ops, children | st.lists(children, max_size=3), min_size=1, max_size=2)


values = st.recursive(
    leaf,
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(paths, children, max_size=3)
    | operator(children),
    max_leaves=10,
)
exprs = st.recursive(
    st.builds(lambda f, v: {"$eq": [f, v]}, st.sampled_from(["$a", "$a.b", "$c", "$$v", "$$w"]), leaf | st.just("$$v")),
    lambda children: st.builds(lambda xs: {"$and": xs}, st.lists(children, max_size=3)),
    max_leaves=5,
)
filters = st.recursive(
    st.dictionaries(paths, values, max_size=4),
    lambda children: st.builds(
        lambda base, extra: {**base, **extra},
        children,
        st.dictionaries(st.sampled_from(["$and", "$or", "$nor"]), st.lists(children, max_size=3), max_size=2)
        | st.builds(lambda e: {"$expr": e}, exprs),
    ),
    max_leaves=12,
)
KEYS = [
    ShardKey([("a", 1)], False),
    ShardKey([("a", 1), ("b", 1)], False),
    ShardKey([("a.b", 1), ("c", 1)], False),
    ShardKey([("a.b", "hashed"), ("c", 1)], True),
    ShardKey([("a", "hashed")], False),
]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(KEYS), filters, st.booleans())
def test_never_raises_and_names_key_fields_in_order(key: ShardKey, filt: dict[str, Any], nonsimple: bool) -> None:
    missing = key.missing(filt, nonsimple, {"v": 3})
    assert missing == [p for p in key.paths if p in missing]


@settings(max_examples=600, deadline=None)
@given(st.sampled_from(KEYS), filters, filters)
def test_a_full_key_of_literals_targets_whatever_stands_beside_it(key: ShardKey, extra: dict[str, Any], more: dict[str, Any]) -> None:
    """Every key field given by a scalar: extraction or the bounds (all points) target it: mongos' fast path."""
    given_key = {p: i for i, p in enumerate(key.paths)}
    assert key.missing({**extra, **given_key}) == []
    assert key.missing({"$and": [given_key, more]}) == []


@given(leaf, leaf)
def test_ranges_of_one_type_bracket_contain_their_points(low: Any, high: Any) -> None:
    above, below = comparison("$gte", low), comparison("$lte", low)
    if above is SOME_RANGE or below is SOME_RANGE:
        return
    for bound in (above, below):
        inside = intersect(points(low), bound)
        assert isinstance(inside, dict) and inside.keys() == points(low).keys()
    greater, less = comparison("$gt", low), comparison("$lt", low)
    if greater is not SOME_RANGE and less is not SOME_RANGE:
        assert intersect(greater, less) == {}  # nothing is both above and below a value
    both = union([points(low), points(high)])
    assert isinstance(both, dict) and both.keys() == {**points(low), **points(high)}.keys()


def test_decimal_nans_are_one_value_and_order_nothing() -> None:
    assert points(Decimal128("NaN")).keys() == points(Decimal128("sNaN")).keys() == points(float("nan")).keys()
    assert comparison("$gt", Decimal128("sNaN")) is SOME_RANGE
    assert points(Decimal128("1.0")).keys() == points(1).keys() == points(1.0).keys() == points(Int64(1)).keys()
    assert points(True).keys() != points(1).keys()
