"""Cost of the wire codec, next to a bare ``bson.decode`` measured in the same run.

    .venv/bin/python bench/bench_codec.py            # full run (about a minute)
    .venv/bin/python bench/bench_codec.py --quick    # smoke run for CI (a few seconds)

Rows:
  (a) a 108-byte ``find`` body: ``command_view(frame)`` vs ``bson.decode(body)``,
      and two floors of a strict view: the C scan (``scalyproxy._scan``,
      strict validity and no repeated key) plus pymongo's C decode, and, for the
      pure-Python path without the extension, the C decode plus the C re-encode
      compared with the original bytes;
  (b) a 1.1 KB ``insert`` (small body + documents in a kind-1 section):
      the view alone (sequences stay lazy) and the view plus reading the
      documents, vs ``bson.decode(body)`` and ``bson.decode(body)`` +
      ``bson.decode_all(documents)``;
  framer: messages/s and MB/s cutting a stream of finds fed in 64 KiB chunks,
      and one 16 MB message fed in 64 KiB chunks.

Each figure is CPU time, the minimum over interleaved rounds (the machine is
shared; the minimum is the least disturbed). Ratios compare numbers from this same run.
Never used as a pass/fail gate.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bson
from bson.codec_options import CodecOptions, DatetimeConversion

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bson import _bson_to_dict, _dict_to_bson  # noqa: E402

from scalyproxy._scan import scan_document  # noqa: E402
from scalyproxy.wire import Framer, command_view, encode_op_msg, make_frame  # noqa: E402
from scalyproxy.wire.command import _python_command_view  # noqa: E402
from scalyproxy.wire.documents import DECODE_OPTIONS, ENCODE_OPTIONS  # noqa: E402

OPTIONS: CodecOptions[dict[str, Any]] = CodecOptions(
    document_class=dict,
    tz_aware=False,
    unicode_decode_error_handler="strict",
    datetime_conversion=DatetimeConversion.DATETIME_AUTO,
)

FIND_BODY = {
    "find": "orders",
    "filter": {"customer_id": 12345, "status": "open"},
    "limit": 10,
    "singleBatch": True,
    "$db": "shop",
}
INSERT_BODY = {"insert": "orders", "ordered": True, "$db": "shop"}
INSERT_DOCS = [
    {
        "_id": bson.ObjectId(),
        "customer_id": 1000 + i,
        "status": "open",
        "total": 99.5 + i,
        "items": [{"sku": f"SKU-{i}-{j}", "qty": j + 1} for j in range(2)],
        "note": "x" * 20,
    }
    for i in range(6)
]


def timed(fn: Callable[[], object], number: int) -> float:
    """CPU seconds per call of fn over `number` calls (CPU time: other processes
    on a shared machine disturb it less than wall time)."""
    start = time.process_time()
    for _ in range(number):
        fn()
    return (time.process_time() - start) / number


def best_of(cases: dict[str, Callable[[], object]], number: int, rounds: int) -> dict[str, float]:
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, fn in cases.items():  # interleaved: each round measures every case
            best[name] = min(best[name], timed(fn, number))
    return best


def decode_cases() -> tuple[dict[str, Callable[[], object]], dict[str, int]]:
    find_msg = encode_op_msg(FIND_BODY, request_id=1)
    find_body = bson.encode(FIND_BODY)
    find_frame = make_frame(find_msg)
    insert_msg = encode_op_msg(INSERT_BODY, request_id=2, sequences={"documents": INSERT_DOCS})
    insert_frame = make_frame(insert_msg)
    insert_body = bson.encode(INSERT_BODY)
    insert_docs = b"".join(bson.encode(doc) for doc in INSERT_DOCS)

    def view_and_docs() -> object:
        view = command_view(insert_frame)
        return list(view.sequences["documents"])  # a DocumentRun decodes when read

    def floor() -> object:  # the two C calls the pure-Python strict view cannot avoid
        body = _bson_to_dict(find_body, DECODE_OPTIONS)
        return _dict_to_bson(body, False, ENCODE_OPTIONS, False) == find_body

    def scan_floor() -> object:  # the two C calls of the extension's view
        return scan_document(find_body), _bson_to_dict(find_body, DECODE_OPTIONS)

    cases: dict[str, Callable[[], object]] = {
        "find: bson.decode(body)": lambda: bson.decode(find_body, OPTIONS),
        "find: command_view": lambda: command_view(find_frame),
        "find: C scan + C decode only": scan_floor,
        "find: C decode + C re-encode only": floor,
        "find: pure-Python command_view": lambda: _python_command_view(find_frame),
        "insert: bson.decode(body)": lambda: bson.decode(insert_body, OPTIONS),
        "insert: command_view (lazy docs)": lambda: command_view(insert_frame),
        "insert: bson.decode(body)+decode_all(docs)": lambda: (
            bson.decode(insert_body, OPTIONS),
            bson.decode_all(insert_docs, OPTIONS),
        ),
        "insert: command_view + documents": view_and_docs,
    }
    sizes = {
        "find body": len(find_body),
        "find message": len(find_msg),
        "insert message": len(insert_msg),
    }
    return cases, sizes


def framer_stream(count: int) -> tuple[float, int, int]:
    message = encode_op_msg(FIND_BODY, request_id=1)
    stream = message * count
    chunks = [stream[i : i + 65536] for i in range(0, len(stream), 65536)]
    framer = Framer()
    start = time.process_time()
    frames = 0
    for chunk in chunks:
        framer.feed(chunk)
        while framer.next_frame() is not None:
            frames += 1
    return time.process_time() - start, frames, len(stream)


def framer_large(size: int) -> float:
    message = encode_op_msg({"insert": "c", "$db": "d", "pad": "x" * (size - 100)}, request_id=1)
    chunks = [message[i : i + 65536] for i in range(0, len(message), 65536)]
    framer = Framer()
    start = time.process_time()
    for chunk in chunks:
        framer.feed(chunk)
        framer.next_frame()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few seconds, for a CI smoke run")
    args = parser.parse_args()
    number, rounds, stream_count, repeats = (
        (500, 3, 2000, 2) if args.quick else (20000, 15, 50000, 10)
    )

    cases, sizes = decode_cases()
    best = best_of(cases, number, rounds)
    print(f"sizes: {sizes}   (min of {rounds} interleaved rounds x {number} calls)")
    print(f"{'case':<46}{'us/msg':>10}{'ratio':>9}")
    baselines = {
        "find": best["find: bson.decode(body)"],
        "insert": best["insert: bson.decode(body)"],
    }
    both = best["insert: bson.decode(body)+decode_all(docs)"]
    for name, seconds in best.items():
        base = both if name == "insert: command_view + documents" else baselines[name.split(":")[0]]
        print(f"{name:<46}{seconds * 1e6:>10.2f}{seconds / base:>8.2f}x")
    elapsed, frames, total = min(framer_stream(stream_count) for _ in range(repeats))
    print(
        f"framer, {frames} x {total // frames} B in 64 KiB chunks: "
        f"{frames / elapsed:,.0f} msg/s, {total / elapsed / 1e6:,.0f} MB/s"
    )
    large = min(framer_large(16_000_000) for _ in range(repeats))
    print(
        f"framer, one 16 MB message in 64 KiB chunks: {large * 1e3:.1f} ms, {16 / large:,.0f} MB/s"
    )
    print(f"python {sys.version.split()[0]}, pymongo C extension: {bson.has_c()}")


if __name__ == "__main__":
    main()
