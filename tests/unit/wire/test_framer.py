"""The framer: length checks before any allocation, zero-copy slices, one
incomplete message at most, identical frames however the stream is cut."""

from __future__ import annotations

import struct
import tracemalloc

import pytest

from scalyproxy.wire import DEFAULT_MAX_MESSAGE_SIZE, Framer, ProtocolError
from tests.unit.wire.build import op_msg, ping, raw_message


def message(size: int, request_id: int = 1, op_code: int = 2013) -> bytes:
    assert size >= 16
    return struct.pack("<iiii", size, request_id, 0, op_code) + b"\xab" * (size - 16)


@pytest.mark.parametrize("length", [-1, -(2**31), 0, 1, 15, 2**31 - 1, 48_000_001, 2**30])
def test_bad_lengths_are_refused_from_four_bytes_without_allocating(length: int) -> None:
    framer = Framer()
    tracemalloc.start()
    try:
        framer.feed(struct.pack("<i", length))
        with pytest.raises(ProtocolError) as info:
            framer.next_frame()
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.kind == "bad_length"
    assert info.value.fatal
    assert info.value.field == "messageLength"
    assert str(length) in str(info.value)
    assert peak < 64 * 1024  # nothing sized from the hostile length


def test_default_limit_is_the_servers() -> None:
    assert DEFAULT_MAX_MESSAGE_SIZE == 48_000_000
    assert Framer().max_message_size == 48_000_000


@pytest.mark.parametrize("size", [16, 17, 1000])
def test_lengths_within_limits_are_accepted(size: int) -> None:
    framer = Framer(max_message_size=1000)
    msg = message(size)
    framer.feed(msg)
    frame = framer.next_frame()
    assert frame is not None and bytes(frame.data) == msg
    assert frame.header.length == size


def test_limit_can_change_between_messages() -> None:
    framer = Framer(max_message_size=100)
    framer.feed(message(100) + message(101))
    assert framer.next_frame() is not None
    with pytest.raises(ProtocolError):
        framer.next_frame()
    framer = Framer(max_message_size=100)
    framer.max_message_size = 200
    framer.feed(message(150))
    assert framer.next_frame() is not None


def test_length_prefix_split_across_chunks() -> None:
    msg = message(40, request_id=9)
    framer = Framer()
    for piece in (msg[:2], msg[2:3], msg[3:4]):
        framer.feed(piece)
        assert framer.next_frame() is None
    framer.feed(msg[4:])
    frame = framer.next_frame()
    assert frame is not None and bytes(frame.data) == msg and frame.header.request_id == 9


def test_bad_length_split_across_chunks_is_refused() -> None:
    framer = Framer()
    framer.feed(b"\xff\xff")
    assert framer.next_frame() is None
    framer.feed(b"\xff\x7f")
    with pytest.raises(ProtocolError):
        framer.next_frame()


def test_a_message_that_is_the_whole_chunk_is_handed_out_as_is() -> None:
    msg = op_msg(0, 0, ping())
    framer = Framer()
    framer.feed(msg)
    frame = framer.next_frame()
    assert frame is not None and frame.data is msg


def test_messages_inside_a_chunk_are_slices() -> None:
    small = op_msg(0, 0, ping(), request_id=1)
    big = message(200_000, request_id=2)
    framer = Framer()
    framer.feed(small + big + small)
    frames = [framer.next_frame() for _ in range(3)]
    assert framer.next_frame() is None
    assert [f.header.request_id if f else None for f in frames] == [1, 2, 1]
    assert frames[0] and frames[1]
    assert type(frames[0].data) is bytes  # small: a copy is cheaper than a view
    assert isinstance(frames[1].data, memoryview)  # large: no copy
    assert bytes(frames[1].data) == big
    assert not framer.in_progress and framer.buffered == 0


def test_a_large_message_in_many_chunks_costs_about_its_size() -> None:
    size = 8_000_000
    msg = message(size)
    chunks = [msg[i : i + 65536] for i in range(0, size, 65536)]
    framer = Framer()
    tracemalloc.start()
    try:
        frame = None
        for chunk in chunks:
            framer.feed(chunk)
            frame = framer.next_frame() or frame
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert frame is not None and frame.data == msg
    assert isinstance(frame.data, bytearray) and len(frame.data) == size
    assert peak < size * 1.2  # one buffer of messageLength, not repeated growth


def test_at_most_one_incomplete_message_is_held() -> None:
    first, second = message(100, 1), message(300, 2)
    framer = Framer()
    framer.feed(first + second[:150])
    assert framer.next_frame() is not None
    assert framer.next_frame() is None
    assert framer.in_progress
    assert framer.buffered == 150
    framer.feed(second[150:])
    frame = framer.next_frame()
    assert frame is not None and bytes(frame.data) == second
    assert not framer.in_progress and framer.buffered == 0


def test_in_progress_tracks_partial_bytes() -> None:
    framer = Framer()
    assert not framer.in_progress
    framer.feed(b"\x20")
    assert framer.next_frame() is None
    assert framer.in_progress and framer.buffered == 1


def test_mutable_input_is_copied() -> None:
    msg = bytearray(message(32))
    framer = Framer()
    framer.feed(memoryview(msg))
    msg[20] = 0
    frame = framer.next_frame()
    assert frame is not None and frame.data[20] == 0xAB


def test_empty_feed_is_harmless() -> None:
    framer = Framer()
    framer.feed(b"")
    assert framer.next_frame() is None and not framer.in_progress


def test_error_offset_is_the_stream_position() -> None:
    framer = Framer()
    framer.feed(message(20) + struct.pack("<i", 3))
    assert framer.next_frame() is not None
    with pytest.raises(ProtocolError) as info:
        framer.next_frame()
    assert info.value.offset == 20


def test_many_messages_fed_in_odd_chunks() -> None:
    stream = b"".join(
        raw_message(2013, bytes([i % 256]) * (i % 50), request_id=i) for i in range(300)
    )
    for size in (1, 7, 64, 1000):
        framer = Framer()
        ids = []
        for i in range(0, len(stream), size):
            framer.feed(stream[i : i + size])
            while (frame := framer.next_frame()) is not None:
                ids.append(frame.header.request_id)
                assert len(frame.data) == frame.header.length
        assert ids == list(range(300))
