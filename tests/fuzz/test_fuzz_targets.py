"""The fuzz targets in CI: every seed and every saved crasher, a short deterministic
mutation run (no atheris needed), the oracles' own ability to fail, and a short
atheris run when atheris is installed (``pip install atheris``; the long runs
are in scripts/stress).

A crasher found by a long run is saved under ``crashers/codec`` or
``crashers/relay`` (libFuzzer's ``crash-*`` file, renamed to say what it found)
and stays a regression test here.
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scalyproxy.policy import Engine
from scalyproxy.wire import ambiguous, command_view, make_frame
from scalyproxy.wire.op_msg import encode_op_msg
from tests.fuzz import targets
from tests.fuzz.memrelay import MemoryRelay, captured_logs
from tests.fuzz.targets import (
    InvariantError,
    check_forwarded,
    check_to_client,
    codec_target,
    pack_relay_input,
    reencode,
    relay_target,
)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TARGETS: dict[str, Callable[[bytes], None]] = {"codec": codec_target, "relay": relay_target}


def inputs(kind: str) -> list[Path]:
    return sorted((HERE / "corpus" / kind).glob("*.bin")) + sorted((HERE / "crashers" / kind).glob("*.bin"))


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with captured_logs(level="error"):
        yield


@pytest.mark.parametrize("kind", list(TARGETS))
def test_seed_corpus_is_there(kind: str) -> None:
    assert len(list((HERE / "corpus" / kind).glob("*.bin"))) >= (50 if kind == "codec" else 5)


@pytest.mark.parametrize("kind", list(TARGETS))
def test_every_seed_and_crasher_passes(kind: str) -> None:
    for path in inputs(kind):
        TARGETS[kind](path.read_bytes())


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        pos = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(pos, len(out) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            del out[pos : pos + rng.randint(1, 16)]
        elif op == 2:
            out[pos:pos] = rng.randbytes(rng.randint(1, 8))
        elif len(out) >= pos + 4:
            out[pos : pos + 4] = struct.pack("<i", rng.choice([0, 15, 16, 17, -1, 2**31 - 1, 48_000_001, 100]))
    return bytes(out)


@pytest.mark.parametrize("kind", list(TARGETS))
def test_deterministic_mutations(kind: str) -> None:
    rng = random.Random(9)
    seeds = [p.read_bytes() for p in inputs(kind)]
    for _ in range(1500 if kind == "codec" else 400):
        TARGETS[kind](mutate(rng, rng.choice(seeds)))


# -- the oracles can fail ----------------------------------------------------------------


def test_reencode_notices_a_changed_message(monkeypatch: pytest.MonkeyPatch) -> None:
    msg = encode_op_msg({"insert": "c", "$db": "d"}, request_id=1, sequences={"documents": [{"_id": 1}]})
    reencode(msg)  # the control: identical
    real = targets.assemble_op_msg
    monkeypatch.setattr(targets, "assemble_op_msg", lambda *a: real(*a)[:-1] + b"\x01")  # an encoder bug
    with pytest.raises(InvariantError, match="byte-identical"):
        reencode(msg)


def test_forwarding_a_refused_command_is_caught() -> None:
    relay = MemoryRelay()
    refused = encode_op_msg({"find": "blog_posts", "filter": {"author": "a"}, "$db": "blog"}, request_id=3)
    with pytest.raises(InvariantError, match="refused"):
        check_forwarded(refused, refused, relay)


def test_a_fast_answer_the_engine_would_not_give_is_caught() -> None:
    pytest.importorskip("scalyproxy._scan")
    from bench import messages as m
    from scalyproxy.wire import command_view, make_frame

    message = m.targeted("count", 1)
    view = command_view(make_frame(message))
    targets.fast_path_agrees(message, view)  # the control: the real tables agree
    engine = targets.fast_path_engines()[0]
    wrong = Engine.from_config(engine.config)
    entry = wrong.fast["blog.blog_posts"]
    wrong.fast["blog.blog_posts"] = (*entry[:5], entry[0], *entry[6:])  # count answered with find's verdict
    with pytest.raises(InvariantError, match="disagree on find"):
        targets.fast_path_agrees(message, view, [wrong])


def test_bytes_nobody_sent_are_caught() -> None:
    stranger = encode_op_msg({"ok": 1.0}, request_id=5, response_to=99)
    with pytest.raises(InvariantError, match="nobody"):
        check_to_client(b"", b"", stranger)


def test_a_relay_input_round_trips() -> None:
    client = encode_op_msg({"ping": 1, "$db": "admin"}, request_id=1)
    upstream = encode_op_msg({"ok": 1.0}, request_id=2, response_to=1)
    relay_target(pack_relay_input(1, client, upstream))
    relay_target(pack_relay_input(4096, client, upstream))


# -- atheris -------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TARGETS))
def test_short_atheris_run(kind: str, tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    shutil.copytree(HERE / "corpus" / kind, corpus)  # libFuzzer adds to its corpus: never the repo's
    proc = subprocess.run(
        [sys.executable, "-m", f"tests.fuzz.fuzz_{kind}", "-runs=3000", f"-artifact_prefix={tmp_path}/",
         "-timeout=10", str(corpus)],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Done 3000 runs" in proc.stderr


def test_the_lenient_oracle_notices_a_clean_body_read_leniently() -> None:
    clean = encode_op_msg({"find": "c", "filter": {"a": 1}, "$db": "d"}, request_id=1)
    view = command_view(make_frame(clean))
    targets.lenient_only_in_doubt(clean, view)  # the control
    start = 21
    lenient = ambiguous._decode_lenient(clean[start:], start, "the body")  # no doubt in it
    with pytest.raises(InvariantError, match="LenientDocument"):
        targets.lenient_only_in_doubt(clean, view._replace(body=lenient))
