"""OP_MSG parsing: the MongoDB server's own op_msg_test.cpp cases, and more."""

from __future__ import annotations

import bson
import pytest

from scalyproxy.wire import (
    OP_MSG,
    ProtocolError,
    command_view,
    decode_op_msg,
    encode_op_msg,
    make_frame,
)
from scalyproxy.wire.documents import HAVE_SCAN
from scalyproxy.wire.op_msg import (
    FLAG_CHECKSUM_PRESENT,
    FLAG_EXHAUST_ALLOWED,
    FLAG_MORE_TO_COME,
    parse_op_msg,
)
from tests.unit.wire.build import (
    BODY,
    CHECKSUM,
    SEQUENCE,
    doc,
    el_array,
    el_doc,
    el_int,
    op_msg,
    ping,
    sized,
)


def refused(message: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_op_msg(message)
    with pytest.raises(ProtocolError) as again:
        command_view(make_frame(message))
    assert again.value.kind == info.value.kind
    assert again.value.request_id == 7 and again.value.op_code == OP_MSG
    return info.value


def a1() -> bytes:
    return bson.encode({"a": 1})


# -- accepted layouts -------------------------------------------------------------


def test_just_a_body() -> None:
    msg = decode_op_msg(op_msg(0, BODY, ping()))
    assert msg.body == {"ping": 1, "$db": "admin"} and msg.sequences == {} and msg.flags == 0


def test_with_checksum() -> None:
    msg = decode_op_msg(op_msg(CHECKSUM, BODY, ping(), checksum=True))
    assert msg.body["ping"] == 1


@pytest.mark.parametrize(
    "parts, names",
    [
        ((BODY, ping(), SEQUENCE, sized("docs", a1(), bson.encode({"a": 2}))), ["docs"]),
        ((SEQUENCE, sized("docs", a1()), BODY, ping()), ["docs"]),
        (
            (SEQUENCE, sized("empty"), BODY, ping(), SEQUENCE, sized("docs", a1())),
            ["empty", "docs"],
        ),
        (
            (SEQUENCE, sized("empty"), SEQUENCE, sized("docs", a1()), BODY, ping()),
            ["empty", "docs"],
        ),
        (
            (BODY, ping(), SEQUENCE, sized("docs", a1()), SEQUENCE, sized("empty")),
            ["docs", "empty"],
        ),
    ],
)
def test_sections_in_any_order(parts: tuple[bytes | int, ...], names: list[str]) -> None:
    msg = decode_op_msg(op_msg(0, *parts))
    assert list(msg.sequences) == names
    assert msg.sequences.get("empty", []) == []
    if "docs" in msg.sequences:
        assert msg.sequences["docs"][0] == {"a": 1}
    view = command_view(make_frame(op_msg(0, *parts)))
    assert list(view.sequences) == names and view.name == "ping"


def test_sequence_and_body_with_a_common_prefix_are_fine() -> None:
    body = bson.encode({"cursor": {"ns": "foo.bar", "id": 1}, "$db": "foo"})
    msg = decode_op_msg(
        op_msg(0, BODY, body, SEQUENCE, sized("cursor.firstBatch", bson.encode({"_id": 1})))
    )
    assert msg.sequences == {"cursor.firstBatch": [{"_id": 1}]}


@pytest.mark.parametrize("bit", range(16, 32))
def test_unknown_optional_flag_bits_are_ignored(bit: int) -> None:
    view = command_view(make_frame(op_msg(1 << bit, BODY, ping())))
    assert view.flags == 1 << bit and view.name == "ping"


def test_more_to_come_and_exhaust_allowed() -> None:
    view = command_view(make_frame(op_msg(FLAG_MORE_TO_COME, BODY, ping())))
    assert view.more_to_come and not view.exhaust_allowed
    view = command_view(make_frame(op_msg(FLAG_EXHAUST_ALLOWED, BODY, ping())))
    assert view.exhaust_allowed and not view.more_to_come


# -- refused (the server's negative cases) ----------------------------------------


def test_no_body() -> None:
    assert refused(op_msg(0)).kind == "bad_section"


def test_no_body_even_with_a_sequence() -> None:
    err = refused(op_msg(0, SEQUENCE, sized("docs")))
    assert err.kind == "bad_section" and "no kind-0" in err.reason


def test_two_bodies() -> None:
    err = refused(op_msg(0, BODY, ping(), BODY, bson.encode({"pong": 1})))
    assert (
        err.kind == "bad_section"
        and "second kind-0" in err.reason
        and err.offset == 20 + 1 + len(ping())
    )


def test_duplicate_sequences() -> None:
    err = refused(op_msg(0, BODY, ping(), SEQUENCE, sized("docs"), SEQUENCE, sized("docs")))
    assert err.kind == "bad_section" and err.field == "docs"


def test_sequence_named_like_a_body_field() -> None:
    err = refused(op_msg(0, BODY, ping(docs=[]), SEQUENCE, sized("docs")))
    assert err.kind == "bad_section" and err.field == "docs"


def test_sequence_named_like_a_nested_body_field() -> None:
    err = refused(op_msg(0, BODY, ping(a={"b": []}), SEQUENCE, sized("a.b")))
    assert err.kind == "bad_section" and err.field == "a.b"


# The MongoDB server closes the connection on an unknown section kind, an unknown
# required flag bit or a checksum mismatch. The proxy knows where such a message
# ends (the framer checked its length), so these errors are not fatal: the relay
# answers the request and reads the next one (issue 15; docs/wire.md).


def test_unknown_section_kind_is_refused_not_fatal() -> None:
    err = refused(op_msg(0, 0x99, sized("")))
    assert err.kind == "bad_section" and not err.fatal and "kind 153" in err.reason


@pytest.mark.parametrize("kind", [2, 3, 0x7F, 0xFF])
def test_other_unknown_section_kinds_after_a_body(kind: int) -> None:
    err = refused(op_msg(0, BODY, ping(), kind, sized("x")))
    assert err.kind == "bad_section" and not err.fatal and f"kind {kind}" in err.reason


def shrink(message: bytes) -> bytes:
    """The message cut by its last byte, messageLength adjusted (the server's addToSize(-1))."""
    return (len(message) - 1).to_bytes(4, "little") + message[4:-1]


def test_body_too_big() -> None:
    assert refused(shrink(op_msg(0, BODY, ping()))).kind == "bad_section"


def test_message_length_not_matching_the_bytes() -> None:
    assert refused(op_msg(0, BODY, ping(), add=-1)).kind == "bad_length"


def test_body_too_big_into_checksum() -> None:
    assert refused(shrink(op_msg(CHECKSUM, BODY, ping(), checksum=True))).kind == "bad_checksum"


def test_body_running_past_the_end_of_the_sections() -> None:
    body = ping()
    err = refused(op_msg(0, BODY, body[:-3]))
    assert err.kind == "bad_section" and err.offset == 21


def test_document_sequence_too_big() -> None:
    err = refused(shrink(op_msg(0, BODY, ping(), SEQUENCE, sized("docs", a1()))))
    assert err.kind == "bad_section"


def test_document_sequence_too_big_into_checksum() -> None:
    msg = op_msg(CHECKSUM, BODY, ping(), SEQUENCE, sized("docs", a1()), checksum=True)
    assert refused(shrink(msg)).kind == "bad_checksum"


def test_document_in_sequence_too_big() -> None:
    # The last byte of the document falls outside its section.
    err = refused(op_msg(0, BODY, ping(), SEQUENCE, sized("docs", a1(), add=-1)))
    assert err.kind == "bad_section"


def test_document_overrunning_its_sequence_is_refused() -> None:
    long_doc = (len(a1()) + 1).to_bytes(4, "little") + a1()[4:]
    message = op_msg(0, BODY, ping(), SEQUENCE, sized("docs", long_doc))
    assert parse_op_msg(message).sequences  # the layout is fine
    with pytest.raises(ProtocolError) as info:
        decode_op_msg(message)
    assert info.value.kind == "bad_bson"
    if HAVE_SCAN:  # every kind-1 document is scanned before the view exists
        with pytest.raises(ProtocolError) as early:
            command_view(make_frame(message))
        assert early.value.kind == "bad_bson"
        return
    view = command_view(make_frame(message))  # pure Python: sequences are decoded lazily...
    with pytest.raises(ProtocolError) as lazy:
        view.sequences["docs"]  # ...and strictly, when read
    assert lazy.value.kind == "bad_bson"


def test_name_of_sequence_too_big() -> None:
    err = refused(op_msg(0, BODY, ping(), SEQUENCE, sized("foo", add=-1), b"\x00"))
    assert err.kind == "bad_section"


def test_sequence_identifier_without_nul() -> None:
    err = refused(op_msg(0, BODY, ping(), SEQUENCE, sized("foo", nul=False)))
    assert err.kind == "bad_section" and "NUL" in err.reason


def test_sequence_identifier_not_utf8() -> None:
    assert refused(op_msg(0, BODY, ping(), SEQUENCE, sized(b"\xff\xfe"))).kind == "bad_section"


@pytest.mark.parametrize("size", [0, 1, 2, 3])
def test_no_room_for_flags(size: int) -> None:
    message = (
        (16 + size).to_bytes(4, "little")
        + (7).to_bytes(4, "little")
        + bytes(4)
        + OP_MSG.to_bytes(4, "little")
    )
    err = refused(message + bytes(size))
    assert err.kind == "bad_flags" and err.field == "flagBits"


@pytest.mark.parametrize("bit", range(2, 16))
def test_unknown_required_flag_bits_are_refused(bit: int) -> None:
    err = refused(op_msg(1 << bit, BODY, ping()))
    assert err.kind == "bad_flags" and not err.fatal and str(bit) in err.reason


def test_checksum_mismatch_is_refused() -> None:
    message = op_msg(CHECKSUM, BODY, ping(), checksum=True)
    bad = message[:-4] + (123).to_bytes(4, "little")
    err = refused(bad)
    assert err.kind == "bad_checksum" and not err.fatal


def test_checksum_flag_without_room_for_it() -> None:
    message = op_msg(CHECKSUM)  # 20 bytes: no room for 4 checksum bytes
    assert refused(message).kind == "bad_checksum"


def test_corrupted_byte_under_checksum_is_caught() -> None:
    message = bytearray(op_msg(CHECKSUM, BODY, ping(), checksum=True))
    message[-8] ^= 0x01
    assert refused(bytes(message)).kind == "bad_checksum"


def test_trailing_bytes_after_the_sections() -> None:
    assert refused(op_msg(0, BODY, ping(), b"\x00")).kind == "bad_section"


def test_sequence_size_smaller_than_its_own_header() -> None:
    assert (
        refused(op_msg(0, BODY, ping(), SEQUENCE, (3).to_bytes(4, "little"), b"\x00")).kind
        == "bad_section"
    )


def test_negative_body_size() -> None:
    assert (
        refused(op_msg(0, BODY, (-5).to_bytes(4, "little", signed=True) + b"\x00")).kind
        == "bad_section"
    )


def test_nested_dotted_identifier_whose_prefix_is_not_a_document() -> None:
    msg = decode_op_msg(op_msg(0, BODY, ping(a=5), SEQUENCE, sized("a.b", a1())))
    assert msg.sequences["a.b"] == [{"a": 1}]


# -- encoding ---------------------------------------------------------------------


def test_encode_round_trip_with_sequences_and_checksum() -> None:
    docs = [{"_id": i, "x": [i, {"y": i}]} for i in range(5)]
    message = encode_op_msg(
        {"insert": "c", "$db": "d"},
        request_id=42,
        response_to=3,
        flags=FLAG_MORE_TO_COME,
        sequences={"documents": docs, "other": []},
        checksum=True,
    )
    decoded = decode_op_msg(message)
    assert decoded.flags == FLAG_MORE_TO_COME | FLAG_CHECKSUM_PRESENT
    assert decoded.body == {"insert": "c", "$db": "d"}
    assert decoded.sequences == {"documents": docs, "other": []}
    assert (
        int.from_bytes(message[4:8], "little") == 42
        and int.from_bytes(message[8:12], "little") == 3
    )


def test_encoder_matches_hand_built_bytes() -> None:
    body = doc(el_int("ping", 1), el_doc("x", doc(el_array("a", doc(el_int("0", 1))))))
    expected = op_msg(0, BODY, body, SEQUENCE, sized("s", a1()), request_id=5)
    assert encode_op_msg(bson.decode(body), request_id=5, sequences={"s": [{"a": 1}]}) == expected


def test_checksum_flag_in_flags_is_not_trusted() -> None:
    message = encode_op_msg({"ping": 1, "$db": "a"}, request_id=1, flags=FLAG_CHECKSUM_PRESENT)
    assert decode_op_msg(message).flags == 0


def test_identifier_with_nul_cannot_be_encoded() -> None:
    with pytest.raises(ValueError):
        encode_op_msg({"ping": 1}, request_id=1, sequences={"a\x00b": []})
