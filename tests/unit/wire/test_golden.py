"""Golden frames built by pymongo decode to what was encoded, re-encode to the same
bytes, and frame identically however the bytes are cut."""

from __future__ import annotations

import struct

import pytest

from scalyproxy.wire import (
    OP_COMPRESSED,
    OP_MSG,
    OP_QUERY,
    Framer,
    Header,
    command_view,
    compress_message,
    decode_op_msg,
    decode_op_query,
    decompress_message,
    encode_op_msg,
    encode_op_query,
    make_frame,
)
from tests.unit.wire.golden import Golden, all_golden

GOLDEN = all_golden()
IDS = [g.name for g in GOLDEN]


def frames_of(chunks: list[bytes]) -> list[tuple[Header, bytes]]:
    framer = Framer()
    out: list[tuple[Header, bytes]] = []
    for chunk in chunks:
        framer.feed(chunk)
        while (frame := framer.next_frame()) is not None:
            out.append((frame.header, bytes(frame.data)))
    return out


def inner(golden: Golden) -> bytes:
    """The uncompressed message (pymongo's own bytes for uncompressed vectors)."""
    if struct.unpack_from("<i", golden.message, 12)[0] == OP_COMPRESSED:
        return decompress_message(golden.message, 48_000_000)
    return golden.message


@pytest.mark.parametrize("kind", [bytes, bytearray, memoryview])
@pytest.mark.parametrize("golden", GOLDEN, ids=IDS)
def test_command_view_reads_what_pymongo_encoded(golden: Golden, kind: type) -> None:
    view = command_view(make_frame(kind(golden.message)))
    assert view.body == golden.body
    assert view.name == next(iter(golden.body))
    assert view.db == golden.db
    assert view.request_id == golden.request_id
    assert {name: list(docs) for name, docs in view.sequences.items()} == golden.sequences
    compressed = struct.unpack_from("<i", golden.message, 12)[0] == OP_COMPRESSED
    assert (view.compressor_id is not None) == compressed
    assert view.legacy == (view.op_code == OP_QUERY)


@pytest.mark.parametrize("golden", GOLDEN, ids=IDS)
def test_reencoding_gives_the_same_bytes(golden: Golden) -> None:
    message = inner(golden)
    header = struct.unpack_from("<iiii", message)
    if header[3] == OP_MSG:
        decoded = decode_op_msg(message)
        again = encode_op_msg(
            decoded.body,
            request_id=header[1],
            response_to=header[2],
            flags=decoded.flags,
            sequences=decoded.sequences,
        )
    else:
        query = decode_op_query(message)
        again = encode_op_query(
            query.namespace,
            query.query,
            request_id=header[1],
            flags=query.flags,
            number_to_skip=query.number_to_skip,
            number_to_return=query.number_to_return,
            selector=query.selector,
        )
    assert again == message


@pytest.mark.parametrize(
    "golden", [g for g in GOLDEN if g.name.startswith("compressed")], ids=lambda g: g.name
)
def test_recompressing_gives_the_same_content(golden: Golden) -> None:
    compressor_id = golden.message[24]
    again = compress_message(inner(golden), compressor_id, level=6 if compressor_id == 2 else None)
    if compressor_id in (0, 1, 2):  # same library and settings as pymongo: same bytes
        assert again == golden.message
    assert decompress_message(again, 48_000_000) == inner(golden)


@pytest.mark.parametrize("golden", GOLDEN, ids=IDS)
def test_whole_byte_by_byte_and_with_trailing_bytes_frame_identically(golden: Golden) -> None:
    msg = golden.message
    nxt = GOLDEN[(GOLDEN.index(golden) + 1) % len(GOLDEN)].message
    whole = frames_of([msg])
    assert [data for _h, data in whole] == [msg]
    assert frames_of([msg[i : i + 1] for i in range(len(msg))]) == whole
    for cut in (1, 3, 4, 15, 16, 17, 40):
        assert frames_of([msg + nxt[:cut]]) == whole
        assert frames_of([msg[:cut], msg[cut:] + nxt[:cut]]) == whole
    assert frames_of([msg + nxt]) == whole + frames_of([nxt])
