"""The hooks' accounting in C (``_scan.Series``, ``_scan.RowOps``) against the Python it
stands in for: the same bucket for every value (bucket edges, NaN, infinities, negative
seconds), the same sums to the bit, the same rows counted, no reference leaked; and the
admin hooks, C or Python, expose the same metrics and the same profile."""

from __future__ import annotations

import math
import struct
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import messages as m
from bench.bench_relay import NullTransport
from bench.canned import Canned
from scalyproxy.admin import events as events_module
from scalyproxy.admin import metrics as metrics_module
from scalyproxy.admin.events import AdminHooks
from scalyproxy.admin.metrics import PROXY_BUCKETS, ROUND_TRIP_BUCKETS, Metrics, _Series
from scalyproxy.admin.report import ShadowReport
from scalyproxy.config import load_config
from scalyproxy.evidence import recorder as recorder_module
from scalyproxy.evidence.recorder import Recorder
from scalyproxy.evidence.table import _ENDS, Row
from scalyproxy.server.proxy import Proxy
from scalyproxy.server.relay import ClientConnection, UpstreamConnection
from scalyproxy.wire import encode_op_msg
from scalyproxy.wire.documents import HAVE_SCAN
from tests.conftest import BLOG_CONFIG

pytestmark = pytest.mark.skipif(not HAVE_SCAN, reason="the C extension is not built")

if HAVE_SCAN:
    from scalyproxy._scan import RowOps, Series, fast_decide, shape_hash

MARK = "scaly:allow-global"
TOKEN = MARK.encode()


def bits(x: float) -> bytes:
    """A float's bytes: equal sums are equal to the bit (any NaN is a NaN: its payload depends
    on the order the CPU adds in, and nothing shows it)."""
    return b"nan" if math.isnan(x) else struct.pack("<d", x)


def edges(bounds: tuple[float, ...] | list[float]) -> list[float]:
    """Each bound and the floats either side of it."""
    return [x for b in bounds for x in (math.nextafter(b, -math.inf), b, math.nextafter(b, math.inf))]


SPECIAL = [0.0, -0.0, -1e-9, -5.0, math.inf, -math.inf, math.nan, 5e-324, 1e308, 1.0, 0.25]


def values(bounds: tuple[float, ...] | list[float]) -> st.SearchStrategy[float]:
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(edges(bounds) + SPECIAL))


# -- Series: metrics._Series -----------------------------------------------------------


@pytest.mark.parametrize("bounds", [PROXY_BUCKETS, ROUND_TRIP_BUCKETS, (), (1.0,)])
def test_series_puts_each_value_where_python_does(bounds: tuple[float, ...]) -> None:
    @settings(max_examples=300, deadline=None)
    @given(st.lists(values(bounds), max_size=40))
    def check(xs: list[float]) -> None:
        c, p = Series(bounds), _Series(bounds)
        for x in xs:
            c.observe(x)
            p.observe(x)
        assert c.counts == p.counts and bits(c.total) == bits(p.total)

    check()


def test_series_takes_ints_and_refuses_what_python_refuses() -> None:
    c, p = Series(PROXY_BUCKETS), _Series(PROXY_BUCKETS)
    for x in (0, 1, -3, True):
        c.observe(x)
        p.observe(x)
    assert c.counts == p.counts and c.total == p.total and type(c.total) is type(p.total) is float
    for bad in ("1", None, [1.0]):
        with pytest.raises(TypeError):
            c.observe(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            p.observe(bad)  # type: ignore[arg-type]
    assert c.counts == p.counts  # nothing counted by a refused value
    with pytest.raises(TypeError):
        Series([0.1])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Series(("x",))  # type: ignore[arg-type]


# -- RowOps: Row.observe and Recorder.record's counting ---------------------------------


def new_row() -> Row:
    return Row(7, "app", "db.c", "find", {"find": "c"}, 1.0)


@settings(max_examples=500, deadline=None)
@given(st.lists(values(_ENDS), max_size=40))
def test_row_observe_matches_python(xs: list[float]) -> None:
    ops = RowOps(Row, tuple(_ENDS))
    c, p = new_row(), new_row()
    for x in xs:
        ops.observe(c, x)
        p.observe(x)
    assert c.latency == p.latency and bits(c.latency_sum) == bits(p.latency_sum)
    assert list(c.latency) == list(p.latency)  # the same insertion order too (as_json sorts; merges iterate)


class SubRow(Row):
    __slots__ = ()

    def observe(self, seconds: float) -> None:
        self.count = -1  # proof that the Python method was called


def test_row_observe_leaves_the_unusual_to_python() -> None:
    ops = RowOps(Row, tuple(_ENDS))
    sub = SubRow(1, None, None, None, None, 0.0)
    ops.observe(sub, 0.5)
    assert sub.count == -1 and sub.latency == {}  # another class: its own observe
    row = new_row()
    ops.observe(row, 1)  # an int: Row.observe
    ops.observe(row, 0.5)
    assert row.latency == {bucket: 1 for bucket in {_bisect(1), _bisect(0.5)}} and row.latency_sum == 1.5
    with pytest.raises(TypeError):
        ops.observe(row)  # type: ignore[call-arg]


def _bisect(x: float) -> int:
    from bisect import bisect_right

    return bisect_right(_ENDS, x)


def test_rowops_refuses_a_class_without_those_slots() -> None:
    class Plain:
        pass

    with pytest.raises(TypeError):
        RowOps(Plain, tuple(_ENDS))
    with pytest.raises(TypeError):
        RowOps(SubRow, tuple(_ENDS))  # the slots are Row's, not its own


def test_count_counts_the_row_of_the_shape_or_says_why_not() -> None:
    ops = RowOps(Row, tuple(_ENDS))
    find = m.find_by_key(3)
    sid = shape_hash(find, TOKEN, True)
    assert isinstance(sid, int)
    row = new_row()
    row.allowed = 2
    assert ops.count({}, "a", find, TOKEN) == sid  # no rows for the app yet: the id, nothing counted
    assert ops.count({"a": {}}, "a", find, TOKEN) == sid  # no row yet
    before = row.last_seen
    assert ops.count({"a": {sid: row}}, "a", find, TOKEN) is row
    assert (row.count, row.allowed, row.outcomes) == (1, 3, {}) and row.last_seen > before
    row.count = 2**70  # beyond 64 bits: Python's arithmetic
    ops.count({None: {sid: row}}, None, find, TOKEN)
    assert row.count == 2**70 + 1
    sub = SubRow(sid, None, None, None, None, 0.0)
    assert ops.count({"a": {sid: sub}}, "a", find, TOKEN) is None and sub.count == 0  # another class: Python's
    odd = encode_op_msg({"explain": {"find": "c"}, "$db": "d"}, request_id=1)
    assert shape_hash(odd, TOKEN, True) is None and ops.count({}, "a", odd, TOKEN) is None
    with pytest.raises(TypeError):
        ops.count({}, "a", find, "marker")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        ops.count({}, find, TOKEN)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        ops.count({[]: {}}, [], find, TOKEN)  # type: ignore[dict-item]  # an app that is no key


def test_no_reference_is_leaked() -> None:
    ops = RowOps(Row, tuple(_ENDS))
    find = m.find_by_key(3)
    sid = shape_hash(find, TOKEN, True)
    assert sid is not None
    row = new_row()
    apps = {"a": {sid: row}}
    series = Series(PROXY_BUCKETS)
    seconds = 0.00123
    for _ in range(100):  # warm: the dict's items and small ints exist
        ops.count(apps, "a", find, TOKEN)
        ops.observe(row, seconds)
        series.observe(seconds)
    counts = [sys.getrefcount(x) for x in (row, apps, apps["a"], find, seconds, ops, series, Row)]
    total = sys.gettotalrefcount() if hasattr(sys, "gettotalrefcount") else None
    for _ in range(1000):
        ops.count(apps, "a", find, TOKEN)
        ops.count(apps, "b", find, TOKEN)
        ops.count({"a": {}}, "a", find, TOKEN)
        ops.observe(row, seconds)
        series.observe(seconds)
        series.counts  # noqa: B018
    assert [sys.getrefcount(x) for x in (row, apps, apps["a"], find, seconds, ops, series, Row)] == counts
    if total is not None:  # a debug build
        assert abs(sys.gettotalrefcount() - total) < 50
    assert row.count == 1100 and sum(row.latency.values()) == 1100


# -- the admin hooks: C and Python, the same outputs ----------------------------------


class Host:
    address = "127.0.0.1:1"


def run_traffic(recorder: Recorder) -> AdminHooks:
    cfg = load_config(BLOG_CONFIG)
    hooks = AdminHooks(Metrics(cfg.collections), ShadowReport(10), recorder)
    client = ClientConnection(Proxy(cfg, hooks))
    client.transport = NullTransport()  # type: ignore[assignment]
    client.app_name = "app"
    upstream = UpstreamConnection(client, Host())  # type: ignore[arg-type]
    upstream.transport = NullTransport()  # type: ignore[assignment]
    client.upstream = upstream
    canned = Canned()
    refused = encode_op_msg({"find": "blog_posts", "filter": {}, "$db": "blog"}, request_id=999)
    for i in range(1, 200):
        message = m.find_by_key(i) if i % 3 else m.insert_one(i)
        assert fast_decide(message, client.proxy.engine.fast) is not None
        client.data_received(m.with_request_id(message, i))
        upstream.data_received(canned.op_msg(i, canned.cursor if i % 3 else canned.writes[1]))
        if i == 100:
            recorder.take()  # a flush: new rows from here on
        if i % 50 == 0:
            client.data_received(refused)
    return hooks


def outputs(hooks: AdminHooks) -> tuple[Any, ...]:
    assert hooks.recorder is not None
    rows = sorted(((r.command, r.app, r.shape_id, r.count, r.allowed, r.outcomes, sum(r.latency.values()))
                   for r in hooks.recorder.snapshot()), key=repr)
    # every line but the times: the latencies' buckets and sums, the series' creation
    exposition = [line for line in hooks.metrics.exposition().decode().splitlines()
                  if "_created" not in line and ("_seconds" not in line or "_seconds_count" in line)]
    return rows, exposition


def test_the_hooks_give_the_same_figures_in_c_and_in_python(monkeypatch: pytest.MonkeyPatch) -> None:
    counted: list[Any] = []
    real = recorder_module._count
    assert real is not None

    def spy(*args: Any) -> Any:
        counted.append(got := real(*args))
        return got

    monkeypatch.setattr(recorder_module, "_count", spy)
    with_c = outputs(run_traffic(Recorder(100, MARK)))
    assert sum(row.__class__ is Row for row in counted) >= 190  # all but each shape's first, per table
    monkeypatch.setattr(metrics_module, "_CSeries", None)
    monkeypatch.setattr(recorder_module, "_count", None)
    monkeypatch.setattr(events_module, "observe_row", Row.observe)
    python = outputs(run_traffic(Recorder(100, MARK)))
    assert with_c == python
    rows, exposition = with_c
    assert sum(r[3] for r in rows) == 199 + 3 and any("scalyproxy_commands_total" in line for line in exposition)
