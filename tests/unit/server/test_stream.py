"""ReplyTracker: message boundaries of the upstream stream, whatever the chunking."""

from __future__ import annotations

import struct

import pytest

from scalyproxy.server.stream import ReplyTracker
from scalyproxy.server.upstream import UpstreamConfigError, UpstreamPool
from scalyproxy.wire.errors import ProtocolError


def message(request_id: int, response_to: int, payload: bytes) -> bytes:
    return struct.pack("<iiii", 16 + len(payload), request_id, response_to, 2013) + payload


STREAM = message(1, 10, b"a" * 5) + message(2, 11, b"") + message(3, 12, b"b" * 300)
MSGS = [message(1, 10, b"a" * 5), message(2, 11, b""), message(3, 12, b"b" * 300)]
SIZES = [1, 2, 3, 7, 15, 16, 17, 100, len(STREAM)]


def feed_in_chunks(tracker: ReplyTracker, data: bytes, size: int) -> bytes:
    out = bytearray()
    for start in range(0, len(data), size):
        for piece in tracker.feed(data[start : start + size]):
            out += piece
    return bytes(out)


@pytest.mark.parametrize("size", SIZES)
def test_forwards_everything_whatever_the_chunking(size: int) -> None:
    tracker = ReplyTracker(max_size=1000)
    assert feed_in_chunks(tracker, STREAM, size) == STREAM
    assert tracker.at_boundary()
    assert tracker.replied_to == [10, 11, 12]


def test_whole_chunk_is_forwarded_without_copy() -> None:
    tracker = ReplyTracker(max_size=1000)
    pieces = tracker.feed(STREAM)
    assert len(pieces) == 1 and pieces[0] is STREAM
    assert tracker.ended == 3


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dropped", [10, 11, 12])
def test_drops_a_reply_to_a_request_that_wanted_none(size: int, dropped: int) -> None:
    tracker = ReplyTracker(max_size=1000)
    tracker.expect_no_reply(dropped)
    expected = b"".join(m for m in MSGS if struct.unpack_from("<i", m, 8)[0] != dropped)
    assert feed_in_chunks(tracker, STREAM, size) == expected
    assert dropped not in tracker.replied_to
    assert not tracker.drop_ids


@pytest.mark.parametrize("size", SIZES)
def test_injection_lands_on_the_next_boundary(size: int) -> None:
    tracker = ReplyTracker(max_size=1000)
    out = bytearray()
    first = True
    for start in range(0, len(STREAM), size):
        for piece in tracker.feed(STREAM[start : start + size]):
            out += piece
        if first and not tracker.at_boundary():
            tracker.injections.append(b"INJECTED")
            first = False
    if first:  # every chunk ended on a boundary: nothing to wait for
        return
    assert out.replace(b"INJECTED", b"") == STREAM
    at = out.index(b"INJECTED")
    assert at in (21, 37, len(STREAM))  # between two whole messages


@pytest.mark.parametrize("size", [1, 5, 16, 1000])
def test_captures_the_chosen_reply_whole(size: int) -> None:
    tracker = ReplyTracker(max_size=1000)
    tracker.capture_ids.add(12)
    assert feed_in_chunks(tracker, STREAM, size) == STREAM
    assert tracker.captured == [message(3, 12, b"b" * 300)]
    assert not tracker.capture_ids


def test_not_at_boundary_mid_message() -> None:
    tracker = ReplyTracker(max_size=1000)
    tracker.feed(STREAM[:10])
    assert not tracker.at_boundary()
    tracker.feed(STREAM[10:21])
    assert tracker.at_boundary()


def test_drop_window_is_bounded() -> None:
    tracker = ReplyTracker(max_size=1000)
    for i in range(5000):
        tracker.expect_no_reply(i)
    assert len(tracker.drop_ids) <= 1024


@pytest.mark.parametrize("length", [-1, 0, 15, 1001, 2**31 - 1])
def test_bad_upstream_length_is_a_protocol_error(length: int) -> None:
    tracker = ReplyTracker(max_size=1000)
    with pytest.raises(ProtocolError):
        tracker.feed(struct.pack("<iiii", length, 1, 1, 2013))


def test_pool_round_robin_skips_failed_hosts() -> None:
    pool = UpstreamPool.from_uri("mongodb://a:1,b:2,c:3")
    assert [h.address for h in pool.candidates(now=0)] == ["a:1", "b:2", "c:3"]
    assert [h.address for h in pool.candidates(now=0)] == ["b:2", "c:3", "a:1"]
    pool.mark_failed(pool.hosts[2], "refused")
    failed_at = pool.hosts[2].failed_at
    assert failed_at is not None
    order = [h.address for h in pool.candidates(now=failed_at + 1)]
    assert order[-1] == "c:3"  # tried last while it failed recently
    pool.candidates(now=failed_at + 60)  # rotation: the next call starts at b
    order = [h.address for h in pool.candidates(now=failed_at + 60)]
    assert order == ["b:2", "c:3", "a:1"]  # c is healthy again after RETRY_FAILED_AFTER_S
    pool.mark_ok(pool.hosts[2])
    assert pool.any_healthy()


@pytest.mark.parametrize("uri", ["http://x", "mongodb+srv://cluster.example.com", "mongodb://"])
def test_pool_rejects_bad_uris(uri: str) -> None:
    with pytest.raises(UpstreamConfigError):
        UpstreamPool.from_uri(uri)


def test_pool_tls_from_uri_options() -> None:
    pool = UpstreamPool.from_uri("mongodb://a:1/?tls=true&tlsInsecure=true")
    assert pool.ssl_context is not None
    assert pool.ssl_context.check_hostname is False
    assert UpstreamPool.from_uri("mongodb://a:1").ssl_context is None
