"""R1-R3: hostile bytes over real sockets, against the proxy in front of a recording upstream.

Every bad message must get an error reply (to its own request id, never
retryable); nothing of it may reach the upstream; the proxy stays up. Since
issue 15 a refusal never closes the connection when the frame is sound: only
the legacy writes (which read no reply) and a bad length prefix are closed on
(tests/reliability/test_refusal_keeps_connection.py sends a ping after each).
"""

from __future__ import annotations

import struct
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ProxyProcess
from tests.reliability.cases import DECODE_ERRORS, FIND, NEGATIVE, NO_REPLY, PING
from tests.reliability.conftest import Upstream
from tests.reliability.helpers import (
    OP_COMPRESSED,
    ROOT,
    STRESS,
    body_section,
    connect,
    error_or_close,
    header,
    is_closed,
    message,
    op_msg_raw,
    ping_latencies,
    recv_message,
    reply_doc,
    report,
    response_to,
    rss_kb,
    scaled,
    summary,
    write_config,
)

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)


def test_the_corpus_has_75_decode_errors() -> None:
    assert len(DECODE_ERRORS) == 75, "the bson-corpus changed: update R1's expectations"


# -- R1 ------------------------------------------------------------------------------------


def test_r1_bson_decode_errors_are_refused_before_the_upstream(guarded: ProxyProcess, upstream: Upstream) -> None:
    outcomes: dict[str, int] = {}
    for i, (name, bad) in enumerate(DECODE_ERRORS):
        rid = 1000 + i
        with connect(guarded.port) as s:
            s.sendall(op_msg_raw(b"\x00" + bad, request_id=rid))
            outcome = error_or_close(s, rid)
        assert outcome == "error 29005", f"{name}: {outcome}"  # answered, never a close (issue 15)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        if i % 15 == 14 or i == len(DECODE_ERRORS) - 1:
            upstream.assert_nothing()
    report("R1", cases=len(DECODE_ERRORS), outcomes=outcomes)


# -- R2 ------------------------------------------------------------------------------------


def test_r2_negative_cases_get_an_error_or_a_close(guarded: ProxyProcess, upstream: Upstream) -> None:
    outcomes: dict[str, str] = {}
    for name, bad in NEGATIVE.items():
        with connect(guarded.port) as s:
            s.sendall(bad)
            outcome = error_or_close(s, 7)
        # a frame with a sound length is answered; legacy writes read no reply: closed (issue 15)
        expected = ("closed",) if name in NO_REPLY else ("error 29005", "error 29006")
        assert outcome in expected, f"{name}: {outcome}"
        outcomes[name] = outcome
    upstream.assert_nothing()
    report("R2", cases=len(outcomes), outcomes=outcomes)


def test_r2_unsupported_opcode_keeps_the_connection(guarded: ProxyProcess, upstream: Upstream) -> None:
    """An OP_GET_MORE gets an OP_REPLY error and the connection goes on serving."""
    with connect(guarded.port) as s:
        s.sendall(NEGATIVE["OP_GET_MORE"])
        assert error_or_close(s, 7) == f"error {29006}"
        s.sendall(op_msg_raw(body_section(PING), 9))
        reply = recv_message(s)
        assert response_to(reply) == 9 and reply_doc(reply)["ok"] == 1
    assert len(upstream.new_messages()) == 1  # only the ping


def test_r2_well_behaved_clients_p99_under_attack(
    proxy_factory: Callable[..., ProxyProcess], ferretdb: object, tmp_path: Path
) -> None:
    """16 clients ping through the proxy to FerretDB, alone and while another process
    throws every negative case at the proxy on fresh connections. Measured and
    reported; asserted loosely in CI (<5x, a 2-core shared machine is noisy), at
    the issue's bound (<1.1x) under STRESS=1. A figure, not a timed test."""
    p = proxy_factory(write_config(tmp_path / "open.yaml"))
    n = scaled(150, 3000)
    ping_latencies(p.port, 16, 20)  # warm up
    base = ping_latencies(p.port, 16, n)
    attack = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability.attack", "negative", str(p.port), str(600)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
    )
    try:
        time.sleep(0.3)
        loaded = ping_latencies(p.port, 16, n)
    finally:
        attack.terminate()
        out, _ = attack.communicate(timeout=20)
    sent = int(out.split()[-1]) if out.strip() else 0
    b, l_ = summary(base), summary(loaded)
    ratio = l_["p99_ms"] / b["p99_ms"]
    report("R2-p99", baseline=b, under_attack=l_, p99_ratio=round(ratio, 3), bad_messages_sent=sent)
    assert sent > 0, "the attacker sent nothing"
    assert p.proc is not None and p.proc.poll() is None
    assert ratio < (1.10 if STRESS else 5.0), f"p99 moved {ratio:.2f}x"


# -- R3 ------------------------------------------------------------------------------------

LENGTHS = {"0": 0, "15": 15, "-1": -1, "-2**31": -(2**31), "48,000,001": 48_000_001, "2**31-1": 2**31 - 1}


@pytest.mark.parametrize("name", list(LENGTHS))
def test_r3_bad_length_prefix_is_refused_before_allocation(
    name: str, guarded: ProxyProcess, upstream: Upstream
) -> None:
    length = LENGTHS[name]
    bad = header(length, 7, 2013) + b"\x00" * 64

    def attempt() -> None:
        with connect(guarded.port) as s:
            s.sendall(bad)
            assert is_closed(s, 5), "the proxy kept a connection announcing a bad length"

    assert guarded.proc is not None
    for _ in range(5):
        attempt()  # warm up: the code paths, the log line
    before = rss_kb(guarded.proc.pid)
    repeats = scaled(40, 1000)
    for _ in range(repeats):
        attempt()
    grown = rss_kb(guarded.proc.pid) - before
    report("R3", length=name, repeats=repeats, rss_growth_kb=grown)
    assert grown < 1024, f"RSS grew {grown} KB"
    upstream.assert_nothing()


def test_r3_huge_uncompressed_size_is_refused_before_allocation(guarded: ProxyProcess, upstream: Upstream) -> None:
    assert guarded.proc is not None
    bomb = zlib.compress(b"\x00" * 40_000_000, 9)  # ~40 KB that would inflate to 40 MB
    cases = [
        message(OP_COMPRESSED, struct.pack("<iiB", 2013, 2**31 - 1, 2) + bomb, 7),
        message(OP_COMPRESSED, struct.pack("<iiB", 2013, 48_000_000, 2) + bomb, 7),
        message(OP_COMPRESSED, struct.pack("<iiB", 2013, -5, 2) + bomb, 7),
        message(OP_COMPRESSED, struct.pack("<iiB", 2013, 100, 2) + bomb, 7),  # says 100, inflates to 40 MB
    ]
    before = rss_kb(guarded.proc.pid)
    for bad in cases * scaled(3, 50):
        with connect(guarded.port) as s:
            s.sendall(bad)
            assert error_or_close(s, 7) == "error 29005"  # the frame is sound: answered (issue 15)
    grown = rss_kb(guarded.proc.pid) - before
    report("R3-compressed", cases=len(cases), rss_growth_kb=grown)
    assert grown < 1024, f"RSS grew {grown} KB"
    upstream.assert_nothing()


def test_the_recorder_sees_what_is_forwarded(guarded: ProxyProcess, upstream: Upstream) -> None:
    """The positive control of every 'nothing reached the upstream' above."""
    allowed = op_msg_raw(body_section(FIND), 11)
    with connect(guarded.port) as s:
        s.sendall(allowed)
        reply = recv_message(s)
    assert response_to(reply) == 11 and reply_doc(reply)["ok"] == 1
    assert upstream.new_messages() == [allowed]
