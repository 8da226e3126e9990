"""OP_COMPRESSED (opCode 2012): wrap and unwrap a whole message.

    header | int32 originalOpcode | int32 uncompressedSize | uint8 compressorId | compressed bytes

``uncompressedSize`` counts the wrapped message without its 16-byte header.
Decompression checks, before any output buffer is sized, that the original
message (16 + uncompressedSize bytes) fits ``max_message_size`` and that the
size the compressed stream announces (snappy, zstd) matches; the output must
then be exactly ``uncompressedSize`` bytes. Compressors: 0 noop, 1 snappy
(python-snappy), 2 zlib, 3 zstd (zstandard).
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

import snappy
import zstandard

from scalyproxy.wire.documents import Buffer
from scalyproxy.wire.errors import ProtocolError
from scalyproxy.wire.framer import Frame
from scalyproxy.wire.header import (
    HEADER_SIZE,
    HEADER_STRUCT,
    OP_COMPRESSED,
    OP_MSG,
    OP_QUERY,
    pack_header,
)

NOOP: Final = 0
SNAPPY: Final = 1
ZLIB: Final = 2
ZSTD: Final = 3

#: Compressor names (as in the handshake's ``compression`` list) -> ids.
SUPPORTED_COMPRESSORS: Final[dict[str, int]] = {"snappy": SNAPPY, "zlib": ZLIB, "zstd": ZSTD}
COMPRESSOR_NAMES: Final[dict[int, str]] = {
    NOOP: "noop",
    SNAPPY: "snappy",
    ZLIB: "zlib",
    ZSTD: "zstd",
}

#: Commands whose messages must never be compressed (OP_COMPRESSED spec),
#: compared case-insensitively.
NEVER_COMPRESSED: Final = frozenset(
    name.lower()
    for name in (
        "hello",
        "isMaster",
        "saslStart",
        "saslContinue",
        "getnonce",
        "authenticate",
        "createUser",
        "updateUser",
        "copydbSaslStart",
        "copydbgetnonce",
        "copydb",
    )
)

_PREFIX: Final = struct.Struct(
    "<iiiiiiB"
)  # header + originalOpcode, uncompressedSize, compressorId
PREFIX_SIZE: Final = _PREFIX.size  # 25
_MAX_WINDOW: Final = 1 << 27  # zstd window limit (libzstd's own default)


def decompress_message(frame: Frame | Buffer, max_message_size: int) -> bytes:
    """The original message (header rebuilt from the OP_COMPRESSED one) of an OP_COMPRESSED frame.

    ``frame`` is a :class:`~scalyproxy.wire.framer.Frame` or the message bytes.
    """
    data = frame.data if isinstance(frame, Frame) else frame
    if len(data) < PREFIX_SIZE:
        raise _error(
            f"OP_COMPRESSED needs at least {PREFIX_SIZE} bytes, got {len(data)}", HEADER_SIZE
        )
    _length, request_id, response_to, op_code, original, size, compressor = _PREFIX.unpack_from(
        data, 0
    )
    if op_code != OP_COMPRESSED:
        raise _error(f"opCode {op_code} is not OP_COMPRESSED", 12, "opCode")
    if original == OP_COMPRESSED:
        raise _error("OP_COMPRESSED wraps another OP_COMPRESSED", HEADER_SIZE, "originalOpcode")
    if size < 0 or size > max_message_size - HEADER_SIZE:
        raise _error(
            f"uncompressedSize {size} outside 0..{max_message_size - HEADER_SIZE}",
            HEADER_SIZE + 4,
            "uncompressedSize",
        )
    body = _decompress(memoryview(data)[PREFIX_SIZE:], compressor, size)
    return pack_header(HEADER_SIZE + size, request_id, response_to, original) + body


def _decompress(payload: memoryview, compressor: int, size: int) -> bytes:
    try:
        if compressor == NOOP:
            out = bytes(payload)
        elif compressor == SNAPPY:
            out = _snappy(payload, size)
        elif compressor == ZLIB:
            out = _zlib(payload, size)
        elif compressor == ZSTD:
            out = _zstd(payload, size)
        else:
            raise _error(f"unknown compressorId {compressor}", HEADER_SIZE + 8, "compressorId")
    except ProtocolError:
        raise
    except Exception as exc:  # each library has its own error types
        name = COMPRESSOR_NAMES.get(compressor, str(compressor))
        raise _error(f"{name} data does not decompress: {exc}", PREFIX_SIZE) from exc
    if len(out) != size:
        raise _error(
            f"decompressed to {len(out)} bytes, uncompressedSize says {size}",
            HEADER_SIZE + 4,
            "uncompressedSize",
        )
    return out


def _snappy(payload: memoryview, size: int) -> bytes:
    announced = _snappy_length(payload)
    if announced != size:
        raise _error(
            f"snappy data announces {announced} bytes, uncompressedSize says {size}", PREFIX_SIZE
        )
    return bytes(snappy.uncompress(bytes(payload)))


def _snappy_length(payload: memoryview) -> int:
    """The varint uncompressed length that starts a raw snappy block."""
    value = shift = 0
    for index in range(min(len(payload), 5)):
        byte = payload[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
        shift += 7
    raise _error("snappy data has no valid length prefix", PREFIX_SIZE)


def _zlib(payload: memoryview, size: int) -> bytes:
    inflater = zlib.decompressobj()
    out = inflater.decompress(payload, size + 1)  # bounded: never more than size + 1 bytes
    if len(out) == size and not inflater.eof:
        raise _error("zlib data is truncated", PREFIX_SIZE)
    if len(out) == size and inflater.unused_data:
        raise _error("zlib data is followed by extra bytes", PREFIX_SIZE)
    return out


def _zstd(payload: memoryview, size: int) -> bytes:
    announced = zstandard.frame_content_size(payload)
    if announced not in (-1, size):
        raise _error(
            f"zstd frame announces {announced} bytes, uncompressedSize says {size}", PREFIX_SIZE
        )
    decompressor = zstandard.ZstdDecompressor(max_window_size=_MAX_WINDOW)
    # max_output_size bounds the buffer when the frame does not announce its size
    # (0 would mean unbounded, hence the max).
    return decompressor.decompress(payload, max_output_size=max(size, 1), allow_extra_data=False)


def compress_message(message: Buffer, compressor_id: int, *, level: int | None = None) -> bytes:
    """Wrap a whole message in OP_COMPRESSED (same requestID and responseTo).

    Raises ProtocolError(kind="compression") for a message that must never be
    compressed (see :data:`NEVER_COMPRESSED`), an OP_COMPRESSED message, or an
    unknown compressor. ``level`` applies to zlib (-1..9) and zstd.
    """
    if len(message) < HEADER_SIZE:
        raise _error(f"a message needs at least 16 bytes, got {len(message)}", 0)
    length, request_id, response_to, op_code = HEADER_STRUCT.unpack_from(message, 0)
    if length != len(message):
        raise _error(
            f"messageLength {length} but the message has {len(message)} bytes", 0, "messageLength"
        )
    if op_code == OP_COMPRESSED:
        raise _error("the message is already OP_COMPRESSED", 12, "opCode")
    name = command_name(message)
    if name is not None and name.lower() in NEVER_COMPRESSED:
        raise _error(f"{name!r} messages must never be compressed", HEADER_SIZE, name)
    payload = memoryview(message)[HEADER_SIZE:]
    packed = _compress(payload, compressor_id, level)
    prefix = _PREFIX.pack(
        PREFIX_SIZE + len(packed),
        request_id,
        response_to,
        OP_COMPRESSED,
        op_code,
        len(payload),
        compressor_id,
    )
    return prefix + packed


def may_compress(message: Buffer) -> bool:
    """False for messages that must never be compressed (by their command name)."""
    name = command_name(message)
    return name is None or name.lower() not in NEVER_COMPRESSED


def _compress(payload: memoryview, compressor_id: int, level: int | None) -> bytes:
    if compressor_id == NOOP:
        return bytes(payload)
    if compressor_id == SNAPPY:
        return bytes(snappy.compress(bytes(payload)))
    if compressor_id == ZLIB:
        return zlib.compress(payload, -1 if level is None else level)
    if compressor_id == ZSTD:
        compressor = zstandard.ZstdCompressor(
            level=3 if level is None else level, write_content_size=True
        )
        return compressor.compress(payload)
    raise _error(f"unknown compressorId {compressor_id}", HEADER_SIZE + 8, "compressorId")


def command_name(message: Buffer) -> str | None:
    """The first key of the command document of an OP_MSG or OP_QUERY message, if readable.

    Reads only bytes (no BSON decoding); for OP_MSG the body may follow kind-1
    sections; for OP_QUERY a ``$query`` wrapper is looked into.
    """
    try:
        op_code = HEADER_STRUCT.unpack_from(message, 0)[3]
        data = (
            bytes(message[: min(len(message), 1 << 16)])
            if isinstance(message, memoryview)
            else message
        )
        if op_code == OP_MSG:
            return _first_key(data, _op_msg_body_start(data))
        if op_code == OP_QUERY:
            start = data.index(0, HEADER_SIZE + 4) + 1 + 8
            name = _first_key(data, start)
            if name == "$query":
                return _first_key(data, start + 4 + 1 + len("$query") + 1)
            return name
    except (IndexError, ValueError, struct.error, UnicodeDecodeError):
        return None
    return None


def _op_msg_body_start(data: Buffer) -> int:
    pos = HEADER_SIZE + 4
    while data[pos] == 1:  # skip kind-1 sections
        pos += 1 + struct.unpack_from("<i", data, pos + 1)[0]
    if data[pos] != 0:
        raise ValueError("no body section")
    return pos + 1


def _first_key(data: Buffer, doc_start: int) -> str | None:
    if data[doc_start + 4] == 0:
        return None
    key_start = doc_start + 5
    key_end = bytes(data[key_start : key_start + 256]).index(0) + key_start
    return bytes(data[key_start:key_end]).decode("utf-8")


def _error(reason: str, offset: int, field: str | None = None) -> ProtocolError:
    return ProtocolError(reason, kind="compression", offset=offset, field=field)
