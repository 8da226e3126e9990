"""Error replies drivers parse and never retry; rewritten commands; reading replies."""

from __future__ import annotations

import struct
from typing import Any

import bson
import pytest
from crc32c import crc32c
from pymongo.errors import OperationFailure
from pymongo.helpers_shared import _check_command_response
from pymongo.message import _OpMsg

from scalyproxy import codes
from scalyproxy.wire import (
    OP_COMPRESSED,
    OP_GET_MORE,
    OP_MSG,
    OP_QUERY,
    OP_REPLY,
    Header,
    ProtocolError,
    command_view,
    compress_message,
    decode_op_msg,
    decode_op_query,
    decode_reply_body,
    encode_op_msg,
    encode_op_query,
    encode_op_reply,
    error_reply,
    make_frame,
    parse_op_reply,
    rewrite_command,
)
from scalyproxy.wire.op_msg import FLAG_EXHAUST_ALLOWED, FLAG_MORE_TO_COME
from scalyproxy.wire.op_query import REPLY_FLAG_QUERY_FAILURE
from tests.unit.wire.build import BODY, CHECKSUM, SEQUENCE, op_msg, ping, sized

ARGS: dict[str, Any] = {
    "code": codes.GLOBAL_QUERY,
    "code_name": "ScalyGlobalQuery",
    "errmsg": "find without shard key",
}


def header_of(message: bytes) -> tuple[int, int, int, int]:
    length, rid, rto, op = struct.unpack_from("<iiii", message)
    assert length == len(message)
    return length, rid, rto, op


def test_op_msg_error_reply_as_pymongo_reads_it() -> None:
    view = command_view(make_frame(encode_op_msg({"find": "c", "$db": "d"}, request_id=77)))
    reply = error_reply(view, request_id=900, **ARGS)
    _len, rid, rto, op = header_of(reply)
    assert (rid, rto, op) == (900, 77, OP_MSG)
    (doc,) = _OpMsg.unpack(reply[16:]).unpack_response()
    assert doc == {
        "ok": 0.0,
        "errmsg": "find without shard key",
        "code": 29001,
        "codeName": "ScalyGlobalQuery",
    }
    with pytest.raises(OperationFailure) as info:
        _check_command_response(doc, None)
    assert info.value.code == 29001
    assert not info.value.has_error_label("RetryableWriteError")
    assert "errorLabels" not in doc


def test_legacy_command_error_reply_is_an_op_reply() -> None:
    view = command_view(make_frame(encode_op_query("admin.$cmd", {"isMaster": 1}, request_id=5)))
    reply = error_reply(view, request_id=6, **ARGS)
    assert header_of(reply)[1:] == (6, 5, OP_REPLY)
    parsed = parse_op_reply(reply)
    assert parsed.flags == 0 and parsed.cursor_id == 0
    assert parsed.documents == [
        {"ok": 0.0, "errmsg": ARGS["errmsg"], "code": 29001, "codeName": "ScalyGlobalQuery"}
    ]


@pytest.mark.parametrize("op_code", [OP_QUERY, OP_GET_MORE])
def test_header_only_legacy_reply_flags_query_failure(op_code: int) -> None:
    reply = error_reply(Header(16, 41, 0, op_code), request_id=42, **ARGS)
    assert header_of(reply)[1:] == (42, 41, OP_REPLY)
    parsed = parse_op_reply(reply)
    assert parsed.flags == REPLY_FLAG_QUERY_FAILURE
    assert parsed.documents[0]["$err"] == ARGS["errmsg"] and parsed.documents[0]["code"] == 29001


@pytest.mark.parametrize("op_code", [OP_MSG, OP_COMPRESSED])
def test_header_only_op_msg_reply(op_code: int) -> None:
    reply = error_reply(Header(16, 41, 0, op_code), request_id=42, **ARGS)
    assert header_of(reply)[1:] == (42, 41, OP_MSG)
    assert decode_op_msg(reply).body["codeName"] == "ScalyGlobalQuery"


def test_rewrite_op_msg_keeps_flags_sequences_and_order_but_not_checksum() -> None:
    flags = FLAG_MORE_TO_COME | FLAG_EXHAUST_ALLOWED | CHECKSUM | (1 << 20)
    seq_a, seq_b = sized("a", bson.encode({"x": 1})), sized("b", bson.encode({"y": 2}))
    original = op_msg(
        flags, SEQUENCE, seq_a, BODY, ping(hello=1), SEQUENCE, seq_b, checksum=True, request_id=3
    )
    view = command_view(make_frame(original))
    rewritten = rewrite_command(view, {"ping": 1, "compression": [], "$db": "admin"}, request_id=3)
    expected = op_msg(
        flags & ~CHECKSUM,
        SEQUENCE, seq_a, BODY, bson.encode({"ping": 1, "compression": [], "$db": "admin"}), SEQUENCE, seq_b,
        request_id=3,
    )  # fmt: skip
    assert rewritten == expected
    with_sum = rewrite_command(view, {"ping": 1, "$db": "admin"}, request_id=4, checksum=True)
    assert struct.unpack_from("<I", with_sum, len(with_sum) - 4)[0] == crc32c(with_sum[:-4])
    assert decode_op_msg(with_sum).sequences == {"a": [{"x": 1}], "b": [{"y": 2}]}


def test_rewrite_op_query_keeps_everything_but_the_query() -> None:
    original = encode_op_query(
        "admin.$cmd", {"isMaster": 1, "compression": ["lz4", "zlib"]}, request_id=9, flags=4,
        number_to_skip=0, number_to_return=-1, selector={"ok": 1},
    )  # fmt: skip
    view = command_view(make_frame(original))
    rewritten = rewrite_command(view, {"isMaster": 1, "compression": ["zlib"]}, request_id=9)
    decoded = decode_op_query(rewritten)
    assert decoded.query == {"isMaster": 1, "compression": ["zlib"]}
    assert (decoded.flags, decoded.namespace, decoded.number_to_return, decoded.selector) == (
        4,
        "admin.$cmd",
        -1,
        {"ok": 1},
    )
    assert header_of(rewritten)[1:] == (9, 0, OP_QUERY)


def test_rewrite_op_query_keeps_a_query_wrapper() -> None:
    wrapper = {
        "$query": {"isMaster": 1, "compression": ["zlib"]},
        "$readPreference": {"mode": "secondaryPreferred"},
    }
    view = command_view(make_frame(encode_op_query("admin.$cmd", wrapper, request_id=9)))
    rewritten = rewrite_command(view, {"isMaster": 1}, request_id=9)
    assert decode_op_query(rewritten).query == {
        "$query": {"isMaster": 1},
        "$readPreference": {"mode": "secondaryPreferred"},
    }


def test_rewrite_of_a_compressed_request_is_uncompressed() -> None:
    plain = encode_op_msg({"ping": 1, "$db": "a"}, request_id=12)
    view = command_view(make_frame(compress_message(plain, 1)))
    assert rewrite_command(view, {"ping": 2, "$db": "a"}, request_id=12) == encode_op_msg(
        {"ping": 2, "$db": "a"}, request_id=12
    )


def test_decode_reply_body_of_each_reply_form() -> None:
    hello = {"ok": 1.0, "maxMessageSizeBytes": 48_000_000, "compression": ["zstd"]}
    as_msg = encode_op_msg(hello, request_id=1, response_to=2)
    as_reply = encode_op_reply([hello, {"ignored": 1}], request_id=1, response_to=2)
    for message in (as_msg, as_reply, compress_message(as_msg, 3), compress_message(as_reply, 2)):
        assert decode_reply_body(make_frame(message)) == hello


def test_decode_reply_body_refusals() -> None:
    with pytest.raises(ProtocolError):
        decode_reply_body(make_frame(encode_op_reply([], request_id=1, response_to=2)))
    with pytest.raises(ProtocolError) as info:
        decode_reply_body(make_frame(encode_op_query("a.$cmd", {"x": 1}, request_id=1)))
    assert info.value.kind == "unsupported_opcode"
    bad_count = bytearray(encode_op_reply([{"a": 1}], request_id=1, response_to=2))
    bad_count[32] = 3  # numberReturned
    with pytest.raises(ProtocolError):
        decode_reply_body(make_frame(bytes(bad_count)))


def test_op_reply_round_trip() -> None:
    docs = [{"a": i} for i in range(3)]
    message = encode_op_reply(
        docs, request_id=1, response_to=2, flags=8, cursor_id=2**40, starting_from=5
    )
    assert tuple(parse_op_reply(message)) == (8, 2**40, 5, docs)
