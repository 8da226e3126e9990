"""R5: every valid frame of the corpus, split at every byte and fed one byte per read,
is relayed exactly as when it arrives whole.

In memory (tests/fuzz/memrelay.py drives the real ClientConnection), so every
split point is really a separate ``data_received``; one real-socket check at
the end sends two messages a byte at a time through the proxy process.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scalyproxy.wire import ProtocolError, command_view, make_frame
from tests.conftest import ProxyProcess
from tests.fuzz.memrelay import MemoryRelay, captured_logs
from tests.fuzz.targets import split_frames, split_relay_input
from tests.reliability.conftest import Upstream
from tests.reliability.helpers import connect, op_msg, op_query, recv_message, report, response_to

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

CORPUS = Path(__file__).resolve().parents[1] / "fuzz" / "corpus"


def corpus_frames() -> list[bytes]:
    """Every distinct request frame of the seed corpus that the codec accepts."""
    found: dict[bytes, None] = {}
    for path in sorted((CORPUS / "codec").glob("*.bin")):
        for raw in split_frames(path.read_bytes()[1:], 48_000_000)[0]:
            found[raw] = None
    for path in sorted((CORPUS / "relay").glob("*.bin")):
        _, client, _ = split_relay_input(path.read_bytes())
        for raw in split_frames(client, 48_000_000)[0]:
            found[raw] = None
    valid = []
    for raw in found:
        try:
            command_view(make_frame(raw))
        except ProtocolError:
            continue
        valid.append(raw)
    return valid


FRAMES = corpus_frames()


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with captured_logs(level="error"):
        yield


def relayed(pieces: list[bytes]) -> tuple[bytes, bytes, bool]:
    """(bytes sent upstream, bytes sent to the client with the proxy's own request
    ids blanked, closed) after feeding ``pieces`` one ``data_received`` each."""
    relay = MemoryRelay()
    for piece in pieces:
        relay.from_client(piece)
    return relay.to_upstream, _blank_ids(relay.to_client), relay.closed


def _blank_ids(stream: bytes) -> bytes:
    out, pos = bytearray(stream), 0
    while pos + 16 <= len(out):
        out[pos + 4 : pos + 8] = b"\x00" * 4  # requestID of the proxy's reply: a counter
        pos += struct.unpack_from("<i", out, pos)[0]
    return bytes(out)


def test_the_corpus_has_frames() -> None:
    assert len(FRAMES) >= 30, len(FRAMES)


def test_r5_every_split_point_of_every_frame() -> None:
    splits = 0
    for raw in FRAMES:
        whole = relayed([raw])
        assert whole[0] or whole[1], "the frame was neither forwarded nor answered"
        for k in range(1, len(raw)):
            assert relayed([raw[:k], raw[k:]]) == whole, f"split at {k} of a {len(raw)}-byte frame"
            splits += 1
        assert relayed([raw[i : i + 1] for i in range(len(raw))]) == whole, "one byte per read"
    report("R5", frames=len(FRAMES), split_points=splits)


def test_r5_the_whole_corpus_as_one_stream_one_byte_per_read() -> None:
    stream = b"".join(FRAMES)
    whole = relayed([stream])
    assert relayed([stream[i : i + 1] for i in range(len(stream))]) == whole
    assert relayed([stream[i : i + 7] for i in range(0, len(stream), 7)]) == whole


def test_r5_one_byte_per_send_over_a_real_socket(guarded: ProxyProcess, upstream: Upstream) -> None:
    messages = [
        op_query("admin.$cmd", {"isMaster": 1}, 31),
        op_msg({"insert": "blog_posts", "$db": "blog"}, 32, documents=[{"author": "a", "title": "t", "body": "b"}]),
    ]
    with connect(guarded.port) as s:
        for msg in messages:
            for i in range(len(msg)):
                s.sendall(msg[i : i + 1])
                time.sleep(0.0005)
            assert response_to(recv_message(s)) == struct.unpack_from("<i", msg, 4)[0]
    assert upstream.new_messages() == messages
