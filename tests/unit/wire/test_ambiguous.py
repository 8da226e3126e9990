"""Strict where the verdict reads: a command with a repeated key or a string that is
not UTF-8 is viewed (its doubtful parts raise AmbiguousRead when read), except in
its name and $db, which are always strict. Checked with and without the C scanner."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import bson
import pytest

from scalyproxy._scan import fast_view
from scalyproxy.wire import ProtocolError, command_view, make_frame
from scalyproxy.wire import ambiguous as ambiguous_module
from scalyproxy.wire import command as command_module
from scalyproxy.wire import documents as documents_module
from scalyproxy.wire.ambiguous import (
    BAD_KEY,
    BAD_VALUE,
    REPEATED,
    AmbiguousRead,
    LenientDocument,
    decode_command_document,
    decode_command_run,
    has_doubt,
    name_field,
)
from scalyproxy.wire.replies import error_body
from tests.rawbson import arr, bad, doc, op_msg


@pytest.fixture(params=["C", "pure-Python"])
def scanner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Both codec paths: with the C scanner, and without it (no compiler)."""
    if request.param == "pure-Python":
        for module in (documents_module, command_module, ambiguous_module):
            monkeypatch.setattr(module, "_scan", None)
    yield request.param


def view_of(message: bytes, scanner: str) -> Any:
    if scanner == "pure-Python":
        return command_module._python_command_view(make_frame(message))
    return command_view(make_frame(message))


FIND = ("find", "c")
DB = ("$db", "d")


# -- the document ----------------------------------------------------------------------


@pytest.mark.usefixtures("scanner")
def test_a_repeated_key_raises_only_when_read() -> None:
    d = decode_command_document(doc(FIND, ("filter", doc(("a", 1), ("a", 2), ("b", 3))), DB))
    assert isinstance(d, LenientDocument) and d["find"] == "c" and d.get("$db") == "d"
    f = d["filter"]
    assert f["b"] == 3 and f.get("zz") is None and "b" in f and f.doubt == {"a": REPEATED}
    for read in (lambda: f["a"], lambda: f.get("a"), lambda: "a" in f, lambda: list(f), lambda: len(f), lambda: dict(f), lambda: f == {"a": 2, "b": 3}):
        with pytest.raises(AmbiguousRead) as info:
            read()
        assert info.value.kind == "duplicate_key" and info.value.field == "a"


@pytest.mark.usefixtures("scanner")
def test_iteration_stops_at_the_doubtful_key_not_before() -> None:
    d = decode_command_document(doc(("x", 1), ("y", 2), ("x", 3), DB))
    assert isinstance(d, LenientDocument) and d["y"] == 2
    first = iter(d)
    with pytest.raises(AmbiguousRead):  # "x" comes first: reached at once
        next(first)
    later = decode_command_document(doc(("y", 2), ("x", 1), ("x", 3)))
    it = iter(later)
    assert next(it) == "y"
    with pytest.raises(AmbiguousRead):
        next(it)


@pytest.mark.usefixtures("scanner")
def test_strings_that_are_not_utf8() -> None:
    d = decode_command_document(doc(FIND, ("comment", bad(b"x\xff")), (b"k\xfe", 1), ("list", arr("ok", bad(b"\xc0"))), ("fine", "\u00e9t\u00e9"), DB))
    assert isinstance(d, LenientDocument)
    assert d.doubt == {"comment": BAD_VALUE, "k\udcfe": BAD_KEY, "list": BAD_VALUE}
    assert d["fine"] == "\u00e9t\u00e9"  # valid UTF-8 is not in doubt
    assert "comment" in d  # the key is there once: it can be listed, not read
    with pytest.raises(AmbiguousRead) as value:
        d["comment"]
    assert value.value.kind == "bad_bson" and "not valid UTF-8" in str(value.value)
    with pytest.raises(AmbiguousRead):
        d["list"]
    with pytest.raises(AmbiguousRead) as key:
        list(d)
    assert "k\\xfe" in str(key.value)  # the bytes, escaped


def test_error_replies_escape_what_is_not_utf8() -> None:
    body = error_body(code=29005, code_name="ScalyProtocolError", errmsg="key 'k\udcfe'")
    assert bson.decode(bson.encode(body))["errmsg"] == "key 'k\\udcfe'"


@pytest.mark.usefixtures("scanner")
def test_namespace_fields_read_an_undecodable_name_but_not_a_repeated_one() -> None:
    d = decode_command_document(doc(("create", bad(b"c\xff")), ("to", "a"), ("to", "b"), DB))
    assert isinstance(d, LenientDocument)
    assert name_field(d, "create") == "c\udcff"  # not UTF-8: cannot be a declared name
    with pytest.raises(AmbiguousRead):
        d["create"]
    with pytest.raises(AmbiguousRead):
        name_field(d, "to")
    assert name_field({"to": "x"}, "to") == "x" and name_field(d, "absent") is None


@pytest.mark.usefixtures("scanner")
def test_clean_documents_are_plain_dicts() -> None:
    clean = bson.encode({"find": "c", "filter": {"a": [1, {"b": "\u00e9"}]}, "$db": "d"})
    decoded = decode_command_document(clean)
    assert type(decoded) is dict and decoded == bson.decode(clean)
    run = decode_command_run(clean + doc(("a", 1), ("a", 2)) + clean)
    assert [type(x) for x in run] == [dict, LenientDocument, dict]


@pytest.mark.usefixtures("scanner")
def test_invalid_bson_is_still_refused() -> None:
    good = doc(FIND, ("x", 1), ("x", 2), DB)
    broken = good[:-2] + b"\x07\x00"  # a bad last byte after the repeat
    with pytest.raises(ProtocolError) as info:
        decode_command_document(broken)
    assert info.value.kind == "bad_bson"
    with pytest.raises(ProtocolError):
        decode_command_run(good + b"\x05\x00")


@pytest.mark.usefixtures("scanner")
def test_a_doubtful_dbref_stays_a_document() -> None:
    """pymongo turns {$ref, $id} into a DBRef; with a doubt inside it would lose it: it does not."""
    d = decode_command_document(doc(("r", doc(("$ref", "c"), ("$id", 1), ("x", 1), ("x", 2))), DB))
    assert isinstance(d, LenientDocument) and isinstance(d["r"], LenientDocument)
    assert d["r"].doubt == {"x": REPEATED}
    clean = decode_command_document(doc(("r", doc(("$ref", "c"), ("$id", 1))), DB))
    assert type(clean["r"]).__name__ == "DBRef"


@pytest.mark.usefixtures("scanner")
def test_doubt_hidden_in_code_scope_is_seen() -> None:
    scope = doc(("v", 1), ("v", 2))
    code = b"return v;\x00"
    cws = (4 + 4 + len(code) + len(scope)).to_bytes(4, "little") + len(code).to_bytes(4, "little") + code + scope
    raw = doc(FIND)[:-1] + b"\x0ffn\x00" + cws + b"\x00"
    raw = len(raw).to_bytes(4, "little") + raw[4:]
    d = decode_command_document(raw)
    assert has_doubt(d) and isinstance(d, LenientDocument) and d.doubt == {"fn": BAD_VALUE}


# -- the command view ---------------------------------------------------------------------


def test_name_and_db_are_always_strict(scanner: str) -> None:
    cases = {
        "two $db": doc(FIND, DB, ("$db", "e")),
        "the name twice": doc(("find", "a"), ("x", 1), ("find", "b"), DB),
        "a name that is not UTF-8": doc((b"fi\xffnd", "c"), DB),
        "a $db that is not UTF-8": doc(FIND, ("$db", bad(b"d\xff"))),
    }
    for what, body in cases.items():
        with pytest.raises(ProtocolError) as info:
            view_of(op_msg(body, 9), scanner)
        assert info.value.kind in ("duplicate_key", "bad_bson") and info.value.request_id == 9, what


def test_a_doubt_elsewhere_gives_a_view(scanner: str) -> None:
    body = doc(("update", bad(b"c\xff")), ("updates", arr(doc(("q", doc()), ("u", doc(("$set", doc(("v", 1), ("v", 2)))))))), DB)
    view = view_of(op_msg(body, 3), scanner)
    assert (view.name, view.db, view.request_id) == ("update", "d", 3)
    assert name_field(view.body, "update") == "c\udcff"
    (statement,) = view.body["updates"]
    with pytest.raises(AmbiguousRead):
        statement["u"]["$set"]["v"]


def test_kind1_documents_in_doubt_are_viewed_and_raise_when_read(scanner: str) -> None:
    docs = [bson.encode({"_id": 1}), doc(("_id", 1), ("_id", 2)), doc(("s", bad(b"\xff")))]
    view = view_of(op_msg(doc(("insert", "c"), DB), 4, documents=docs), scanner)
    first, second, third = view.sequences["documents"]
    assert first == {"_id": 1}
    with pytest.raises(AmbiguousRead):
        second["_id"]
    with pytest.raises(AmbiguousRead):
        third["s"]
    with pytest.raises(ProtocolError):  # invalid BSON in a sequence: refused as before
        v = view_of(op_msg(doc(("insert", "c"), DB), 4, documents=[b"\x06\x00\x00\x00\x08\x00"]), scanner)
        list(v.sequences["documents"])


def test_a_sequence_named_like_a_doubtful_field_still_collides(scanner: str) -> None:
    body = doc(("insert", "c"), ("documents", arr()), ("documents", arr()), DB)
    with pytest.raises(ProtocolError) as info:
        view_of(op_msg(body, 4, documents=[bson.encode({"a": 1})]), scanner)
    assert info.value.kind == "bad_section"


def test_the_c_view_leaves_every_doubt_to_the_careful_path() -> None:
    """fast_view only builds views of clean messages: anything in doubt returns None."""
    for body in (doc(FIND, ("x", 1), ("x", 2), DB), doc(FIND, ("s", bad(b"\xff")), DB)):
        assert fast_view(op_msg(body)) is None
        assert isinstance(command_view(make_frame(op_msg(body))).body, LenientDocument)
    assert fast_view(op_msg(doc(FIND, DB))) is not None
