"""command_view: what the policy engine and the relay read from a request frame."""

from __future__ import annotations

import struct

import bson
import pytest
from bson.codec_options import DEFAULT_CODEC_OPTIONS
from pymongo import _cmessage  # type: ignore[attr-defined]

from scalyproxy.wire import (
    OP_COMPRESSED,
    OP_GET_MORE,
    OP_MSG,
    OP_QUERY,
    ProtocolError,
    command_view,
    compress_message,
    encode_op_msg,
    encode_op_query,
    make_frame,
)
from scalyproxy.wire.command import CommandView, LazySequences
from scalyproxy.wire.header import LEGACY_OPCODES
from tests.unit.wire.build import (
    BODY,
    SEQUENCE,
    doc,
    el_array,
    el_int,
    el_str,
    op_msg,
    ping,
    raw_message,
    sized,
)


def view_of(message: bytes) -> CommandView:
    return command_view(make_frame(message))


def refusal(message: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        view_of(message)
    return info.value


def test_find_view() -> None:
    message = encode_op_msg({"find": "users", "filter": {"a": 1}, "$db": "app"}, request_id=11)
    frame = make_frame(message)
    view = command_view(frame)
    assert (view.name, view.db, view.request_id, view.op_code) == ("find", "app", 11, OP_MSG)
    assert view.body == {"find": "users", "filter": {"a": 1}, "$db": "app"}
    assert dict(view.sequences) == {} and view.compressor_id is None and not view.legacy
    assert not view.more_to_come and not view.exhaust_allowed
    assert frame.data is message and view.message is message  # original bytes untouched, not copied


def test_name_is_the_first_key_exactly_as_sent() -> None:
    view = view_of(encode_op_msg({"findandmodify": "c", "query": {}, "$db": "d"}, request_id=1))
    assert view.name == "findandmodify"


def test_repr_shows_no_document_values() -> None:
    view = view_of(
        encode_op_msg({"find": "c", "filter": {"ssn": "123-45-6789"}, "$db": "d"}, request_id=1)
    )
    assert "123-45-6789" not in repr(view) and "find" in repr(view)


def test_sequences_are_decoded_lazily_and_once() -> None:
    docs = [{"_id": i} for i in range(3)]
    view = view_of(
        encode_op_msg({"insert": "c", "$db": "d"}, request_id=2, sequences={"documents": docs})
    )
    assert isinstance(view.sequences, LazySequences)
    assert list(view.sequences) == ["documents"] and len(view.sequences) == 1
    assert bytes(view.sequences.raw("documents")) == b"".join(bson.encode(d) for d in docs)
    first = view.sequences["documents"]
    assert first == docs and view.sequences["documents"] is first


@pytest.mark.parametrize("body", [doc(), doc(el_str("ping", "x"))], ids=["empty", "no $db"])
def test_command_without_name_or_db_is_refused(body: bytes) -> None:
    err = refusal(op_msg(0, BODY, body))
    assert err.kind == "bad_command" and not err.fatal and err.request_id == 7


def test_db_must_be_a_string() -> None:
    err = refusal(op_msg(0, BODY, bson.encode({"ping": 1, "$db": 5})))
    assert err.kind == "bad_command" and err.field == "$db"


# -- legacy OP_QUERY handshake -----------------------------------------------------


@pytest.mark.parametrize("name", ["hello", "isMaster", "ismaster"])
def test_hello_over_op_query(name: str) -> None:
    query = {name: 1, "client": {"driver": {"name": "x"}}, "compression": ["snappy"]}
    _rid, message, _ = _cmessage._query_message(
        4, "admin.$cmd", 0, -1, query, None, DEFAULT_CODEC_OPTIONS
    )
    view = view_of(message)
    assert (view.name, view.db, view.legacy, view.op_code) == (name, "admin", True, OP_QUERY)
    assert view.body == query and view.flags == 4 and not view.more_to_come


def test_other_commands_over_op_query_are_still_viewed() -> None:
    view = view_of(encode_op_query("shop.$cmd", {"find": "orders"}, request_id=3))
    assert view.legacy and view.name == "find" and view.db == "shop"


def test_query_wrapped_command() -> None:
    query = {"$query": {"isMaster": 1}, "$readPreference": {"mode": "secondaryPreferred"}}
    view = view_of(encode_op_query("admin.$cmd", query, request_id=3))
    assert view.name == "isMaster" and view.body == {"isMaster": 1}


def test_exhaust_flag_of_op_query() -> None:
    view = view_of(encode_op_query("admin.$cmd", {"isMaster": 1}, request_id=3, flags=1 << 6))
    assert view.exhaust_allowed


@pytest.mark.parametrize("namespace", ["shop.orders", "admin.$cmd.sys", "$cmd", ".$cmd", "admin"])
def test_op_query_outside_cmd_is_unsupported_but_not_fatal(namespace: str) -> None:
    err = refusal(encode_op_query(namespace, {"isMaster": 1}, request_id=99))
    assert err.kind == "unsupported_opcode" and not err.fatal
    assert err.request_id == 99 and err.op_code == OP_QUERY


@pytest.mark.parametrize("op_code", sorted(LEGACY_OPCODES) + [1, 0, 1234, -5])
def test_legacy_and_unknown_opcodes_are_unsupported_with_the_request_id(op_code: int) -> None:
    err = refusal(raw_message(op_code, b"\x00" * 30, request_id=1234))
    assert err.kind == "unsupported_opcode" and not err.fatal
    assert err.request_id == 1234 and err.op_code == op_code
    assert str(op_code) in str(err)


def test_legacy_opcode_inside_op_compressed_reports_the_inner_opcode() -> None:
    err = refusal(compress_message(raw_message(OP_GET_MORE, b"\x00" * 30, request_id=5), 2))
    assert err.kind == "unsupported_opcode" and err.op_code == OP_GET_MORE and err.request_id == 5


def test_malformed_op_query() -> None:
    message = raw_message(OP_QUERY, b"\x00\x00\x00\x00admin.$cmd")  # no NUL, nothing after
    err = refusal(message)
    assert err.kind == "bad_section" and err.request_id == 7 and err.op_code == OP_QUERY


def test_op_query_trailing_bytes_after_selector() -> None:
    good = encode_op_query("admin.$cmd", {"isMaster": 1}, request_id=3, selector={"a": 1})
    assert view_of(good).name == "isMaster"
    bad = good + b"\x00"
    bad = struct.pack("<i", len(bad)) + bad[4:]
    assert refusal(bad).kind == "bad_section"


# -- compressed requests ----------------------------------------------------------


@pytest.mark.parametrize("compressor_id", [0, 1, 2, 3])
def test_compressed_op_msg(compressor_id: int) -> None:
    plain = encode_op_msg(
        {"insert": "c", "$db": "d"}, request_id=8, sequences={"documents": [{"x": 1}]}
    )
    packed = compress_message(plain, compressor_id)
    frame = make_frame(packed)
    view = command_view(frame)
    assert frame.header.op_code == OP_COMPRESSED and frame.data is packed
    assert view.compressor_id == compressor_id and view.op_code == OP_MSG and view.request_id == 8
    assert view.message == plain and view.sequences["documents"] == [{"x": 1}]


def test_compressed_op_query() -> None:
    plain = encode_op_query("admin.$cmd", {"ping": 1}, request_id=8)
    view = view_of(compress_message(plain, 1))
    assert view.legacy and view.name == "ping" and view.compressor_id == 1


def test_errors_inside_a_compressed_message_name_the_request() -> None:
    plain = op_msg(0, BODY, ping(), SEQUENCE, sized("ping"), request_id=31)
    err = refusal(compress_message(plain, 2))
    assert err.kind == "bad_section" and err.request_id == 31 and err.op_code == OP_COMPRESSED


def test_compressed_message_over_the_limit() -> None:
    plain = encode_op_msg({"ping": 1, "$db": "d", "pad": "x" * 5000}, request_id=8)
    packed = make_frame(compress_message(plain, 2))
    with pytest.raises(ProtocolError) as info:
        command_view(packed, max_message_size=1000)
    assert info.value.kind == "compression" and info.value.request_id == 8
    assert command_view(packed, max_message_size=len(plain)).name == "ping"


def test_non_canonical_body_gives_the_same_view_as_canonical() -> None:
    """A legal but non-canonical body (array element named "5") misses the fast
    path's byte comparison and is read by the careful path: same result."""
    odd = doc(el_str("find", "c"), el_array("xs", doc(el_int("5", 1))), el_str("$db", "d"))
    canonical = bson.encode({"find": "c", "xs": [1], "$db": "d"})
    odd_view, canonical_view = view_of(op_msg(0, BODY, odd)), view_of(op_msg(0, BODY, canonical))
    assert odd_view.body == canonical_view.body == {"find": "c", "xs": [1], "$db": "d"}
    assert (odd_view.name, odd_view.db) == (canonical_view.name, canonical_view.db)
