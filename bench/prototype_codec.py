"""Evidence for two codec changes proposed to the wire/ owners (not used by the proxy).

    .venv/bin/python -m bench.prototype_codec [--quick]

(a) ``command_view`` has a fast path for an OP_MSG whose only section is the body
    (finds); every driver's insert/update/delete also carries one kind-1 section
    and goes through the general ``parse_op_msg`` walk. :func:`write_view` is that
    fast path for "body + one kind-1 section, no checksum": the same checks in
    fewer Python steps, the same CommandView (lazy sequences), the same
    fallback to the careful path for anything unusual.
(b) ``decode_sequence`` proves "no repeated key" by re-encoding the whole run
    wrapped in an array and converting it back to a run: three full-size copies
    of the documents at once (a 47 MB insert peaks near 5x its size in the proxy).
    :func:`iter_checked` decodes and checks one document at a time (one extra
    copy of one document), so a consumer that does not keep them holds O(1 doc).

Each figure: the minimum over rounds of this thread's CPU time; the results are
asserted equal to the production functions' before anything is timed.
"""

from __future__ import annotations

import argparse
import struct
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any

from bson import _bson_to_dict, _dict_to_bson

from bench import messages as m
from scalyproxy.wire import command_view, make_frame
from scalyproxy.wire.command import CommandView, LazySequences
from scalyproxy.wire.documents import (
    DECODE_OPTIONS,
    ENCODE_OPTIONS,
    decode_document,
    decode_sequence,
)
from scalyproxy.wire.framer import Frame
from scalyproxy.wire.op_msg import FLAG_MORE_TO_COME, check_sequence_names

_PREFIX = struct.Struct("<iiiiIBi").unpack_from  # header, flagBits, kind, body size
_INT32 = struct.Struct("<i").unpack_from
_NOT_FAST_FLAGS = 0xFFFF & ~FLAG_MORE_TO_COME


def write_view(frame: Frame) -> CommandView:
    """``command_view`` with a fast path for body + one kind-1 section (prototype)."""
    data = frame.data
    try:
        length, request_id, _rto, op_code, flags, kind, size = _PREFIX(data)
        seq = 21 + size  # the kind byte of the second section
        if (op_code == 2013 and not flags & _NOT_FAST_FLAGS and not kind and length == len(data)
                and len(data) > seq + 5 and data[seq] == 1 and seq + 1 + _INT32(data, seq + 1)[0] == length):
            nul = data.index(0, seq + 5, length)
            ident = bytes(data[seq + 5 : nul]).decode()
            raw = data[21:seq]
            body: dict[str, Any] = _bson_to_dict(raw, DECODE_OPTIONS)
            name = next(iter(body), None)
            db = body.get("$db")
            if (name is not None and type(db) is str and db
                    and _dict_to_bson(body, False, ENCODE_OPTIONS, False) == raw):
                check_sequence_names(body, (ident,))
                sequences = LazySequences(data, {ident: (nul + 1, length)})
                return CommandView(name, db, body, sequences, request_id, 2013, flags, None, False, data)
    except Exception:
        pass
    return command_view(frame)


def iter_checked(buf: bytes | memoryview) -> Iterator[dict[str, Any]]:
    """The documents of a kind-1 run, each decoded and checked for repeated keys on its own."""
    pos, end = 0, len(buf)
    view = memoryview(buf)
    while pos < end:
        size = _INT32(buf, pos)[0]
        yield decode_document(view[pos : pos + size], offset=pos, what="document")
        pos += size


def cpu_us(fn: Callable[[int], object], number: int, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        for i in range(number):
            fn(i)
        best = min(best, (time.thread_time() - start) / number * 1e6)
    return best


def peak_mib(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    number, rounds = (1_000, 2) if args.quick else (20_000, 5)
    frames = [make_frame(x) for x in m.ring(m.insert_one, 1024)]
    for f in frames[:50]:  # same result as production before timing anything
        a, b = command_view(f), write_view(f)
        assert (a.name, a.db, a.body, a.request_id, a.flags) == (b.name, b.db, b.body, b.request_id, b.flags)
        assert list(a.sequences) == list(b.sequences) and a.sequences["documents"] == b.sequences["documents"]
    rows = {
        "insert 1.1 KB: command_view": cpu_us(lambda i: command_view(frames[i & 1023]), number, rounds),
        "insert 1.1 KB: write_view (prototype)": cpu_us(lambda i: write_view(frames[i & 1023]), number, rounds),
    }
    runs = [bytes(command_view(f).sequences.raw("documents")) for f in frames]  # type: ignore[attr-defined]
    rows["insert 1.1 KB: decode_sequence(documents)"] = cpu_us(lambda i: decode_sequence(runs[i & 1023]), number, rounds)
    rows["insert 1.1 KB: list(iter_checked(documents))"] = cpu_us(
        lambda i: list(iter_checked(runs[i & 1023])), number, rounds)
    for label, us in rows.items():
        print(f"{label:48} {us:7.2f} us")
    big = m.big_insert(47_000_000 // (20 if args.quick else 1))
    view = command_view(make_frame(big))
    raw = bytes(view.sequences.raw("documents"))  # type: ignore[attr-defined]
    assert list(iter_checked(raw)) == decode_sequence(raw)
    print(f"{len(big) / 1e6:.0f} MB insert, peak Python memory while checking every document:")
    print(f"  decode_sequence (all at once)        {peak_mib(lambda: decode_sequence(raw)):8.1f} MiB")
    print(f"  iter_checked (one at a time)         {peak_mib(lambda: sum(1 for _ in iter_checked(raw))):8.1f} MiB")


if __name__ == "__main__":
    main()
