"""The legacy pair used by old handshakes: OP_QUERY (2004) and OP_REPLY (1).

    OP_QUERY: header | int32 flags | cstring fullCollectionName | int32 numberToSkip
              | int32 numberToReturn | document query | [document returnFieldsSelector]
    OP_REPLY: header | int32 responseFlags | int64 cursorID | int32 startingFrom
              | int32 numberReturned | documents...

The proxy reads OP_QUERY only for ``<db>.$cmd`` commands (the handshake's
hello / isMaster); everything else is refused by the relay.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from scalyproxy.wire.documents import Buffer, decode_document, decode_sequence, encode_document
from scalyproxy.wire.errors import ProtocolError
from scalyproxy.wire.framer import Frame
from scalyproxy.wire.header import (
    HEADER_SIZE,
    HEADER_STRUCT,
    OP_QUERY,
    OP_REPLY,
    op_name,
    pack_header,
)

#: OP_QUERY flag bits.
QUERY_FLAG_TAILABLE: Final = 1 << 1
QUERY_FLAG_SECONDARY_OK: Final = 1 << 2
QUERY_FLAG_EXHAUST: Final = 1 << 6
#: OP_REPLY responseFlags bits.
REPLY_FLAG_CURSOR_NOT_FOUND: Final = 1 << 0
REPLY_FLAG_QUERY_FAILURE: Final = 1 << 1
REPLY_FLAG_AWAIT_CAPABLE: Final = 1 << 3

_INT32: Final = struct.Struct("<i")
_SKIP_RETURN: Final = struct.Struct("<ii")
_REPLY_PREFIX: Final = struct.Struct("<iqii")  # after the header: 20 bytes
_int32_at = _INT32.unpack_from

Span = tuple[int, int]


class QueryLayout(NamedTuple):
    flags: int
    namespace: str
    number_to_skip: int
    number_to_return: int
    query: Span
    selector: Span | None


class OpQuery(NamedTuple):
    flags: int
    namespace: str
    number_to_skip: int
    number_to_return: int
    query: dict[str, Any]
    selector: dict[str, Any] | None


class OpReply(NamedTuple):
    flags: int
    cursor_id: int
    starting_from: int
    documents: list[dict[str, Any]]


def parse_op_query(data: Buffer) -> QueryLayout:
    """Find the fields of a whole OP_QUERY message (no BSON decoded)."""
    _check_opcode(data, OP_QUERY)
    end = len(data)
    if end < HEADER_SIZE + 4 + 1 + 8 + 5:
        raise _error(f"an OP_QUERY of {end} bytes is too short", HEADER_SIZE)
    flags = _int32_at(data, HEADER_SIZE)[0]
    ns_start = HEADER_SIZE + 4
    ns_end = bytes(data[ns_start : min(end, ns_start + 1024)]).find(0)
    if ns_end < 0:
        raise _error(
            "fullCollectionName has no terminating NUL within 1024 bytes",
            ns_start,
            "fullCollectionName",
        )
    try:
        namespace = bytes(data[ns_start : ns_start + ns_end]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _error(
            f"fullCollectionName is not UTF-8 ({exc})", ns_start, "fullCollectionName"
        ) from exc
    pos = ns_start + ns_end + 1
    if end - pos < 8:
        raise _error("numberToSkip/numberToReturn run past the end", pos)
    skip, limit = _SKIP_RETURN.unpack_from(data, pos)
    query = _document_span(data, pos + 8, end, "query")
    selector = (
        _document_span(data, query[1], end, "returnFieldsSelector") if query[1] < end else None
    )
    if selector is not None and selector[1] != end:
        raise _error(f"{end - selector[1]} bytes follow the returnFieldsSelector", selector[1])
    return QueryLayout(flags, namespace, skip, limit, query, selector)


def decode_op_query(data: Buffer) -> OpQuery:
    """Decode a whole OP_QUERY, strictly."""
    layout = parse_op_query(data)
    view = memoryview(data)
    query = decode_document(
        view[slice(*layout.query)], offset=layout.query[0], what="the OP_QUERY query"
    )
    selector = None
    if layout.selector is not None:
        start, stop = layout.selector
        selector = decode_document(view[start:stop], offset=start, what="the returnFieldsSelector")
    return OpQuery(
        layout.flags,
        layout.namespace,
        layout.number_to_skip,
        layout.number_to_return,
        query,
        selector,
    )


def encode_op_query(
    namespace: str,
    query: Mapping[str, Any],
    *,
    request_id: int,
    response_to: int = 0,
    flags: int = 0,
    number_to_skip: int = 0,
    number_to_return: int = -1,
    selector: Mapping[str, Any] | None = None,
) -> bytes:
    """An OP_QUERY message (for commands: namespace ``<db>.$cmd``, numberToReturn -1)."""
    ns = namespace.encode("utf-8")
    if b"\x00" in ns:
        raise ValueError(f"a namespace cannot contain NUL: {namespace!r}")
    parts = [_INT32.pack(flags), ns, b"\x00", _SKIP_RETURN.pack(number_to_skip, number_to_return)]
    parts.append(encode_document(query))
    if selector is not None:
        parts.append(encode_document(selector))
    return assemble(OP_QUERY, b"".join(parts), request_id, response_to)


def assemble(op_code: int, payload: bytes, request_id: int, response_to: int) -> bytes:
    return pack_header(HEADER_SIZE + len(payload), request_id, response_to, op_code) + payload


def encode_op_reply(
    documents: Sequence[Mapping[str, Any]],
    *,
    request_id: int,
    response_to: int,
    flags: int = 0,
    cursor_id: int = 0,
    starting_from: int = 0,
) -> bytes:
    """An OP_REPLY carrying ``documents``."""
    encoded = [encode_document(doc) for doc in documents]
    prefix = _REPLY_PREFIX.pack(flags, cursor_id, starting_from, len(encoded))
    return assemble(OP_REPLY, b"".join([prefix, *encoded]), request_id, response_to)


def parse_op_reply(frame: Frame | Buffer) -> OpReply:
    """Decode a whole OP_REPLY, strictly (numberReturned must match the documents)."""
    data = frame.data if isinstance(frame, Frame) else frame
    _check_opcode(data, OP_REPLY)
    start = HEADER_SIZE + _REPLY_PREFIX.size
    if len(data) < start:
        raise _error(f"an OP_REPLY needs at least {start} bytes, got {len(data)}", HEADER_SIZE)
    flags, cursor_id, starting_from, returned = _REPLY_PREFIX.unpack_from(data, HEADER_SIZE)
    documents = decode_sequence(
        memoryview(data)[start:], offset=start, what="the OP_REPLY documents"
    )
    if returned != len(documents):
        raise _error(
            f"numberReturned is {returned} but {len(documents)} documents follow", HEADER_SIZE + 16
        )
    return OpReply(flags, cursor_id, starting_from, documents)


def decode_op_reply(frame: Frame | Buffer) -> list[dict[str, Any]]:
    """The documents of an OP_REPLY."""
    return parse_op_reply(frame).documents


def _check_opcode(data: Buffer, expected: int) -> None:
    if len(data) < HEADER_SIZE:
        raise _error(f"a message needs at least 16 bytes, got {len(data)}", 0)
    length, _rid, _rto, op_code = HEADER_STRUCT.unpack_from(data, 0)
    if op_code != expected:
        raise ProtocolError(
            f"expected {op_name(expected)}, got {op_name(op_code)}",
            kind="bad_header",
            offset=12,
            field="opCode",
        )
    if length != len(data):
        raise ProtocolError(
            f"messageLength {length} but the message has {len(data)} bytes",
            kind="bad_length",
            offset=0,
            field="messageLength",
        )


def _document_span(data: Buffer, start: int, end: int, what: str) -> Span:
    if end - start < 5:
        raise _error(f"the {what} document runs past the end of the message", start, what)
    size = _int32_at(data, start)[0]
    if size < 5 or size > end - start:
        raise _error(
            f"the {what} document ({size} bytes) runs past the end of the message", start, what
        )
    return start, start + size


def _error(reason: str, offset: int, field: str | None = None) -> ProtocolError:
    return ProtocolError(reason, kind="bad_section", offset=offset, field=field)
