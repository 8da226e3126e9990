"""Strict BSON on top of pymongo's C codec.

``decode_document`` and ``decode_sequence`` return plain dicts and refuse:

* everything the bson-corpus lists under ``decodeErrors`` (pymongo's C decoder
  does that when called with :data:`DECODE_OPTIONS`: strict UTF-8, no
  ``RawBSONDocument`` laziness), and
* a key repeated within one document, at any depth. A Python dict keeps the
  last of two equal keys while the server reads both (a filter ``{a: 1, a: 2}``
  is two conditions to it), so one message would be read two ways.

Duplicate detection: with the C extension ``scalyproxy._scan`` (built by
``pip install``), one C pass over the bytes proves the document strictly valid
and free of repeated keys before pymongo decodes it. Without it (no compiler),
the decoded document is re-encoded (one C call) and
compared with the original bytes. Equal bytes prove the original had no
repeated key (the re-encoding comes from a dict). Different bytes happen for a
repeated key, and for a few legal but non-canonical encodings (deprecated
symbol/undefined/DBPointer types, array keys other than "0", "1", ...); only
then is the slower byte walker run, and its answer is final.
"""

from __future__ import annotations

import struct
from typing import Any, Final

from bson import (  # the C implementations when pymongo's extension is built
    _array_of_documents_to_buffer,
    _bson_to_dict,
    _decode_all,
    _dict_to_bson,
)
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions, DatetimeConversion

from scalyproxy.wire.errors import ProtocolError

try:
    from scalyproxy import _scan
except ImportError:  # pragma: no cover - built by `pip install` wherever there is a C compiler
    _scan = None  # type: ignore[assignment]

#: Whether the C scanner is in use (the pure-Python path is kept for machines without it).
HAVE_SCAN: Final = _scan is not None

Buffer = bytes | bytearray | memoryview

#: How every document the proxy reads is decoded: plain dicts, naive UTC
#: datetimes, out-of-range dates as DatetimeMS (never refused), UUIDs as Binary,
#: invalid UTF-8 refused.
DECODE_OPTIONS: Final[CodecOptions[dict[str, Any]]] = CodecOptions(
    document_class=dict,
    tz_aware=False,
    uuid_representation=UuidRepresentation.UNSPECIFIED,
    unicode_decode_error_handler="strict",
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)


class _EncodeOnly(dict):  # type: ignore[type-arg]
    """A document class carrying ``_type_marker``: the C encoder looks that
    attribute up on the options' document class, and finding it costs less than
    the AttributeError it raises for plain ``dict`` (measured: about a quarter
    of a small encode). Encoding never builds instances of it."""

    _type_marker = None


#: How the codec encodes (same output as DECODE_OPTIONS would give, plus
#: ``uuid.UUID`` values written as standard subtype-4 binaries).
ENCODE_OPTIONS: Final[CodecOptions[Any]] = CodecOptions(
    document_class=_EncodeOnly,
    tz_aware=False,
    uuid_representation=UuidRepresentation.STANDARD,
    unicode_decode_error_handler="strict",
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)

_INT32: Final = struct.Struct("<i")
_int32_at = _INT32.unpack_from
_ARRAY_START: Final = 6  # int32 length, type byte 0x04, empty key NUL


def encode_document(doc: Any) -> bytes:
    """BSON bytes of a mapping, keys in the mapping's order (``_id`` is not moved)."""
    return _dict_to_bson(doc, False, ENCODE_OPTIONS, False)


def decode_document(buf: Buffer, *, offset: int = 0, what: str = "document") -> dict[str, Any]:
    """One BSON document (``buf`` is exactly its bytes), strictly validated.

    ``offset`` is where ``buf`` starts in its message, for error messages.
    """
    if _scan is not None:
        answer = _scan.scan_document(buf)
        if answer == "duplicate":
            refuse_duplicates(buf, offset=offset, what=what)  # raises, naming the key
            raise _repeated_key(what, offset)
        if answer != "too_deep":  # too deep for the scanner: the Python check below decides
            doc = _decode_one(buf, offset, what)
            _fail_closed(answer, f"{what} is not valid BSON", offset)
            return doc
    doc = _decode_one(buf, offset, what)
    try:
        same = _dict_to_bson(doc, False, ENCODE_OPTIONS, False) == buf
    except Exception:
        same = False
    if not same:
        refuse_duplicates(buf, offset=offset, what=what)
    return doc


def decode_sequence(
    buf: Buffer, *, offset: int = 0, what: str = "sequence"
) -> list[dict[str, Any]]:
    """A run of BSON documents filling ``buf`` exactly (an OP_MSG kind-1 payload)."""
    if not len(buf):
        return []
    if _scan is not None:
        answer, _count = _scan.scan_run(buf)
        if answer == "duplicate":
            _refuse_duplicates_in_run(buf, offset, what)  # raises, naming the key
            raise _repeated_key(what, offset)
        if answer != "too_deep":  # too deep for the scanner: the Python check below decides
            docs = decode_run(buf, offset=offset, what=what)
            _fail_closed(answer, f"{what} holds invalid BSON", offset)
            return docs
    docs = decode_run(buf, offset=offset, what=what)
    try:
        wrapped = memoryview(_dict_to_bson({"": docs}, False, ENCODE_OPTIONS, False))
        same = _array_of_documents_to_buffer(wrapped[_ARRAY_START:-1]) == buf
    except Exception:
        same = False
    if not same:
        _refuse_duplicates_in_run(buf, offset, what)
    return docs


def _decode_one(buf: Buffer, offset: int, what: str) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = _bson_to_dict(buf, DECODE_OPTIONS)
    except Exception as exc:  # the C decoder raises InvalidBSON, and more on odd input
        raise ProtocolError(
            f"{what} is not valid BSON: {exc}", kind="bad_bson", offset=offset
        ) from exc
    return doc


def decode_run(buf: Buffer, *, offset: int = 0, what: str = "sequence") -> list[dict[str, Any]]:
    """Decode a run of documents with pymongo's strict options, without the
    repeated-key check: for runs the C scanner has proven free of repeated keys
    (or that the caller checks next)."""
    try:
        docs: list[dict[str, Any]] = _decode_all(buf, DECODE_OPTIONS)
    except Exception as exc:
        raise ProtocolError(
            f"{what} holds invalid BSON: {exc}", kind="bad_bson", offset=offset
        ) from exc
    return docs


def _fail_closed(answer: str, reason: str, offset: int) -> None:
    """pymongo decoded what the scanner judged: refuse all the same unless it said "ok"."""
    if answer != "ok":
        raise ProtocolError(reason, kind="bad_bson", offset=offset)


def _repeated_key(what: str, offset: int) -> ProtocolError:
    # only if the walker and the scanner disagreed about a key (the scanner's answer stands)
    return ProtocolError(f"{what} repeats a key", kind="duplicate_key", offset=offset)


def refuse_duplicates(buf: Buffer, *, offset: int = 0, what: str = "document") -> None:
    """Raise ProtocolError(kind="duplicate_key") naming the first repeated key's path."""
    found = find_duplicate_key(bytes(buf))
    if found is not None:
        path, at = found
        raise ProtocolError(
            f"{what} has the key {path!r} twice; the proxy and the server would read it differently",
            kind="duplicate_key",
            offset=offset + at,
            field=path,
        )


def _refuse_duplicates_in_run(buf: Buffer, offset: int, what: str) -> None:
    data = bytes(buf)
    pos = index = 0
    while pos < len(data):
        size = _int32_at(data, pos)[0]
        refuse_duplicates(data[pos : pos + size], offset=offset + pos, what=f"{what}[{index}]")
        pos += size
        index += 1


# -- the byte walker --------------------------------------------------------------

#: Value sizes of the fixed-width BSON types.
_FIXED_SIZE: Final[dict[int, int]] = {
    0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0,
    0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16, 0x7F: 0, 0xFF: 0,
}  # fmt: skip
_STRING_LIKE: Final = frozenset({0x02, 0x0D, 0x0E})  # int32 length + bytes
_DOCUMENT: Final = 0x03
_ARRAY: Final = 0x04


def find_duplicate_key(doc: bytes) -> tuple[str, int] | None:
    """The dotted path and byte offset of the first key that a document (or any
    document nested in it, in arrays or code-with-scope too) repeats; None if
    there is none. ``doc`` must already be valid BSON. Array element names are
    not compared: arrays are read by position, by pymongo and by the server.
    """
    try:
        return _walk(doc)
    except (IndexError, ValueError, struct.error) as exc:
        raise ProtocolError(f"malformed BSON: {exc}", kind="bad_bson") from exc


def _walk(doc: bytes) -> tuple[str, int] | None:
    stack: list[tuple[int, str, bool]] = [(0, "", False)]
    while stack:
        start, prefix, is_array = stack.pop()
        found = _walk_one(doc, start, prefix, is_array, stack)
        if found is not None:
            return found
    return None


def _walk_one(
    doc: bytes, start: int, prefix: str, is_array: bool, stack: list[tuple[int, str, bool]]
) -> tuple[str, int] | None:
    end = start + _int32_at(doc, start)[0] - 1
    seen: set[bytes] = set()
    pos = start + 4
    while pos < end:
        kind = doc[pos]
        key_end = doc.index(0, pos + 1)
        key = doc[pos + 1 : key_end]
        name = prefix + key.decode("utf-8", "replace")
        if not is_array:
            if key in seen:
                return name, pos
            seen.add(key)
        value = key_end + 1
        pos = value + _value_size(doc, kind, value, name, stack)
    return None


def _value_size(
    doc: bytes, kind: int, at: int, name: str, stack: list[tuple[int, str, bool]]
) -> int:
    size = _FIXED_SIZE.get(kind)
    if size is not None:
        return size
    if kind == _DOCUMENT or kind == _ARRAY:
        stack.append((at, name + ".", kind == _ARRAY))
        return int(_int32_at(doc, at)[0])
    if kind in _STRING_LIKE:
        return 4 + int(_int32_at(doc, at)[0])
    if kind == 0x05:  # binary: length, subtype, bytes
        return 5 + int(_int32_at(doc, at)[0])
    if kind == 0x0B:  # regex: two cstrings
        return doc.index(0, doc.index(0, at) + 1) + 1 - at
    if kind == 0x0C:  # DBPointer: string, ObjectId
        return 4 + int(_int32_at(doc, at)[0]) + 12
    if kind == 0x0F:  # code with scope: total length, string, scope document
        scope = at + 8 + int(_int32_at(doc, at + 4)[0])
        stack.append((scope, name + ".$scope.", False))
        return int(_int32_at(doc, at)[0])
    raise ValueError(f"unknown BSON type 0x{kind:02x} at byte {at - 1}")


def pick_fields(run: Buffer, names: frozenset[bytes]) -> list[dict[str, Any]]:
    """For each document of a run (already scanned: valid BSON), its top-level fields named
    in ``names``, decoded as :func:`decode_document` would; the other fields are stepped
    over without decoding (the value sketches read a few fields of large documents)."""
    buf = bytes(run)
    out: list[dict[str, Any]] = []
    start, total = 0, len(buf)
    try:
        while start < total:
            end = start + _int32_at(buf, start)[0]
            out.append(_pick(buf, start, end - 1, names))
            start = end
    except (IndexError, ValueError, struct.error) as exc:
        raise ProtocolError(f"malformed BSON: {exc}", kind="bad_bson") from exc
    return out


def _pick(buf: bytes, pos: int, end: int, names: frozenset[bytes]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    pos += 4
    ignored: list[tuple[int, str, bool]] = []
    while pos < end:
        kind = buf[pos]
        key_end = buf.index(0, pos + 1)
        value = key_end + 1
        size = _FIXED_SIZE.get(kind)
        if size is None:
            size = _value_size(buf, kind, value, "", ignored)
            ignored.clear()
        key = buf[pos + 1 : key_end]
        if key in names:
            if kind == 0x02:
                found[key.decode()] = buf[value + 4 : value + size - 1].decode("utf-8", "surrogateescape")
            elif kind == 0x10:
                found[key.decode()] = _int32_at(buf, value)[0]
            else:  # decoded alone: a one-field document of it
                one = bytes([kind]) + b"k\x00" + buf[value : value + size]
                found[key.decode()] = decode_document(_INT32.pack(len(one) + 5) + one + b"\x00")["k"]
        pos = value + size
    return found
