"""The 16-byte standard message header and the opcodes.

    struct MsgHeader { int32 messageLength; int32 requestID; int32 responseTo; int32 opCode; }

All integers on the wire are little-endian.
"""

from __future__ import annotations

import struct
from typing import Final, NamedTuple

from scalyproxy.wire.errors import ProtocolError

OP_REPLY: Final = 1
OP_UPDATE: Final = 2001
OP_INSERT: Final = 2002
OP_QUERY: Final = 2004
OP_GET_MORE: Final = 2005
OP_DELETE: Final = 2006
OP_KILL_CURSORS: Final = 2007
OP_COMMAND: Final = 2010
OP_COMMAND_REPLY: Final = 2011
OP_COMPRESSED: Final = 2012
OP_MSG: Final = 2013

#: Opcodes the proxy refuses (legacy writes, cursors and the old OP_COMMAND pair).
LEGACY_OPCODES: Final = frozenset(
    {OP_UPDATE, OP_INSERT, OP_GET_MORE, OP_DELETE, OP_KILL_CURSORS, OP_COMMAND, OP_COMMAND_REPLY}
)

OP_NAMES: Final[dict[int, str]] = {
    OP_REPLY: "OP_REPLY",
    OP_UPDATE: "OP_UPDATE",
    OP_INSERT: "OP_INSERT",
    OP_QUERY: "OP_QUERY",
    OP_GET_MORE: "OP_GET_MORE",
    OP_DELETE: "OP_DELETE",
    OP_KILL_CURSORS: "OP_KILL_CURSORS",
    OP_COMMAND: "OP_COMMAND",
    OP_COMMAND_REPLY: "OP_COMMAND_REPLY",
    OP_COMPRESSED: "OP_COMPRESSED",
    OP_MSG: "OP_MSG",
}

HEADER_SIZE: Final = 16
#: The server's default maxMessageSizeBytes; the proxy's default frame limit.
DEFAULT_MAX_MESSAGE_SIZE: Final = 48_000_000
#: Largest value a messageLength field can hold.
MAX_INT32: Final = 2**31 - 1

HEADER_STRUCT: Final = struct.Struct("<iiii")
_unpack_header = HEADER_STRUCT.unpack_from
_tuple_new = tuple.__new__


class Header(NamedTuple):
    length: int
    request_id: int
    response_to: int
    op_code: int


def op_name(op_code: int) -> str:
    """``OP_MSG`` for 2013, ``opCode 1234`` for an unknown one."""
    return OP_NAMES.get(op_code, f"opCode {op_code}")


def parse_header(buf: bytes | bytearray | memoryview, offset: int = 0) -> Header:
    """Read the header at ``offset``; raise ProtocolError if fewer than 16 bytes are there."""
    if len(buf) - offset < HEADER_SIZE or offset < 0:
        raise ProtocolError(
            f"a message header needs 16 bytes, {max(len(buf) - offset, 0)} available",
            kind="bad_header",
            offset=offset,
            fatal=True,
        )
    return _tuple_new(Header, _unpack_header(buf, offset))


def check_length(length: int, max_message_size: int, offset: int = 0) -> None:
    """Raise a fatal ProtocolError unless 16 <= length <= max_message_size."""
    if length < HEADER_SIZE or length > max_message_size:
        raise ProtocolError(
            f"messageLength {length} outside the allowed 16..{max_message_size}",
            kind="bad_length",
            offset=offset,
            field="messageLength",
            fatal=True,
        )


def pack_header(length: int, request_id: int, response_to: int, op_code: int) -> bytes:
    """The 16 header bytes (request ids are taken modulo 2**32, as signed int32)."""
    return HEADER_STRUCT.pack(length, _int32(request_id), _int32(response_to), op_code)


def _int32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - 0x100000000 if value >= 0x80000000 else value
