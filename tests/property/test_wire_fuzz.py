"""Hypothesis: for any bytes, the framer and the decoders return results or raise
the codec's ProtocolError, nothing else (no IndexError, struct.error, MemoryError,
no hang)."""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalyproxy.wire import (
    Frame,
    Framer,
    ProtocolError,
    command_view,
    compress_message,
    decode_document,
    decode_op_msg,
    decode_op_query,
    decode_reply_body,
    decode_sequence,
    decompress_message,
    encode_op_msg,
    encode_op_query,
    encode_op_reply,
    make_frame,
    parse_op_reply,
)

SEEDS = [
    encode_op_msg({"find": "c", "filter": {"a": [1, {"b": "x"}]}, "$db": "d"}, request_id=1),
    encode_op_msg(
        {"insert": "c", "$db": "d"}, request_id=2, sequences={"documents": [{"_id": 1}, {"x": 2}]}
    ),
    encode_op_msg({"ping": 1, "$db": "admin"}, request_id=3, checksum=True),
    encode_op_query("admin.$cmd", {"isMaster": 1, "compression": ["zlib"]}, request_id=4),
    encode_op_reply([{"ok": 1.0}], request_id=5, response_to=4),
]
SEEDS += [compress_message(SEEDS[1], cid) for cid in (0, 1, 2, 3)]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed message with a few bytes changed, cut, or inserted (header length kept consistent or not)."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "int"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 8))]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "int" and len(data) >= pos + 4:
            data[pos : pos + 4] = struct.pack(
                "<i", draw(st.sampled_from([-1, 0, 5, 16, 2**31 - 1, 48_000_001]))
            )
    if draw(st.booleans()) and len(data) >= 4:
        data[0:4] = struct.pack("<i", len(data))
    return bytes(data)


any_bytes = st.one_of(st.binary(max_size=300), mutated())

DECODERS: list[Callable[[Frame], Any]] = [
    command_view,
    decode_reply_body,
    lambda f: decode_op_msg(f.data),
    lambda f: decode_op_query(f.data),
    lambda f: parse_op_reply(f),
    lambda f: decompress_message(f, 1_000_000),
]


def only_protocol_errors(fn: Callable[..., Any], *args: Any) -> None:
    try:
        fn(*args)
    except ProtocolError as exc:
        assert exc.kind and str(exc)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(any_bytes, st.lists(st.integers(1, 64), min_size=1, max_size=8))
def test_framer_and_decoders_fail_only_with_protocol_error(data: bytes, cuts: list[int]) -> None:
    framer = Framer(max_message_size=1_000_000)
    frames: list[Frame] = []
    pos = 0
    try:
        for size in cuts * (len(data) // max(sum(cuts), 1) + 1):
            framer.feed(data[pos : pos + size])
            pos += size
            while (frame := framer.next_frame()) is not None:
                frames.append(frame)
    except ProtocolError as exc:
        assert exc.fatal and exc.kind == "bad_length"
    if len(data) >= 16:
        # also decode the bytes as one message, whatever its header says
        frames.append(make_frame(data))
    for frame in frames:
        for decode in DECODERS:
            only_protocol_errors(decode, frame)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_document_decoders_fail_only_with_protocol_error(data: bytes) -> None:
    only_protocol_errors(decode_document, data)
    only_protocol_errors(decode_sequence, data)


@settings(max_examples=200, deadline=None)
@given(mutated())
def test_lazy_sequences_fail_only_with_protocol_error(data: bytes) -> None:
    def read_all() -> None:
        view = command_view(make_frame(data))
        for name in view.sequences:
            list(view.sequences[name])

    if len(data) >= 16:
        only_protocol_errors(read_all)
