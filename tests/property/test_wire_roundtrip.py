"""Hypothesis: for generated messages, decode(encode(m)) == m."""

from __future__ import annotations

import datetime
from typing import Any

from bson.int64 import Int64
from bson.objectid import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from scalyproxy.wire import (
    command_view,
    compress_message,
    decode_document,
    decode_op_msg,
    decode_op_query,
    decompress_message,
    encode_document,
    encode_op_msg,
    encode_op_query,
    encode_op_reply,
    make_frame,
    parse_op_reply,
)
from scalyproxy.wire.op_msg import FLAG_CHECKSUM_PRESENT, FLAG_EXHAUST_ALLOWED, FLAG_MORE_TO_COME

keys = st.text(st.characters(exclude_characters="\x00", codec="utf-8"), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31 - 1),
    st.integers(-(2**63), 2**63 - 1).map(Int64),
    st.floats(allow_nan=False),
    st.text(st.characters(codec="utf-8"), max_size=30),
    st.binary(max_size=30),
    st.builds(ObjectId, st.binary(min_size=12, max_size=12)),
    st.datetimes(
        min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31)
    ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000)),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=20,
)
documents = st.dictionaries(keys, values, max_size=6)
flags = st.builds(
    lambda more, exhaust, optional: more | exhaust | optional,
    st.sampled_from([0, FLAG_MORE_TO_COME]),
    st.sampled_from([0, FLAG_EXHAUST_ALLOWED]),
    st.integers(0, 0x7FFF).map(lambda bits: bits << 17),
)


def no_collision(body: dict[str, Any], names: list[str]) -> bool:
    for name in names:
        node: Any = body
        for part in name.split("."):
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
        else:
            return False
    return True


@st.composite
def op_msgs(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]], int, bool]:
    name = draw(keys.filter(bool))
    body = {name: draw(values), **draw(documents), "$db": draw(keys.filter(bool))}
    sequences = draw(st.dictionaries(keys, st.lists(documents, max_size=4), max_size=3))
    if not no_collision(body, list(sequences)):
        sequences = {}
    return body, sequences, draw(flags), draw(st.booleans())


@settings(max_examples=200, deadline=None)
@given(documents)
def test_document_round_trip(doc: dict[str, Any]) -> None:
    raw = encode_document(doc)
    assert decode_document(raw) == doc
    assert encode_document(decode_document(raw)) == raw


@settings(max_examples=200, deadline=None)
@given(op_msgs(), st.integers(-(2**31), 2**31 - 1))
def test_op_msg_round_trip(message: tuple[Any, ...], request_id: int) -> None:
    body, sequences, flag_bits, checksum = message
    raw = encode_op_msg(
        body, request_id=request_id, flags=flag_bits, sequences=sequences, checksum=checksum
    )
    decoded = decode_op_msg(raw)
    assert decoded.body == body
    assert decoded.sequences == sequences
    assert decoded.flags == flag_bits | (FLAG_CHECKSUM_PRESENT if checksum else 0)
    view = command_view(make_frame(raw))
    assert view.body == body and view.request_id == request_id
    assert view.name == next(iter(body)) and view.db == body["$db"]
    assert {k: list(v) for k, v in view.sequences.items()} == sequences
    assert view.more_to_come == bool(flag_bits & FLAG_MORE_TO_COME)


@settings(max_examples=100, deadline=None)
@given(documents, st.one_of(st.none(), documents), st.integers(0, 2**31 - 1), st.integers(-5, 5))
def test_op_query_round_trip(
    query: dict[str, Any], selector: Any, flags_: int, to_return: int
) -> None:
    raw = encode_op_query(
        "db.$cmd", query, request_id=1, flags=flags_, number_to_return=to_return, selector=selector
    )
    decoded = decode_op_query(raw)
    assert (decoded.flags, decoded.namespace, decoded.number_to_return) == (
        flags_,
        "db.$cmd",
        to_return,
    )
    assert decoded.query == query and decoded.selector == selector


@settings(max_examples=100, deadline=None)
@given(st.lists(documents, max_size=5), st.integers(-(2**63), 2**63 - 1), st.integers(0, 15))
def test_op_reply_round_trip(docs: list[dict[str, Any]], cursor_id: int, flag_bits: int) -> None:
    raw = encode_op_reply(docs, request_id=3, response_to=4, flags=flag_bits, cursor_id=cursor_id)
    assert tuple(parse_op_reply(raw)) == (flag_bits, cursor_id, 0, docs)


@settings(max_examples=100, deadline=None)
@given(op_msgs(), st.sampled_from([0, 1, 2, 3]))
def test_compression_round_trip(message: tuple[Any, ...], compressor_id: int) -> None:
    body, sequences, flag_bits, checksum = message
    body = {"find": "c", **body}
    raw = encode_op_msg(body, request_id=5, flags=flag_bits, sequences=sequences, checksum=checksum)
    packed = compress_message(raw, compressor_id)
    assert decompress_message(packed, len(raw)) == raw
    assert command_view(make_frame(packed)).body == body
