"""The C scanner (scalyproxy._scan) against the references it replaces:
pymongo's strict decoder for validity, the Python byte walker for repeated keys,
and the careful Python path for the command view. Also runs the key codec cases
with the extension switched off, so the pure-Python path stays correct."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import bson
import pytest
from bson import ObjectId
from bson.binary import Binary
from bson.code import Code
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.regex import Regex
from bson.timestamp import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scalyproxy.wire import (
    ProtocolError,
    command_view,
    decode_document,
    decode_sequence,
    encode_op_msg,
)
from scalyproxy.wire import ambiguous as ambiguous_module
from scalyproxy.wire import command as command_module
from scalyproxy.wire import documents as documents_module
from scalyproxy.wire.documents import HAVE_SCAN
from scalyproxy.wire.framer import make_frame
from tests.fuzz.targets import scan_reference
from tests.unit.wire.build import corpus_cases, doc, el_doc, el_int

scan = pytest.importorskip("scalyproxy._scan") if HAVE_SCAN else None

DECODE_ERRORS = corpus_cases("decodeErrors")
VALID = corpus_cases("valid")


def test_the_extension_is_built() -> None:
    """setup builds it; losing it silently would make the proxy several times slower."""
    assert HAVE_SCAN, "scalyproxy._scan is not built: rerun scripts/setup (needs a C compiler)"


@pytest.mark.parametrize("name, case", DECODE_ERRORS, ids=[n for n, _ in DECODE_ERRORS])
def test_every_decode_error_is_refused(name: str, case: dict[str, Any]) -> None:
    assert scan is not None
    raw = bytes.fromhex(case["bson"])
    assert scan.scan_document(raw) == "invalid"
    assert scan.scan_run(raw) == ("invalid", 0)


@pytest.mark.parametrize("name, case", VALID, ids=[n for n, _ in VALID])
def test_every_valid_case_is_accepted(name: str, case: dict[str, Any]) -> None:
    assert scan is not None
    raw = bytes.fromhex(case["canonical_bson"])
    assert scan.scan_document(raw) == scan_reference(raw) == "ok"
    assert scan.scan_run(raw + raw) == ("ok", 2)


def test_repeated_keys_at_any_depth() -> None:
    assert scan is not None
    flat = doc(el_int("a", 1), el_int("a", 2))
    nested = doc(el_doc("f", flat))
    in_array = doc(b"\x04" + b"arr\x00" + doc(el_doc("0", flat)))
    scope_doc = doc(el_int("x", 1), el_int("x", 1))
    code = (
        b"\x0f"
        + b"c\x00"
        + struct.pack("<i", 4 + 6 + len(scope_doc))
        + struct.pack("<i", 2)
        + b"x\x00"
        + scope_doc
    )
    for raw in (flat, nested, in_array, doc(code)):
        assert scan.scan_document(raw) == scan_reference(raw) == "duplicate"
    array_keys_repeat = doc(b"\x04" + b"arr\x00" + doc(el_int("0", 1), el_int("0", 2)))
    assert scan.scan_document(array_keys_repeat) == scan_reference(array_keys_repeat) == "ok"
    prefix = doc(el_int("ab", 1), el_int("a", 2), el_int("abc", 3))  # same prefixes, not equal
    assert scan.scan_document(prefix) == "ok"


@pytest.mark.parametrize("count", [31, 32, 33, 200, 5000])
def test_many_keys_sorted_on_the_heap(count: int) -> None:
    assert scan is not None
    keys = [f"k{i}" for i in range(count)]
    raw = bson.encode(dict.fromkeys(keys, 1))
    assert scan.scan_document(raw) == "ok"
    last = doc(*(el_int(k, 1) for k in keys), el_int(keys[count // 2], 2))
    assert scan.scan_document(last) == scan_reference(last) == "duplicate"


def test_depth_beyond_the_limit_is_left_to_python() -> None:
    assert scan is not None
    raw = bson.encode({"a": 1})
    for _ in range(150):
        raw = doc(el_doc("n", raw))
    assert scan.scan_document(raw) == "too_deep"
    assert decode_document(raw)["n"]["n"]  # the Python path decides: valid


def test_not_a_buffer() -> None:
    assert scan is not None
    with pytest.raises(TypeError):
        scan.scan_document("text")  # type: ignore[arg-type]
    assert scan.scan_document(b"") == "invalid"
    assert scan.scan_run(b"") == ("ok", 0)


# -- differential: random documents, mutated ------------------------------------------

keys = st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=8)
values = st.recursive(
    st.one_of(
        st.integers(-(2**31), 2**31 - 1),
        st.integers(-(2**63), 2**63 - 1).map(Int64),
        st.floats(allow_nan=False),
        st.text(st.characters(exclude_categories=["Cs"]), max_size=12),
        st.booleans(),
        st.none(),
        st.binary(max_size=12).map(Binary),
        st.binary(max_size=12).map(lambda b: Binary(b, 2)),
        st.just(ObjectId("5f1d2c3b4a59687766554433")),
        st.just(Regex("^a.*", "i")),
        st.just(Timestamp(5, 6)),
        st.just(Decimal128("1.5")),
        st.just(MinKey()),
        st.just(MaxKey()),
        st.just(Code("f()", {"s": 1})),
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=12,
)
documents = st.dictionaries(keys, values, max_size=6).map(bson.encode)


@st.composite
def mutated_documents(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(documents))
    for _ in range(draw(st.integers(0, 3))):
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        choice = draw(st.integers(0, 3))
        if choice == 0:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif choice == 1:
            data[pos] = draw(
                st.sampled_from([0x00, 0x01, 0x02, 0x03, 0x04, 0x08, 0x0F, 0x80, 0xFF])
            )
        elif choice == 2:
            del data[pos : pos + draw(st.integers(1, 4))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
    if draw(st.booleans()) and len(data) >= 4:
        data[:4] = struct.pack("<i", len(data))
    return bytes(data)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_documents())
def test_scanner_agrees_with_pymongo_and_the_walker(raw: bytes) -> None:
    assert scan is not None
    expected = scan_reference(raw)
    got = scan.scan_document(raw)
    if "ok" not in (expected, got):  # both refuse; which fault is found first may differ
        return
    assert got == expected, raw.hex()


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(documents, max_size=5))
def test_runs_count_their_documents(docs: list[bytes]) -> None:
    assert scan is not None
    assert scan.scan_run(b"".join(docs)) == ("ok", len(docs))
    if docs:
        assert scan.scan_run(b"".join(docs)[:-1])[0] == "invalid"


# -- fast_view is the careful path, faster -----------------------------------------------


def careful(message: bytes) -> Any:
    return command_module._careful_view(make_frame(message), 48_000_000)


def same_view(a: Any, b: Any) -> bool:
    plain = (a.name, a.db, a.body, a.request_id, a.op_code, a.flags, a.compressor_id, a.legacy)
    other = (b.name, b.db, b.body, b.request_id, b.op_code, b.flags, b.compressor_id, b.legacy)
    return (
        plain == other
        and a.message is b.message
        and list(a.sequences) == list(b.sequences)
        and all(list(a.sequences[k]) == list(b.sequences[k]) for k in a.sequences)
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(
        keys.filter(lambda k: k not in ("$db", "find", "documents", "updates", "deletes", "ops")),
        values,
        max_size=4,
    ),
    st.dictionaries(
        st.sampled_from(["documents", "updates", "deletes", "ops"]),
        st.lists(documents.map(bson.decode), max_size=3),
        max_size=3,
    ),
    st.sampled_from([0, 2, 1 << 16]),
)
def test_fast_view_equals_the_careful_path(
    extra: dict[str, Any], sequences: dict[str, list[dict[str, Any]]], flags: int
) -> None:
    assert scan is not None
    body = {"find": "c", **extra, "$db": "d"}
    message = encode_op_msg(body, request_id=42, flags=flags, sequences=sequences)
    fast = scan.fast_view(message)
    assert fast is not None
    assert same_view(fast, careful(message))
    assert type(fast) is command_module.CommandView and fast.more_to_come == bool(flags & 2)


@pytest.mark.parametrize(
    "message",
    [
        encode_op_msg({"ping": 1, "$db": "admin"}, request_id=1, checksum=True),  # checksum
        encode_op_msg({"ping": 1}, request_id=1),  # no $db: the careful path says so
        encode_op_msg({"ping": 1, "$db": 5}, request_id=1),
        encode_op_msg({"ping": 1, "$db": "a"}, request_id=1, flags=4),  # unknown required bit
        encode_op_msg({"insert": "c", "$db": "a"}, request_id=1, sequences={"a.b": [{}]}),  # dotted
        encode_op_msg(
            {"insert": "c", "documents": 1, "$db": "a"}, request_id=1, sequences={"documents": [{}]}
        ),
        bytes(encode_op_msg({"ping": 1, "$db": "a"}, request_id=1))
        + b"\x02",  # trailing, length wrong
    ],
)
def test_fast_view_leaves_the_unusual_to_python(message: bytes) -> None:
    assert scan is not None
    assert scan.fast_view(message) is None


def test_command_view_arguments() -> None:
    message = encode_op_msg({"ping": 1, "$db": "admin"}, request_id=9)
    assert command_view(make_frame(message), max_message_size=1000).name == "ping"
    with pytest.raises(TypeError):
        command_view(make_frame(message), size=3)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        command_view()  # type: ignore[call-arg]
    with pytest.raises(ProtocolError) as info:  # the careful path, through the C entry
        command_view(make_frame(encode_op_msg({"ping": 1}, request_id=11)))
    assert info.value.kind == "bad_command" and info.value.request_id == 11


def test_fast_view_takes_any_buffer_and_keeps_the_object() -> None:
    assert scan is not None
    message = encode_op_msg({"ping": 1, "$db": "admin"}, request_id=9)
    for data in (message, bytearray(message), memoryview(message)):
        view = scan.fast_view(data)
        assert (
            view is not None and view.message is data and view.body == {"ping": 1, "$db": "admin"}
        )
        assert view.request_id == 9 and view.name == "ping" and view.db == "admin"


# -- the pure-Python path, with the extension switched off ------------------------------


@pytest.fixture
def pure_python(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(documents_module, "_scan", None)
    monkeypatch.setattr(command_module, "_scan", None)
    monkeypatch.setattr(ambiguous_module, "_scan", None)
    yield


@pytest.mark.usefixtures("pure_python")
@pytest.mark.parametrize("name, case", DECODE_ERRORS[::5], ids=[n for n, _ in DECODE_ERRORS[::5]])
def test_pure_python_refuses_decode_errors(name: str, case: dict[str, Any]) -> None:
    raw = bytes.fromhex(case["bson"])
    with pytest.raises(ProtocolError):
        decode_document(raw)
    with pytest.raises(ProtocolError):
        decode_sequence(raw)


@pytest.mark.usefixtures("pure_python")
def test_pure_python_views_and_duplicates() -> None:
    pure_view = command_module._python_command_view
    message = encode_op_msg({"find": "c", "filter": {"a": 1}, "$db": "d"}, request_id=3)
    view = pure_view(make_frame(message))
    assert view.body["filter"] == {"a": 1} and view.name == "find"
    insert = encode_op_msg(
        {"insert": "c", "$db": "d"}, request_id=4, sequences={"documents": [{"x": 1}]}
    )
    assert list(pure_view(make_frame(insert)).sequences["documents"]) == [{"x": 1}]
    with pytest.raises(ProtocolError) as bad:
        pure_view(make_frame(encode_op_msg({"ping": 1}, request_id=5)))
    assert bad.value.kind == "bad_command" and bad.value.request_id == 5
    with pytest.raises(ProtocolError) as info:
        decode_document(doc(el_doc("f", doc(el_int("a", 1), el_int("a", 2)))))
    assert info.value.kind == "duplicate_key" and info.value.field == "f.a"


# -- DocumentRun: large kind-1 runs are never decoded whole --------------------------------


def big_insert(count: int, size: int) -> bytes:
    docs = [{"_id": i, "pad": "x" * size} for i in range(count)]
    return encode_op_msg({"insert": "c", "$db": "d"}, request_id=1, sequences={"documents": docs})


@pytest.mark.parametrize("count, size", [(3, 10), (40, 100_000), (3, 1_500_000), (9, 400_000)])
def test_document_run_reads_like_a_list(count: int, size: int) -> None:
    expected = [{"_id": i, "pad": "x" * size} for i in range(count)]
    run = command_view(make_frame(big_insert(count, size))).sequences["documents"]
    assert len(run) == count and run == expected and expected == run
    assert list(run) == expected and list(run) == expected  # iterated twice
    assert run[0] == expected[0] and run[-1] == expected[-1] and run[1:3] == expected[1:3]
    assert run[::-2] == expected[::-2] and run != expected[:-1]
    with pytest.raises(IndexError):
        run[count]


def test_a_large_run_is_never_held_decoded() -> None:
    import tracemalloc

    message = big_insert(40, 500_000)  # 20 MB of documents
    view = command_view(make_frame(message))
    tracemalloc.start()
    try:
        seen = sum(len(doc["pad"]) for doc in view.sequences["documents"])
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert seen == 40 * 500_000
    assert peak < 4 * 1024 * 1024, f"peak {peak} bytes while iterating 20 MB of documents"
