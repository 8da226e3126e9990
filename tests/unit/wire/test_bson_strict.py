"""Strict BSON: every bson-corpus decodeErrors case is refused wherever a document
can appear, valid cases are accepted, repeated keys are refused at any depth."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import bson
import pytest
from bson.code import Code
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from scalyproxy.wire import (
    ProtocolError,
    command_view,
    decode_document,
    decode_sequence,
    make_frame,
)
from scalyproxy.wire.ambiguous import AmbiguousRead, LenientDocument
from scalyproxy.wire.documents import DECODE_OPTIONS, find_duplicate_key
from tests.unit.wire.build import (
    BODY,
    SEQUENCE,
    corpus_cases,
    doc,
    el_array,
    el_doc,
    el_int,
    el_str,
    op_msg,
    ping,
    sized,
)
from tests.vectors import BSON_CORPUS

DECODE_ERRORS = corpus_cases("decodeErrors")
VALID = corpus_cases("valid")


def test_the_corpus_is_the_vendored_one() -> None:
    """tests/vectors/bson-corpus, as its README describes (pymongo 4.20.1's sdist)."""
    assert BSON_CORPUS.is_dir() and BSON_CORPUS.is_relative_to(Path(__file__).resolve().parents[2])
    assert (BSON_CORPUS / "LICENSE").read_text().startswith(" " * 33 + "Apache License")
    assert len(DECODE_ERRORS) == 75
    assert len(VALID) == 731
    assert bson.has_c()


def test_raw_bson_document_alone_would_not_be_enough() -> None:
    """Why strict decoding matters: lazy RawBSONDocument accepts most bad cases."""
    accepted = 0
    for _name, case in DECODE_ERRORS:
        try:
            RawBSONDocument(
                bytes.fromhex(case["bson"]), CodecOptions(document_class=RawBSONDocument)
            )
            accepted += 1
        except Exception:
            pass
    assert accepted > len(DECODE_ERRORS) // 2


@pytest.mark.parametrize("name, case", DECODE_ERRORS, ids=[n for n, _ in DECODE_ERRORS])
def test_decode_errors_are_refused_everywhere(name: str, case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["bson"])
    with pytest.raises(ProtocolError) as info:
        decode_document(raw)
    assert info.value.kind == "bad_bson"
    with pytest.raises(ProtocolError):
        decode_sequence(raw)
    with pytest.raises(ProtocolError) as in_body:  # as the command body (these have no $db)
        command_view(make_frame(op_msg(0, BODY, raw)))
    assert in_body.value.kind in ("bad_bson", "bad_section", "bad_command") and in_body.value.request_id == 7
    if in_body.value.kind == "bad_command":  # only a string is not UTF-8: the body reads leniently
        assert "UTF-8" in name
    view_or_error: Any
    try:  # as a kind-1 document: the layout may already be refused, else reading is
        view_or_error = command_view(
            make_frame(op_msg(0, BODY, ping(), SEQUENCE, sized("docs", raw)))
        )
    except ProtocolError:
        return
    # only a string that is not UTF-8 gets this far: the document reads, its bad part does not
    assert "UTF-8" in name
    (document,) = view_or_error.sequences["docs"]
    assert isinstance(document, LenientDocument) and document.doubt
    with pytest.raises(AmbiguousRead):
        dict(document)


@pytest.mark.parametrize("name, case", VALID, ids=[n for n, _ in VALID])
def test_valid_cases_are_accepted(name: str, case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["canonical_bson"])
    decoded = decode_document(raw)
    reference = bson.decode(raw, DECODE_OPTIONS)  # NaN != NaN: compare encodings
    assert bson.encode(decoded) == bson.encode(reference)
    assert [bson.encode(d) for d in decode_sequence(raw + raw)] == [bson.encode(reference)] * 2
    assert find_duplicate_key(raw) is None  # the byte walker copes with every type
    degenerate = case.get("degenerate_bson")
    if degenerate:
        decode_document(bytes.fromhex(degenerate))


# -- duplicate keys ---------------------------------------------------------------


def dup_error(raw: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_document(raw)
    assert info.value.kind == "duplicate_key"
    return info.value


def test_two_db_fields() -> None:
    raw = doc(el_str("find", "c"), el_str("$db", "a"), el_str("$db", "b"))
    err = dup_error(raw)
    assert err.field == "$db" and "$db" in str(err)
    with pytest.raises(ProtocolError) as info:
        command_view(make_frame(op_msg(0, BODY, raw)))
    assert (
        info.value.kind == "duplicate_key" and info.value.request_id == 7 and not info.value.fatal
    )


def test_two_filters() -> None:
    raw = doc(
        el_str("find", "c"),
        el_doc("filter", doc(el_int("a", 1))),
        el_doc("filter", doc()),
        el_str("$db", "d"),
    )
    assert dup_error(raw).field == "filter"


def test_duplicate_inside_a_filter() -> None:
    raw = doc(
        el_str("find", "c"),
        el_doc("filter", doc(el_int("a", 1), el_int("a", 2))),
        el_str("$db", "d"),
    )
    err = dup_error(raw)
    assert err.field == "filter.a"
    assert err.offset is not None and raw[err.offset : err.offset + 3] == b"\x10a\x00"
    # in a command, the repeat is refused only when read (docs/wire.md, strict where the verdict reads)
    view = command_view(make_frame(op_msg(0, BODY, raw)))
    assert view.name == "find" and view.db == "d" and view.body["find"] == "c"
    with pytest.raises(AmbiguousRead) as read:
        view.body["filter"]["a"]
    assert read.value.kind == "duplicate_key" and read.value.field == "a"


def test_duplicate_deep_inside_arrays() -> None:
    inner = doc(el_int("x", 1), el_int("x", 1))  # same value twice: still refused
    raw = doc(
        el_str("aggregate", "c"),
        el_array("pipeline", doc(el_doc("0", doc(el_doc("$match", inner))))),
    )
    assert dup_error(raw).field == "pipeline.0.$match.x"


def test_duplicate_in_code_with_scope() -> None:
    scope = doc(el_int("v", 1), el_int("v", 2))
    code = b"return v;\x00"
    cws = (
        struct.pack("<i", 4 + 4 + len(code) + len(scope))
        + struct.pack("<i", len(code))
        + code
        + scope
    )
    raw = doc(b"\x0f" + b"fn\x00" + cws)
    assert dup_error(raw).field == "fn.$scope.v"


def test_duplicates_in_a_sequence_document() -> None:
    run = bson.encode({"a": 1}) + doc(
        el_int("_id", 1), el_doc("n", doc(el_int("k", 1), el_int("k", 1)))
    )
    with pytest.raises(ProtocolError) as info:
        decode_sequence(run, what="kind-1 section 'documents'")
    assert info.value.kind == "duplicate_key" and info.value.field == "n.k"
    assert "documents'[1]" in info.value.reason


def test_equal_keys_in_different_documents_are_fine() -> None:
    raw = bson.encode({"a": {"a": {"a": 1}}, "b": [{"a": 1}, {"a": 2}], "$db": "x"})
    assert decode_document(raw)["b"] == [{"a": 1}, {"a": 2}]


def test_array_index_names_are_not_compared() -> None:
    raw = doc(el_array("xs", doc(el_int("0", 1), el_int("0", 2), el_int("7", 3))))
    assert decode_document(raw) == {"xs": [1, 2, 3]}


def test_non_canonical_but_valid_documents_are_accepted() -> None:
    symbol = b"\x0e" + b"s\x00" + struct.pack("<i", 2) + b"x\x00"
    undefined = b"\x06u\x00"
    raw = doc(symbol, undefined, el_str("k", "v"))
    assert decode_document(raw) == {"s": "x", "u": None, "k": "v"}


def test_a_shorter_key_cannot_hide_a_duplicate() -> None:
    """Re-encoded length alone would be fooled: a long array key (re-encoded as "0")
    can make up for the bytes a collapsed duplicate loses. Byte comparison is not."""
    padded = el_array("xs", doc(el_int("0000000", 1)))  # 6 bytes longer than canonical
    raw = doc(padded, el_int("a", 1), el_int("a", 2))  # the duplicate loses 7 bytes
    assert dup_error(raw).field == "a"


def test_walker_reports_nothing_for_a_clean_document() -> None:
    raw = bson.encode({"a": [1, {"b": Code("x", {"c": 1})}], "d": {"e": bson.Regex("x", "i")}})
    assert find_duplicate_key(raw) is None
