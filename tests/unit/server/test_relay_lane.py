"""The relay's C lane (``_scan.ClientLane``, ``UpstreamLane``, ``TrackerLane``) against the
Python code it stands in for: the same byte sequences (lane_scenarios.py) must have the
same effects, step by step (bytes written each way, hooks calls and arguments, sent_at,
awaiting, counters), and the common round trip must run no Python of the relay."""

from __future__ import annotations

import gc
import json
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import messages as m
from scalyproxy.wire.documents import HAVE_SCAN
from tests.unit.server import lane_scenarios as scenarios

needs_scan = pytest.mark.skipif(not HAVE_SCAN, reason="the C extension is not built")


@pytest.fixture(scope="module")
def c_lane() -> dict[str, Any]:
    # through JSON as the subprocess's records are (tuples become lists)
    answer: dict[str, Any] = json.loads(json.dumps({"lanes": scenarios.lane_types(), "records": scenarios.run_all()}))
    return answer


@needs_scan
def test_the_c_lane_is_in_use(c_lane: dict[str, Any]) -> None:
    assert c_lane["lanes"] == ["ClientLane", "UpstreamLane", "TrackerLane"]


@needs_scan
@pytest.mark.parametrize("name", list(scenarios.scenarios()))
def test_the_c_lane_does_what_the_python_code_does(c_lane: dict[str, Any], python_bases: dict[str, Any],
                                                    name: str) -> None:
    assert python_bases["lanes"] == ["_ClientFields", "_UpstreamFields", "_TrackerFields"]
    ours, theirs = c_lane["records"][name], python_bases["records"][name]
    assert len(ours) == len(theirs)
    for step, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert a == b, f"{name}: step {step} ({a['step']})"


@needs_scan
@pytest.mark.parametrize("name", list(scenarios.scenarios()))
def test_the_same_in_one_process(c_lane: dict[str, Any], name: str) -> None:
    """The Python bases rebuilt here (lane_scenarios.python_lane) agree as the imported ones do."""
    assert json.loads(json.dumps(scenarios.run(name, python=True))) == c_lane["records"][name]


def _request(kind: str, rid: int) -> tuple[bytes, bytes | None]:
    """A request of ``kind`` and the upstream's reply (None: none comes)."""
    if kind == "find":
        return scenarios._find(rid, rid), scenarios._reply(rid)
    if kind == "update":
        return m.with_request_id(m.targeted("update", rid), rid), scenarios._reply(rid, "write")
    if kind == "insert":
        return m.with_request_id(m.insert_one(rid), rid), scenarios._reply(rid, "write")
    if kind == "refused":
        return scenarios._refused(rid), None
    if kind == "ping":
        return m.op_msg({"ping": 1, "$db": "admin"}, request_id=rid), scenarios._reply(rid, "ok")
    if kind == "hello":
        return m.with_request_id(m.hello(), rid), scenarios._reply(rid, "hello")
    return scenarios._w0(rid), scenarios._reply(rid, "write")  # w:0: FerretDB v1 answers anyway


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted({c for c in cuts if 0 < c < len(data)}), len(data)]
    return [data[a:b] for a, b in zip(points, points[1:], strict=False) if b > a]


@needs_scan
@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_chunking_and_interleaving_has_the_same_effects(data: st.DataObject) -> None:
    kinds = data.draw(st.lists(st.sampled_from(["find", "update", "insert", "refused", "ping", "hello", "w0"]),
                               min_size=1, max_size=6))
    pairs = [_request(kind, 100 + i) for i, kind in enumerate(kinds)]
    requests = b"".join(request for request, _ in pairs)
    replies = b"".join(reply for _, reply in pairs if reply is not None)
    to_proxy = _cut(requests, data.draw(st.lists(st.integers(1, max(1, len(requests) - 1)), max_size=5)))
    from_upstream = _cut(replies, data.draw(st.lists(st.integers(1, max(1, len(replies) - 1)), max_size=5)))
    order = data.draw(st.permutations(["c"] * len(to_proxy) + ["u"] * len(from_upstream)))
    sides = {"c": iter(to_proxy), "u": iter(from_upstream)}
    steps: list[scenarios.Step] = [(side, next(sides[side])) for side in order]
    assert scenarios.record(scenarios.Run(), steps) == scenarios.record(scenarios.Run(python=True), steps)


@pytest.fixture(scope="module")
def python_bases() -> dict[str, Any]:
    return scenarios.run_python_bases()


def _normalized(records: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Without the C fast path every command gets a view (the engine decides): the hook's
    view argument is the only difference allowed."""
    out = {}
    for name, steps in records.items():
        out[name] = [
            {**step, "effects": [["command", *e[3:]] if e[0] == "command" else e for e in step["effects"]]}
            for step in steps
        ]
    return out


def test_the_pure_python_install_has_the_same_effects(c_lane: dict[str, Any]) -> None:
    pure = scenarios.run_python_bases(pure=True)
    assert pure["lanes"] == ["_ClientFields", "_UpstreamFields", "_TrackerFields"]
    if not HAVE_SCAN:
        return
    ours, theirs = _normalized(c_lane["records"]), _normalized(pure["records"])
    for name in ours:
        assert ours[name] == theirs[name], name


@needs_scan
def test_the_common_round_trip_runs_no_python_of_the_relay(monkeypatch: pytest.MonkeyPatch) -> None:
    from scalyproxy.server.relay import ClientConnection

    called: list[str] = []
    for method in ("_chunk_received", "_reply_received", "_reply_in_pieces", "_send", "_answered",
                   "_allowed_fast", "_handle", "_no_longer_awaiting", "_failed"):
        real = getattr(ClientConnection, method)

        def spy(self: Any, *args: Any, _real: Any = real, _name: str = method) -> Any:
            called.append(_name)
            return _real(self, *args)

        monkeypatch.setattr(ClientConnection, method, spy)
    r = scenarios.Run()
    assert type(r.client.tracker).__mro__[1].__name__ == "TrackerLane"
    for i in range(3):
        r.client.data_received(scenarios._find(i, 100 + i))
        r.upstream.data_received(scenarios._reply(100 + i))
    assert called == []
    assert sum(e[0] == "round_trip" for e in r.log) == 3
    timed = scenarios.Run(timeout_s=5)  # upstream_timeout_s: awaiting kept in C too
    timed.client.data_received(scenarios._find(1, 100))
    assert list(timed.client.awaiting) == [100]
    timed.upstream.data_received(scenarios._reply(100))
    assert not timed.client.awaiting and timed.client.last_upstream_data == timed.client.last_reply_end
    assert called == []
    r.client.data_received(scenarios._refused(200))  # the engine's: Python
    assert called == ["_handle"]
    r.client.data_received(scenarios._find(1, 201)[:20])  # a piece: the framer's, in Python
    assert called[1:] == ["_chunk_received"]


@needs_scan
def test_the_c_lane_keeps_no_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    r = scenarios.Run()
    request, reply = scenarios._find(1, 11), scenarios._reply(11)
    verdict = r.proxy.engine.fast["blog.blog_posts"][0]
    watched = [request, reply, verdict, r.proxy, r.client.sent_at, r.client.tracker]
    for _ in range(10):  # warm up (interned ints, caches)
        r.client.data_received(request)
        r.upstream.data_received(reply)
    r.log.clear()
    gc.collect()
    before = [sys.getrefcount(o) for o in watched]
    objects = len(gc.get_objects())
    for _ in range(2000):
        r.client.data_received(request)
        r.upstream.data_received(reply)
        r.log.clear()
    gc.collect()
    assert [sys.getrefcount(o) for o in watched] == before
    assert len(gc.get_objects()) <= objects + 10
    assert not r.client.sent_at and r.proxy.bytes_in == 2010 * len(request)


@needs_scan
def test_an_exception_that_is_not_an_exception_is_not_caught() -> None:
    r = scenarios.Run(fail_on=set())

    def interrupted(*args: Any) -> Any:
        raise KeyboardInterrupt

    r.proxy.hooks.command = interrupted  # type: ignore[method-assign,assignment]
    with pytest.raises(KeyboardInterrupt):
        r.client.data_received(scenarios._find(1, 11))
    assert not r.client.closing  # _failed is for Exception, as the Python try/except


@needs_scan
def test_a_failing_round_trip_hook_propagates_as_in_python() -> None:
    r = scenarios.Run()

    def failing(tag: Any, seconds: float) -> None:
        raise ValueError("round_trip")

    r.proxy.hooks.round_trip = failing  # type: ignore[method-assign]
    r.client.data_received(scenarios._find(1, 11))
    with pytest.raises(ValueError, match="round_trip"):
        r.upstream.data_received(scenarios._reply(11))
    assert not r.client.sent_at  # popped before the hook was called, as in Python


@needs_scan
def test_the_fields_are_slots_still() -> None:
    from scalyproxy.server.relay import ClientConnection, UpstreamConnection
    from scalyproxy.server.stream import ReplyTracker

    r = scenarios.Run()
    for obj in (r.client, r.upstream, r.client.tracker):
        assert not hasattr(obj, "__dict__")
    fresh = ClientConnection.__new__(ClientConnection)
    with pytest.raises(AttributeError):
        _ = fresh.sent_at  # unset, as a slot
    del r.client.stream_offset
    with pytest.raises(AttributeError):
        r.client.data_received(scenarios._find(1, 11))
    # no bigger than the pure-Python objects: 20 fields, 5 and 13, and the object header
    assert sys.getsizeof(r.client) <= 16 + 20 * 8 + 16
    assert sys.getsizeof(r.upstream) <= 16 + 5 * 8 + 16
    assert sys.getsizeof(r.client.tracker) <= 16 + 13 * 8 + 16
    assert UpstreamConnection.__slots__ and ReplyTracker.__slots__
