"""OP_COMPRESSED: each compressor both ways, sizes bounded before decompressing,
commands that must never be compressed are never produced compressed."""

from __future__ import annotations

import struct
import tracemalloc
import zlib

import bson
import pytest
import snappy
import zstandard

from scalyproxy.wire import (
    SUPPORTED_COMPRESSORS,
    ProtocolError,
    compress_message,
    decompress_message,
    encode_op_msg,
    encode_op_query,
    make_frame,
    may_compress,
)
from scalyproxy.wire.op_compressed import NEVER_COMPRESSED
from tests.unit.wire.build import BODY, SEQUENCE, op_msg, sized

PLAIN = encode_op_msg(
    {"find": "c", "filter": {"x": "y" * 300}, "$db": "d"}, request_id=21, response_to=4
)


def wrap(
    original_op: int, size: int, compressor: int, payload: bytes, request_id: int = 21
) -> bytes:
    prefix = struct.pack(
        "<iiiiiiB", 25 + len(payload), request_id, 4, 2012, original_op, size, compressor
    )
    return prefix + payload


def refused(message: bytes, max_size: int = 48_000_000) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decompress_message(make_frame(message), max_size)
    assert info.value.kind == "compression"
    return info.value


def test_supported_compressors() -> None:
    assert SUPPORTED_COMPRESSORS == {"snappy": 1, "zlib": 2, "zstd": 3}


@pytest.mark.parametrize("compressor_id", [0, 1, 2, 3])
def test_round_trip(compressor_id: int) -> None:
    packed = compress_message(PLAIN, compressor_id)
    length, rid, rto, op, original, size, cid = struct.unpack_from("<iiiiiiB", packed)
    assert (length, rid, rto, op, original, size, cid) == (
        len(packed),
        21,
        4,
        2012,
        2013,
        len(PLAIN) - 16,
        compressor_id,
    )
    assert decompress_message(make_frame(packed), 48_000_000) == PLAIN
    assert decompress_message(packed, 48_000_000) == PLAIN


@pytest.mark.parametrize("level", [-1, 0, 1, 9])
def test_zlib_levels(level: int) -> None:
    assert decompress_message(compress_message(PLAIN, 2, level=level), 48_000_000) == PLAIN


@pytest.mark.parametrize(
    "name", sorted(NEVER_COMPRESSED) + ["isMaster", "saslStart", "createUser", "HELLO"]
)
def test_commands_that_must_never_be_compressed(name: str) -> None:
    message = encode_op_msg({name: 1, "$db": "admin"}, request_id=1)
    assert not may_compress(message)
    with pytest.raises(ProtocolError) as info:
        compress_message(message, 1)
    assert info.value.kind == "compression" and "never be compressed" in str(info.value)


def test_never_compressed_list_is_the_specs() -> None:
    expected = {"hello", "ismaster", "saslstart", "saslcontinue", "getnonce", "authenticate", "createuser",
                "updateuser", "copydbsaslstart", "copydbgetnonce", "copydb"}  # fmt: skip
    assert expected == NEVER_COMPRESSED


def test_never_compressed_is_found_after_a_sequence_and_in_op_query() -> None:
    message = op_msg(
        0, SEQUENCE, sized("docs"), BODY, bson.encode({"saslStart": 1, "$db": "admin"})
    )
    assert not may_compress(message)
    assert not may_compress(encode_op_query("admin.$cmd", {"isMaster": 1}, request_id=1))
    assert not may_compress(encode_op_query("admin.$cmd", {"$query": {"hello": 1}}, request_id=1))
    assert may_compress(encode_op_query("admin.$cmd", {"ping": 1}, request_id=1))
    assert may_compress(PLAIN)


def test_an_op_compressed_message_is_not_compressed_again() -> None:
    packed = compress_message(PLAIN, 2)
    with pytest.raises(ProtocolError):
        compress_message(packed, 2)


def test_unknown_compressor_cannot_be_used() -> None:
    with pytest.raises(ProtocolError):
        compress_message(PLAIN, 4)
    assert refused(wrap(2013, 10, 4, b"x" * 10)).field == "compressorId"


def test_nested_op_compressed_is_refused() -> None:
    inner = compress_message(PLAIN, 0)
    assert refused(wrap(2012, len(inner) - 16, 0, inner[16:])).field == "originalOpcode"


@pytest.mark.parametrize("size", [-1, -(2**31), 48_000_000 - 15, 2**31 - 1])
def test_uncompressed_size_is_bounded_before_decompressing(size: int) -> None:
    payload = zlib.compress(b"\x00" * 1000)
    tracemalloc.start()
    try:
        err = refused(wrap(2013, size, 2, payload))
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert err.field == "uncompressedSize" and peak < 1 << 20


def test_limit_is_the_whole_original_message() -> None:
    packed = compress_message(PLAIN, 0)
    assert decompress_message(packed, len(PLAIN)) == PLAIN
    refused(packed, len(PLAIN) - 1)


def test_zlib_bomb_stops_at_the_announced_size() -> None:
    bomb = zlib.compress(b"\x00" * 50_000_000, 9)  # ~50 KB that inflates to 50 MB
    tracemalloc.start()
    try:
        refused(wrap(2013, 1000, 2, bomb))
        _cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20


@pytest.mark.parametrize("compressor_id, payload", [
    (1, snappy.compress(b"a" * 100)),
    (2, zlib.compress(b"a" * 100)),
    (3, zstandard.ZstdCompressor().compress(b"a" * 100)),
    (3, zstandard.ZstdCompressor(write_content_size=False).compress(b"a" * 100)),
    (0, b"a" * 100),
])  # fmt: skip
@pytest.mark.parametrize("announced", [99, 101, 0])
def test_output_must_match_uncompressed_size(
    compressor_id: int, payload: bytes, announced: int
) -> None:
    refused(wrap(2013, announced, compressor_id, payload))


def test_snappy_announcing_a_huge_length_is_refused_unread() -> None:
    payload = b"\xff\xff\xff\xff\x0f" + b"\x00" * 10  # varint 2**32-1
    refused(wrap(2013, 100, 1, payload))


def test_zstd_frame_announcing_another_size_is_refused_unread() -> None:
    payload = zstandard.ZstdCompressor().compress(b"a" * 5000)
    assert "announces 5000" in str(refused(wrap(2013, 100, 3, payload)))


@pytest.mark.parametrize("compressor_id, payload", [
    (1, b"\x05garbage"),
    (2, zlib.compress(b"a" * 100)[:-3]),
    (2, zlib.compress(b"a" * 100) + b"junk"),
    (3, zstandard.ZstdCompressor().compress(b"a" * 100)[:-2]),
    (3, zstandard.ZstdCompressor().compress(b"a" * 100) + b"junk"),
    (3, b"not zstd at all"),
])  # fmt: skip
def test_corrupt_or_trailing_data(compressor_id: int, payload: bytes) -> None:
    refused(wrap(2013, 100, compressor_id, payload))


def test_too_short_for_the_prefix() -> None:
    refused(struct.pack("<iiii", 24, 1, 0, 2012) + b"\x00" * 8)


def test_empty_original_body() -> None:
    for compressor_id in (0, 1, 2, 3):
        packed = compress_message(struct.pack("<iiii", 16, 1, 0, 2013), compressor_id)
        assert decompress_message(packed, 100) == struct.pack("<iiii", 16, 1, 0, 2013)


def test_only_op_compressed_is_decompressed() -> None:
    assert refused(PLAIN).field == "opCode"
