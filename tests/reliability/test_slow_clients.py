"""R7: 1,000 slowloris clients and clients that ask for 48 MB replies and never read.

Slowloris clients send a header announcing a message, then nothing: the proxy
must close each within ``limits.message_read_timeout_s``. Non-readers leave the
proxy holding a 48 MB reply it cannot deliver: flow control must stop it
reading the upstream, so its memory stays under the documented bound (256 MB).
Meanwhile fast clients ping; their p99 is compared with a baseline measured in
the same run (loosely in CI, at the issue's 1.2x under STRESS=1: a figure, not
a timed test). The upstream is tests/reliability/bigpeer.py (FerretDB cannot
send 48 MB replies).
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ProxyProcess
from tests.reliability.bigpeer import BigReplyPeer
from tests.reliability.helpers import (
    STRESS,
    connect,
    hwm_kb,
    op_msg,
    ping_latencies,
    report,
    rss_kb,
    scaled,
    summary,
    write_config,
)

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

MEMORY_BOUND_KB = 256 * 1024


def slowloris(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = connect(port)
        s.sendall(struct.pack("<iiii", 1000, i + 1, 0, 2013))  # a header announcing 1000 bytes, then nothing
        socks.append(s)
    return socks


def wait_all_closed(socks: list[socket.socket], timeout: float) -> tuple[int, float]:
    """How many of ``socks`` the peer closed within ``timeout``, and when the last one went."""
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    start = time.monotonic()
    closed, last = 0, 0.0
    while sel.get_map() and time.monotonic() - start < timeout:
        for key, _ in sel.select(0.1):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            try:
                data = sock.recv(4096)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(sock)
                closed += 1
                last = time.monotonic() - start
    sel.close()
    return closed, last


def test_r7_slowloris_and_non_readers(proxy_factory: Callable[..., ProxyProcess], tmp_path: Path) -> None:
    read_timeout = scaled(3.0, 8.0)
    n_slow = 1000
    n_big = scaled(4, 10)
    requests = scaled(150, 2000)
    with BigReplyPeer() as peer:
        cfg = write_config(tmp_path / "r7.yaml", message_read_timeout_s=read_timeout, max_connections=5000)
        proxy = proxy_factory(cfg, upstream=peer.uri)
        assert proxy.proc is not None
        pid = proxy.proc.pid
        ping_latencies(proxy.port, 8, 20)  # warm up
        base = ping_latencies(proxy.port, 8, requests)
        rss_before = rss_kb(pid)

        non_readers = []
        for i in range(n_big):
            s = connect(proxy.port)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.sendall(b"".join(op_msg({"find": "big", "$db": "r7"}, 100 + i * 10 + k) for k in range(3)))
            non_readers.append(s)
        deadline = time.monotonic() + 10
        while peer.big_requests < n_big and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # let the replies pile up against the non-readers

        started = time.monotonic()
        burst: list[float] = []
        pinger = threading.Thread(target=lambda: burst.extend(ping_latencies(proxy.port, 4, 50)))
        pinger.start()  # during the connection burst: reported, not asserted
        slow = slowloris(proxy.port, n_slow)
        opened_in = time.monotonic() - started
        pinger.join(60)
        time.sleep(0.3)  # the 1,000 connections are established and silent: the steady state
        loaded = ping_latencies(proxy.port, 8, requests)
        loaded_until = time.monotonic() - started
        closed, last = wait_all_closed(slow, read_timeout + 10)
        last += loaded_until  # seconds from the first slowloris connection to the last close
        rss_peak = hwm_kb(pid)
        rss_after = rss_kb(pid)
        still_open = sum(1 for s in non_readers if s.fileno() >= 0)
        for s in slow + non_readers:
            s.close()
        b, l_ = summary(base), summary(loaded)
        ratio = l_["p99_ms"] / b["p99_ms"]
        report(
            "R7",
            slowloris_clients=n_slow,
            slowloris_closed=closed,
            opened_in_s=round(opened_in, 2),
            last_closed_after_s=round(last, 2),
            message_read_timeout_s=read_timeout,
            non_readers=n_big,
            big_replies_requested=peer.big_requests,
            proxy_rss_before_kb=rss_before,
            proxy_rss_after_kb=rss_after,
            proxy_rss_peak_kb=rss_peak,
            baseline=b,
            under_load=l_,
            p99_ratio=round(ratio, 3),
            during_connection_burst=summary(burst),
            measured_until_s=round(loaded_until, 2),
        )
        assert peer.big_requests >= n_big, "the non-readers' requests never reached the upstream"
        assert closed == n_slow, f"{n_slow - closed} slowloris clients were never closed"
        assert last <= opened_in + read_timeout + 3, f"the last slowloris client went after {last:.1f}s"
        assert proxy.log_text().count('"read_timeout"') == n_slow, "not closed by message_read_timeout_s"
        assert still_open == n_big
        assert rss_peak <= MEMORY_BOUND_KB, f"proxy peak RSS {rss_peak} KB"
        assert proxy.proc.poll() is None
        assert loaded_until < read_timeout, "the steady-state window ran past the read timeout"
        assert ratio <= (1.2 if STRESS else 5.0), f"fast clients' p99 moved {ratio:.2f}x"
