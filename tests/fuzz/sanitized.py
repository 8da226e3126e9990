"""Run the C extension's tests, then mutated messages, against an ASan/UBSan build.

    scripts/sanitize [MUTATIONS]        # builds the sanitized module, then runs this

``scripts/sanitize`` compiles ``scalyproxy/_scan.c`` with
``-fsanitize=address,undefined`` into a temporary directory and starts this
module with the sanitizer runtimes preloaded. It loads that build as
``scalyproxy._scan`` before anything imports the regular one, then runs (1) the
pytest files that drive the extension and (2) ``MUTATIONS`` messages mutated
from the codec seed corpus through the codec target's checks (C view against
the pure-Python view, scanner against pymongo), the scanner functions and the
compiled structure check. Any sanitizer report aborts the process (exit status
not 0). (atheris cannot be used here: its coverage hooks clash with libasan's.)
"""

from __future__ import annotations

import importlib.util
import random
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = [
    "tests/unit/wire",
    "tests/unit/policy/test_schema_compiled.py",
    "tests/unit/policy/test_fastpath.py",
    "tests/unit/policy/test_fastpath_commands.py",
    "tests/unit/server/test_relay_fast.py",
    "tests/unit/evidence/test_shape_hash.py",
    "tests/property",
    "tests/fuzz/test_fuzz_targets.py",
]


def load_sanitized(path: str) -> None:
    import scalyproxy

    spec = importlib.util.spec_from_file_location("scalyproxy._scan", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["scalyproxy._scan"] = module
    spec.loader.exec_module(module)
    scalyproxy._scan = module  # type: ignore[attr-defined]


def mutated(rng: random.Random, seeds: list[bytes]) -> bytes:
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randint(1, 4)):
        op, pos = rng.randrange(4), rng.randrange(len(data)) if data else 0
        if op == 0 and data:
            data[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            del data[pos : pos + rng.randint(1, 8)]
        elif op == 2:
            data[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif len(data) >= pos + 4:
            value = rng.choice([-1, 0, 5, 16, 2**31 - 1, len(data) - pos])
            data[pos : pos + 4] = struct.pack("<i", value)
    if rng.random() < 0.7 and len(data) >= 4:
        data[:4] = struct.pack("<i", len(data))
    return bytes(data)


def mutations(count: int, seed: int) -> None:
    from scalyproxy import _scan
    from scalyproxy.config import load_config
    from scalyproxy.policy.schema import Schema
    from tests.fuzz.targets import check_message

    corpus = ROOT / "tests" / "fuzz" / "corpus" / "codec"
    seeds = [p.read_bytes()[1:] for p in sorted(corpus.iterdir())]  # first byte: chunk size
    seeds = [s for s in seeds if len(s) >= 16]
    schemas = [
        Schema(c.structure)
        for c in load_config(ROOT / "config" / "blog.yaml").collections.values()
        if c.structure is not None
    ]
    rng, start = random.Random(seed), time.monotonic()
    for i in range(count):
        raw = mutated(rng, seeds)
        if len(raw) >= 16:
            check_message(raw)
        body = raw[21:]
        _scan.scan_document(body)
        _scan.scan_run(body)
        _scan.fast_view(raw)
        _scan.shape_hash(raw, b"scaly:allow-global")
        _scan.shape_hash(raw, b"scaly:allow-global", True)  # as if scanned: bounds still hold
        for schema in schemas:
            try:
                schema.unconfirmed(memoryview(body))
            except ValueError:
                pass  # not a run of whole documents
        if (i + 1) % 500_000 == 0:
            print(f"sanitize: {i + 1:,} mutated messages", flush=True)
    print(f"sanitize: {count:,} mutated messages in {time.monotonic() - start:.0f} s, no report")


def main() -> int:
    import pytest

    module, count = sys.argv[1], int(sys.argv[2])
    load_sanitized(module)
    from scalyproxy import _scan

    print(f"sanitize: using {_scan.__file__}", flush=True)
    status = pytest.main(["-q", "-p", "no:cacheprovider", *TESTS])
    if status != 0:
        return int(status)
    mutations(count, seed=int(time.time()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
