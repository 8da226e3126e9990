"""OP_MSG (opCode 2013): layout parsing, full decoding, encoding.

    header | uint32 flagBits | sections... | [uint32 CRC-32C checksum]
    section kind 0: one BSON document (the body)
    section kind 1: int32 size | cstring identifier | BSON documents...

Rules enforced (those of the spec and of the server's own parser tests):
unknown required flag bits (2-15) refused, optional bits (16-31) ignored; a
present checksum verified; exactly one kind-0 section; kind-1 identifiers
unique, NUL-terminated, valid UTF-8 and not naming a body field (also as a
dotted path); every size checked against what remains; an unknown section kind
refused. None of these is fatal: the frame's length was sound, so the relay
answers the request and reads on (docs/wire.md). ``parse_op_msg`` only finds the sections (no BSON decoded), so the
caller decides what to decode.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from scalyproxy.wire.ambiguous import LenientDocument
from scalyproxy.wire.documents import Buffer, decode_document, decode_sequence, encode_document
from scalyproxy.wire.errors import ProtocolError
from scalyproxy.wire.header import HEADER_SIZE, OP_MSG, pack_header

FLAG_CHECKSUM_PRESENT: Final = 1 << 0
FLAG_MORE_TO_COME: Final = 1 << 1
FLAG_EXHAUST_ALLOWED: Final = 1 << 16
#: Bits 0-15 are "required": a receiver must refuse the ones it does not know.
REQUIRED_FLAGS_MASK: Final = 0xFFFF
KNOWN_REQUIRED_FLAGS: Final = FLAG_CHECKSUM_PRESENT | FLAG_MORE_TO_COME

SECTION_BODY: Final = 0
SECTION_SEQUENCE: Final = 1

_UINT32: Final = struct.Struct("<I")
_INT32: Final = struct.Struct("<i")
_int32_at = _INT32.unpack_from
_FLAGS_AT: Final = HEADER_SIZE
_SECTIONS_AT: Final = HEADER_SIZE + 4

Span = tuple[int, int]


class MsgLayout(NamedTuple):
    """Where things are in an OP_MSG (offsets into the whole message)."""

    flags: int
    body: Span  # the kind-0 document
    sequences: dict[str, Span]  # identifier -> the documents of its kind-1 section
    sections: list[Span]  # every section, kind byte included, in wire order
    checksum: bool


class OpMsg(NamedTuple):
    """A fully decoded OP_MSG."""

    flags: int
    body: dict[str, Any]
    sequences: dict[str, list[dict[str, Any]]]


def parse_op_msg(data: Buffer) -> MsgLayout:
    """Check flags, checksum and section layout of a whole OP_MSG message."""
    length = len(data)
    if length < _SECTIONS_AT:
        raise ProtocolError(
            f"the flagBits field needs 4 bytes, the message has {max(length - HEADER_SIZE, 0)}",
            kind="bad_flags",
            offset=_FLAGS_AT,
            field="flagBits",
        )
    declared = _int32_at(data, 0)[0]
    if declared != length:
        raise ProtocolError(
            f"messageLength says {declared} bytes, the message has {length}",
            kind="bad_length",
            offset=0,
            field="messageLength",
        )
    flags = _UINT32.unpack_from(data, _FLAGS_AT)[0]
    check_flags(flags)
    end = length
    if flags & FLAG_CHECKSUM_PRESENT:
        end = _verify_checksum(data)
    body, sequences, sections = _parse_sections(data, end)
    return MsgLayout(flags, body, sequences, sections, bool(flags & FLAG_CHECKSUM_PRESENT))


def _crc32c(data: Buffer) -> int:
    # imported on first use: the crc32c package loads importlib.metadata (and through
    # it the socket module), which the pure policy layer, importing this codec, must not
    from crc32c import crc32c

    return int(crc32c(data))


def check_flags(flags: int) -> None:
    unknown = flags & REQUIRED_FLAGS_MASK & ~KNOWN_REQUIRED_FLAGS
    if unknown:
        bits = ", ".join(str(bit) for bit in range(16) if unknown >> bit & 1)
        raise ProtocolError(
            f"unknown required OP_MSG flag bit(s) {bits} set (flagBits 0x{flags:08x})",
            kind="bad_flags",
            offset=_FLAGS_AT,
            field="flagBits",
        )


def _verify_checksum(data: Buffer) -> int:
    end = len(data) - 4
    if end < _SECTIONS_AT:
        raise ProtocolError(
            "checksumPresent is set but the message has no room for the checksum",
            kind="bad_checksum",
            offset=_SECTIONS_AT,
            field="checksum",
        )
    expected = _UINT32.unpack_from(data, end)[0]
    actual = _crc32c(memoryview(data)[:end])
    if actual != expected:
        raise ProtocolError(
            f"CRC-32C checksum mismatch: message says 0x{expected:08x}, bytes give 0x{actual:08x}",
            kind="bad_checksum",
            offset=end,
            field="checksum",
        )
    return end


def _parse_sections(data: Buffer, end: int) -> tuple[Span, dict[str, Span], list[Span]]:
    body: Span | None = None
    sequences: dict[str, Span] = {}
    sections: list[Span] = []
    pos = _SECTIONS_AT
    while pos < end:
        kind = data[pos]
        if kind == SECTION_BODY:
            if body is not None:
                raise _section_error("a second kind-0 (body) section", pos)
            body = _document_span(data, pos + 1, end, "the body section")
            stop = body[1]
        elif kind == SECTION_SEQUENCE:
            ident, docs = _sequence_span(data, pos + 1, end)
            if ident in sequences:
                raise _section_error(f"a second kind-1 section named {ident!r}", pos, ident)
            sequences[ident] = docs
            stop = docs[1]
        else:
            raise ProtocolError(
                f"unknown OP_MSG section kind {kind}", kind="bad_section", offset=pos
            )
        sections.append((pos, stop))
        pos = stop
    if body is None:
        raise _section_error("no kind-0 (body) section", pos)
    return body, sequences, sections


def _document_span(data: Buffer, start: int, end: int, what: str) -> Span:
    if end - start < 5:
        raise _section_error(f"{what} runs past the end of the message", start)
    size = _int32_at(data, start)[0]
    if size < 5 or size > end - start:
        raise _section_error(
            f"{what} (document of {size} bytes) runs past the end of the message", start
        )
    return start, start + size


def _sequence_span(data: Buffer, start: int, end: int) -> tuple[str, Span]:
    if end - start < 4:
        raise _section_error("a kind-1 section runs past the end of the message", start)
    size = _int32_at(data, start)[0]
    if size < 5 or size > end - start:
        raise _section_error(
            f"a kind-1 section of {size} bytes runs past the end of the message", start
        )
    stop = start + size
    nul = find_nul(data, start + 4, stop)
    if nul < 0:
        raise _section_error("a kind-1 section identifier has no terminating NUL", start + 4)
    try:
        ident = bytes(data[start + 4 : nul]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _section_error(
            f"a kind-1 section identifier is not UTF-8 ({exc})", start + 4
        ) from exc
    return ident, (nul + 1, stop)


def find_nul(data: Buffer, start: int, stop: int) -> int:
    """Index of the first NUL byte in data[start:stop], or -1."""
    if isinstance(data, memoryview):
        step = 256
        for window in range(start, stop, step):
            found = bytes(data[window : min(window + step, stop)]).find(0)
            if found >= 0:
                return window + found
        return -1
    return data.find(0, start, stop)


def _section_error(reason: str, offset: int, field: str | None = None) -> ProtocolError:
    return ProtocolError(reason, kind="bad_section", offset=offset, field=field)


def check_sequence_names(body: Mapping[str, Any], names: Sequence[str] | Mapping[str, Any]) -> None:
    """Refuse a kind-1 identifier that also names a body field (``a.b`` = body.a.b)."""
    for name in names:
        node: Any = body
        for part in name.split("."):
            fields = node.unchecked() if isinstance(node, LenientDocument) else node  # doubtful keys count
            if not (type(fields) is dict or isinstance(fields, Mapping)) or part not in fields:
                break
            node = fields[part]
        else:
            raise ProtocolError(
                f"kind-1 section {name!r} collides with a field of the body",
                kind="bad_section",
                field=name,
            )


def decode_op_msg(data: Buffer) -> OpMsg:
    """Decode every section of an OP_MSG (body and all sequences), strictly."""
    layout = parse_op_msg(data)
    view = memoryview(data)
    start, stop = layout.body
    body = decode_document(view[start:stop], offset=start, what="the OP_MSG body")
    check_sequence_names(body, layout.sequences)
    sequences = {
        name: decode_sequence(view[a:b], offset=a, what=f"kind-1 section {name!r}")
        for name, (a, b) in layout.sequences.items()
    }
    return OpMsg(layout.flags, body, sequences)


def encode_op_msg(
    body: Mapping[str, Any],
    *,
    request_id: int,
    response_to: int = 0,
    flags: int = 0,
    sequences: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    checksum: bool = False,
) -> bytes:
    """An OP_MSG: the body section first, then one kind-1 section per sequence.

    ``checksumPresent`` in ``flags`` is ignored; ``checksum=True`` sets it and
    appends the CRC-32C.
    """
    sections = [b"\x00", encode_document(body)]
    for name, docs in (sequences or {}).items():
        sections.append(encode_sequence_section(name, [encode_document(doc) for doc in docs]))
    return assemble_op_msg(flags, b"".join(sections), request_id, response_to, checksum)


def encode_sequence_section(name: str, docs: Sequence[Buffer]) -> bytes:
    """A kind-1 section (kind byte included) from already-encoded documents."""
    ident = name.encode("utf-8")
    if b"\x00" in ident:
        raise ValueError(f"a kind-1 section identifier cannot contain NUL: {name!r}")
    size = 4 + len(ident) + 1 + sum(len(doc) for doc in docs)
    return b"".join([b"\x01", _INT32.pack(size), ident, b"\x00", *docs])


def assemble_op_msg(
    flags: int, sections: bytes, request_id: int, response_to: int, checksum: bool
) -> bytes:
    """Header + flagBits + the given section bytes (+ checksum)."""
    flags = flags & ~FLAG_CHECKSUM_PRESENT & 0xFFFFFFFF
    if checksum:
        flags |= FLAG_CHECKSUM_PRESENT
    length = _SECTIONS_AT + len(sections) + (4 if checksum else 0)
    message = b"".join(
        [pack_header(length, request_id, response_to, OP_MSG), _UINT32.pack(flags), sections]
    )
    if checksum:
        message += _UINT32.pack(_crc32c(message))
    return message
