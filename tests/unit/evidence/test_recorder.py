"""The recorder: one row per (shape, appName), found from the bytes on the fast path,
built once per shape; the relay hands each forwarded command's row back with its
round-trip time; a flush takes a frozen table in O(1)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench import messages as m
from bench.bench_relay import NullTransport
from bench.canned import Canned
from scalyproxy.admin.events import AdminHooks
from scalyproxy.admin.metrics import Metrics
from scalyproxy.admin.report import ShadowReport
from scalyproxy.config import load_config
from scalyproxy.evidence import recorder as recorder_module
from scalyproxy.evidence.recorder import Recorder
from scalyproxy.evidence.skeleton import hash_json
from scalyproxy.evidence.table import Row, bucket_of
from scalyproxy.policy import Engine
from scalyproxy.server.proxy import Proxy
from scalyproxy.server.relay import ClientConnection, UpstreamConnection
from scalyproxy.wire import command_view, encode_op_msg, make_frame
from scalyproxy.wire.documents import HAVE_SCAN
from tests.conftest import BLOG_CONFIG

pytestmark = pytest.mark.skipif(not HAVE_SCAN, reason="the C extension is not built")

if HAVE_SCAN:
    from scalyproxy._scan import fast_decide

ENGINE = Engine.from_config(load_config(BLOG_CONFIG))
MARK = "scaly:allow-global"


def decide(message: bytes) -> tuple[Any, Any]:
    view = command_view(make_frame(message))
    return view, ENGINE.decide(view)


def fast(recorder: Recorder, message: bytes, app: str | None = "web") -> Row:
    verdict = fast_decide(message, ENGINE.fast)
    assert verdict is not None  # the fast path allows it
    return recorder.record(app, None, verdict, message)


def test_the_fast_path_finds_its_row_from_the_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Recorder(100, MARK)
    built: list[str] = []
    real = recorder_module.skeleton_of
    monkeypatch.setattr(recorder_module, "skeleton_of", lambda *a: built.append(a[0]) or real(*a))
    rows = {id(fast(r, m.find_by_key(i))) for i in range(50)}
    rows |= {id(fast(r, m.insert_one(i))) for i in range(50)}
    assert len(rows) == 2 and built == ["find", "insert"]  # one skeleton per shape, ever
    find, insert = sorted(r.table, key=lambda row: row.command or "")
    assert (find.count, find.allowed, find.namespace, find.app) == (50, 50, "blog.blog_posts", "web")
    assert find.shape == {"find": "blog_posts", "$db": "blog", "filter": {"author": "<string>", "title": "<string>"}}
    assert hash_json(find.shape) == find.shape_id and r.mismatches == 0
    other_app = fast(r, m.find_by_key(1), app="batch")
    assert other_app is not find and other_app.shape_id == find.shape_id and built == ["find", "insert"]


def test_the_engine_path_records_every_verdict() -> None:
    r = Recorder(100, MARK)
    global_find = encode_op_msg({"find": "blog_posts", "filter": {"author": "a"}, "$db": "blog"}, request_id=1)
    marked = encode_op_msg({"find": "blog_posts", "filter": {"author": "b"}, "comment": MARK, "$db": "blog"}, request_id=2)
    update = encode_op_msg({"update": "blog_posts", "updates": [{"q": {"author": "a", "title": "t"},
                            "u": {"$set": {"title": "x"}}}], "$db": "blog"}, request_id=3)
    for message in (global_find, global_find, marked, update):
        view, verdict = decide(message)
        r.record("web", view, verdict, message)
    by_command = {(row.command, "comment" in (row.shape or {})): row for row in r.table}
    assert by_command[("find", False)].all_outcomes() == {"refused:global_query": 2}
    assert by_command[("find", True)].all_outcomes() == {"allowed": 1}
    assert by_command[("update", False)].all_outcomes() == {"refused:shard_key_write": 1}
    assert len(r.table) == 3


def test_a_full_table_counts_new_shapes_in_the_overflow_row_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    r = Recorder(1, MARK)
    fast(r, m.find_by_key(1))
    monkeypatch.setattr(recorder_module, "command_view", lambda *a: pytest.fail("decoded"))
    assert fast(r, m.insert_one(1)) is r.table.overflow
    assert fast(r, m.insert_one(2)) is r.table.overflow
    assert r.table.overflow.count == 2 and len(r.table) == 1


def test_take_freezes_the_table_and_a_late_reply_goes_to_its_successor() -> None:
    r = Recorder(100, MARK)
    row = fast(r, m.find_by_key(1))
    row.observe(0.001)
    taken = r.take()
    assert row.retired and list(taken) == [row] and len(r.table) == 0
    late = r.successor(row)
    late.observe(0.002)
    assert late is not row and late.count == 0 and row.latency == {bucket_of(0.001): 1}
    again = fast(r, m.find_by_key(2))
    assert again is late and again.count == 1
    snapshot = r.snapshot()
    [total] = list(snapshot)
    assert total.count == 2 and sum(total.latency.values()) == 2
    assert r.snapshot().to_json()["rows"][0]["outcomes"] == {"allowed": 2}


def test_a_reloaded_marker_changes_the_shape_of_marked_commands() -> None:
    r = Recorder(100, MARK)
    message = encode_op_msg({"find": "blog_posts", "filter": {"author": "a", "title": "t"}, "comment": "nightly",
                             "$db": "blog"}, request_id=1)
    view, verdict = decide(message)
    first = r.record(None, view, verdict, message)
    r.configure(100, "nightly")
    second = r.record(None, view, verdict, message)
    assert first is not second and second.shape is not None and second.shape["comment"] == "<marker>"


# -- through the relay -----------------------------------------------------------------


class Host:
    address = "127.0.0.1:1"


def wired(recorder: Recorder | None) -> tuple[ClientConnection, UpstreamConnection, AdminHooks]:
    cfg = load_config(BLOG_CONFIG)
    hooks = AdminHooks(Metrics(cfg.collections), ShadowReport(10), recorder)
    proxy = Proxy(cfg, hooks)
    client = ClientConnection(proxy)
    client.transport = NullTransport()  # type: ignore[assignment]
    client.app_name = "app"
    upstream = UpstreamConnection(client, Host())  # type: ignore[arg-type]
    upstream.transport = NullTransport()  # type: ignore[assignment]
    client.upstream = upstream
    return client, upstream, hooks


def test_the_relay_hands_each_row_its_round_trip() -> None:
    r = Recorder(100, MARK)
    client, upstream, hooks = wired(r)
    canned = Canned()
    refused = encode_op_msg({"find": "blog_posts", "filter": {}, "$db": "blog"}, request_id=99)
    for i in range(1, 6):
        client.data_received(m.with_request_id(m.find_by_key(i), i))  # fast path
        upstream.data_received(canned.op_msg(i, canned.cursor))
    client.data_received(m.with_request_id(m.insert_one(1), 50))  # a reply that comes after a flush
    taken = r.take()
    upstream.data_received(canned.op_msg(50, canned.writes[1]))
    client.data_received(refused)  # engine path, refused: counted, no round trip
    rows = {row.command: row for row in taken}
    assert rows["find"].count == 5 and sum(rows["find"].latency.values()) == 5
    assert rows["insert"].count == 1 and rows["insert"].latency == {}  # frozen once taken
    now = {(row.command, row.count): row for row in r.table}
    assert sum(now[("insert", 0)].latency.values()) == 1  # the late reply, in the successor
    assert now[("find", 1)].all_outcomes() == {"refused:global_query": 1}
    assert hooks.metrics.round_trip_seconds.count(("find",)) == 5
    json.dumps(r.snapshot().to_json())


def test_with_the_profile_off_the_relay_tags_requests_by_name() -> None:
    client, upstream, hooks = wired(None)
    client.data_received(m.with_request_id(m.find_by_key(1), 7))
    assert client.sent_at[7][1] == "find"
    upstream.data_received(Canned().op_msg(7, Canned().cursor))
    assert hooks.metrics.round_trip_seconds.count(("find",)) == 1


def test_a_bug_in_the_profile_costs_no_command(monkeypatch: pytest.MonkeyPatch) -> None:
    client, upstream, hooks = wired(Recorder(100, MARK))

    def broken(*args: Any) -> Row:
        raise RuntimeError("a bug")

    assert hooks.recorder is not None
    monkeypatch.setattr(hooks.recorder, "record", broken)
    for i in range(1, 4):
        client.data_received(m.with_request_id(m.find_by_key(i), i))
        upstream.data_received(Canned().op_msg(i, Canned().cursor))
    assert hooks.metrics.profile_errors.get() == 3
    assert hooks.metrics.round_trip_seconds.count(("find",)) == 3  # forwarded and answered all the same


@pytest.mark.parametrize("buffer", [bytes, bytearray, memoryview])
def test_a_big_insert_is_recorded_without_holding_its_documents_decoded_or_copied(buffer: Any) -> None:
    """The shape of a 20 MB insert is found walking its kind-1 run a document at a time, on the
    bytes as the relay holds them (a framer's buffer is not bytes): never a list, never a copy."""
    import tracemalloc

    message = m.big_insert(20_000_000, 500_000)
    data = buffer(message)
    allowed = fast_decide(data, ENGINE.fast)
    assert allowed is not None  # the fast path: the recorder decodes the shape from the bytes itself
    r = Recorder(100, MARK)
    tracemalloc.start()
    try:
        row = r.record("app", None, allowed, data)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert row.command == "insert" and row.count == 1
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes recording a 20 MB insert"
    view = command_view(make_frame(message))
    assert row.shape == r._shape(view, None)[0]  # the same shape as from a decoded view
