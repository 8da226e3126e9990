"""What the relay sends of its own: error replies, rewritten commands, and the
one reply it reads (the upstream's answer to the handshake).

Error replies are ``{ok: 0.0, errmsg, code, codeName}`` with ``responseTo`` set
to the request's requestID, in the request's opcode family: OP_MSG, or OP_REPLY
for OP_QUERY / OP_GET_MORE requests. They never carry ``errorLabels`` (so no
``RetryableWriteError``): with the proxy's codes no driver retries a refusal.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any, Final

from scalyproxy.wire.command import CommandView, unwrap_query
from scalyproxy.wire.documents import Buffer, decode_document, encode_document
from scalyproxy.wire.errors import ProtocolError
from scalyproxy.wire.framer import Frame
from scalyproxy.wire.header import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HEADER_SIZE,
    HEADER_STRUCT,
    OP_COMPRESSED,
    OP_GET_MORE,
    OP_MSG,
    OP_QUERY,
    OP_REPLY,
    Header,
    op_name,
)
from scalyproxy.wire.op_compressed import (
    COMPRESSOR_NAMES,
    NEVER_COMPRESSED,
    SUPPORTED_COMPRESSORS,
    compress_message,
    decompress_message,
    may_compress,
)
from scalyproxy.wire.op_msg import FLAG_MORE_TO_COME, assemble_op_msg, encode_op_msg, parse_op_msg
from scalyproxy.wire.op_query import (
    REPLY_FLAG_QUERY_FAILURE,
    assemble,
    encode_op_reply,
    parse_op_query,
    parse_op_reply,
)

__all__ = [
    "COMPRESSOR_NAMES",
    "NEVER_COMPRESSED",
    "SUPPORTED_COMPRESSORS",
    "compress_message",
    "decode_reply_body",
    "decompress_message",
    "encode_op_reply",
    "error_body",
    "error_reply",
    "may_compress",
    "request_kind",
    "rewrite_command",
]

_LEGACY_REPLY_OPS: Final = frozenset({OP_QUERY, OP_GET_MORE})
_INT32_AT: Final = struct.Struct("<i").unpack_from


def error_body(*, code: int, code_name: str, errmsg: str) -> dict[str, Any]:
    """The command-error document MongoDB servers send (and nothing more). An errmsg
    quoting bytes that are not UTF-8 (a collection name, a key) shows them escaped."""
    if not errmsg.isascii():
        errmsg = errmsg.encode("utf-8", "backslashreplace").decode("utf-8")
    return {"ok": 0.0, "errmsg": errmsg, "code": code, "codeName": code_name}


#: The body section (kind byte and BSON) of each OP_MSG error reply made, by (code, codeName,
#: errmsg): a refusal repeats one of a few messages (the engine caches verdicts by shape), so the
#: document is encoded once. Bounded: messages can quote what clients send.
_ERROR_SECTIONS: dict[tuple[int, str, str], bytes] = {}
_ERROR_SECTIONS_MAX: Final = 1024


def _error_section(code: int, code_name: str, errmsg: str) -> bytes:
    key = (code, code_name, errmsg)
    section = _ERROR_SECTIONS.get(key)
    if section is None:
        section = b"\x00" + encode_document(error_body(code=code, code_name=code_name, errmsg=errmsg))
        if len(_ERROR_SECTIONS) < _ERROR_SECTIONS_MAX:
            _ERROR_SECTIONS[key] = section
    return section


def error_reply(
    request: CommandView | Header, *, code: int, code_name: str, errmsg: str, request_id: int
) -> bytes:
    """An error reply to ``request`` (a decoded command, or just the header of a
    message that could not be decoded).

    OP_MSG requests (and OP_COMPRESSED ones) get an OP_MSG reply. A legacy
    OP_QUERY command gets an OP_REPLY with the error document; an OP_QUERY or
    OP_GET_MORE known only by its header gets an OP_REPLY flagged QueryFailure
    whose document also carries ``$err`` (what legacy readers look at).
    """
    if isinstance(request, CommandView) and not request.legacy:
        return assemble_op_msg(0, _error_section(code, code_name, errmsg), request_id, request.request_id, False)
    body = error_body(code=code, code_name=code_name, errmsg=errmsg)
    if isinstance(request, CommandView):
        return encode_op_reply([body], request_id=request_id, response_to=request.request_id)
    if request.op_code in _LEGACY_REPLY_OPS:
        legacy = {"$err": errmsg, **body}
        return encode_op_reply(
            [legacy],
            request_id=request_id,
            response_to=request.request_id,
            flags=REPLY_FLAG_QUERY_FAILURE,
        )
    return encode_op_msg(body, request_id=request_id, response_to=request.request_id)


def request_kind(data: Buffer, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> tuple[int, bool]:
    """``(op_code, more_to_come)`` of a whole request frame that may not decode: the
    opcode it was sent as (the wrapped one of an OP_COMPRESSED, when its prefix is
    there) and whether it is an OP_MSG flagged moreToCome (its sender expects no
    reply). What the proxy needs to answer a request it cannot read. A flag it
    cannot read (an OP_MSG too short, a compressed one that does not decompress)
    counts as not set."""
    op_code = HEADER_STRUCT.unpack_from(data, 0)[3]
    if op_code == OP_COMPRESSED and len(data) >= HEADER_SIZE + 4:
        op_code = _INT32_AT(data, HEADER_SIZE)[0]
        if op_code == OP_MSG:
            try:
                data = decompress_message(data, max_message_size)
            except ProtocolError:
                return op_code, False
    if op_code != OP_MSG or len(data) < HEADER_SIZE + 4:
        return op_code, False
    return op_code, bool(_INT32_AT(data, HEADER_SIZE)[0] & FLAG_MORE_TO_COME)


def rewrite_command(
    view: CommandView, new_body: Mapping[str, Any], *, request_id: int, checksum: bool = False
) -> bytes:
    """The view's message with its command document replaced by ``new_body``.

    OP_MSG: same flags (checksumPresent dropped unless ``checksum=True``, which
    writes a fresh CRC-32C), same sections in the same order, kind-1 sections
    copied byte for byte. OP_QUERY: same flags, namespace, numberToSkip,
    numberToReturn and returnFieldsSelector; a ``$query`` wrapper is kept with
    ``new_body`` inside it. The result is never compressed, even if the request
    was. ``responseTo`` is kept.
    """
    message = view.message
    response_to = HEADER_STRUCT.unpack_from(message, 0)[2]
    if view.op_code == OP_MSG:
        return _rewrite_op_msg(message, new_body, request_id, response_to, checksum)
    return _rewrite_op_query(message, new_body, request_id, response_to)


def _rewrite_op_msg(
    message: Buffer, new_body: Mapping[str, Any], request_id: int, response_to: int, checksum: bool
) -> bytes:
    layout = parse_op_msg(message)
    view = memoryview(message)
    parts: list[bytes | memoryview] = []
    for start, stop in layout.sections:
        if start + 1 == layout.body[0]:
            parts += [b"\x00", encode_document(new_body)]
        else:
            parts.append(view[start:stop])
    return assemble_op_msg(layout.flags, b"".join(parts), request_id, response_to, checksum)


def _rewrite_op_query(
    message: Buffer, new_body: Mapping[str, Any], request_id: int, response_to: int
) -> bytes:
    layout = parse_op_query(message)
    view = memoryview(message)
    start, stop = layout.query
    query: Mapping[str, Any] = new_body
    original = decode_document(view[start:stop], offset=start, what="the OP_QUERY query")
    if unwrap_query(original) is not original:
        query = {**original, "$query": new_body}
    tail = view[stop:]  # the returnFieldsSelector, if any
    payload = b"".join([view[HEADER_SIZE:start], encode_document(query), tail])
    return assemble(OP_QUERY, payload, request_id, response_to)


def decode_reply_body(
    frame: Frame, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> dict[str, Any]:
    """The first document of an OP_MSG or OP_REPLY reply (decompressing OP_COMPRESSED first)."""
    data = frame.data
    op_code = frame.header.op_code
    if op_code == OP_COMPRESSED:
        data = decompress_message(frame, max_message_size)
        op_code = HEADER_STRUCT.unpack_from(data, 0)[3]
    if op_code == OP_MSG:
        layout = parse_op_msg(data)
        start, stop = layout.body
        return decode_document(memoryview(data)[start:stop], offset=start, what="the reply body")
    if op_code == OP_REPLY:
        documents = parse_op_reply(data).documents
        if documents:
            return documents[0]
        raise ProtocolError(
            "the OP_REPLY holds no document", kind="bad_section", offset=HEADER_SIZE + 16
        )
    raise ProtocolError(
        f"{op_name(op_code)} is not a reply",
        kind="unsupported_opcode",
        offset=12,
        field="opCode",
        op_code=op_code,
    )
