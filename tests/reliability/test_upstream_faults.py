"""R6: the upstream killed, reset, or stalled in the middle of requests, under load.

Raw-socket clients pipeline finds with unique request ids through the proxy to
the real FerretDB, across a fault-injecting link (tests/reliability/faults.py).
Each reply is checked against its request: ``responseTo`` and the document it
must carry. Checked: no reply ever reaches the wrong request; no client waits
longer than the proxy's ``limits.upstream_timeout_s`` (plus the sweeper's
period) for an error or a close; every client works again once the upstream is
back. Short in CI; ``STRESS=1``: a 30 s stall and at least 1,000,000 checked
requests.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import bson
import pymongo
import pytest

from scalyproxy.backend import FerretDB
from tests.conftest import ProxyProcess
from tests.reliability.faults import FaultLink
from tests.reliability.helpers import connect, op_msg, recv_message, report, scaled, write_config

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

DOCS = 64
SWEEP_SLACK_S = 1.5  # the sweeper runs every 0.5 s; a loaded 2-core machine adds some


@dataclass
class Tally:
    checked: int = 0
    wrong: list[str] = field(default_factory=list)
    hangs: int = 0
    closes: int = 0
    late_closes: list[float] = field(default_factory=list)
    slowest_close_s: float = 0.0
    ok_after: dict[int, int] = field(default_factory=dict)
    late_replies: list[float] = field(default_factory=list)
    limit_s: float = 0.0  # upstream_timeout_s + the sweeper's slack
    lock: threading.Lock = field(default_factory=threading.Lock)


FIND_EVERY = 8  # one request in 8 is a find whose reply names its request; the rest are pings


def expected_id(rid: int) -> int:
    return rid % DOCS


def request(rid: int) -> bytes:
    if rid % FIND_EVERY:
        return op_msg({"ping": 1, "$db": "r6"}, rid)
    return op_msg({"find": "docs", "filter": {"_id": expected_id(rid)}, "$db": "r6"}, rid)


def client_loop(index: int, port: int, timeout_s: float, stop: threading.Event, revived: threading.Event,
                tally: Tally, window: int) -> None:
    rid = index * 100_000_000
    while not stop.is_set():
        try:
            sock = connect(port, timeout=timeout_s + 5)
        except OSError:
            time.sleep(0.05)
            continue
        outstanding: dict[int, float] = {}
        try:
            while not stop.is_set():
                batch = []
                for _ in range(window):
                    rid += 1
                    batch.append(request(rid))
                    outstanding[rid] = time.monotonic()
                sock.sendall(b"".join(batch))
                while outstanding:
                    check_reply(recv_message(sock), outstanding, tally, index, revived)
        except TimeoutError:
            with tally.lock:
                tally.hangs += 1
        except (ConnectionError, OSError):
            if outstanding:
                waited = time.monotonic() - min(outstanding.values())
                with tally.lock:
                    tally.closes += 1
                    tally.slowest_close_s = max(tally.slowest_close_s, waited)
                    if waited > tally.limit_s:
                        tally.late_closes.append(round(waited, 2))
        finally:
            sock.close()


def check_reply(reply: bytes, outstanding: dict[int, float], tally: Tally, index: int,
                revived: threading.Event) -> None:
    to = struct.unpack_from("<i", reply, 8)[0]
    doc = bson.decode(reply[21:])
    if to % FIND_EVERY:
        right = doc == {"ok": 1.0}
    else:
        right = doc.get("cursor", {}).get("firstBatch") == [{"_id": expected_id(to), "v": expected_id(to) * 7}]
    with tally.lock:
        if to not in outstanding:
            tally.wrong.append(f"client {index}: reply to {to}, not one of its outstanding requests")
        elif not right:
            tally.wrong.append(f"client {index}: request {to} got {doc!r:.200}")
        else:
            tally.checked += 1
            waited = time.monotonic() - outstanding[to]
            if waited > tally.limit_s:
                tally.late_replies.append(round(waited, 2))
            if revived.is_set():
                tally.ok_after[index] = tally.ok_after.get(index, 0) + 1
    outstanding.pop(to, None)


@pytest.fixture(scope="module")
def own_ferretdb() -> object:
    """A FerretDB of this module's own (the link is cut and stalled in front of it)."""
    server = FerretDB().start()
    try:
        c: pymongo.MongoClient = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10_000)
        c.r6.docs.drop()
        c.r6.docs.insert_many([{"_id": i, "v": i * 7} for i in range(DOCS)])
        c.close()
        yield server
    finally:
        server.stop()


def test_r6_upstream_faults_under_load(
    own_ferretdb: FerretDB, proxy_factory: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    timeout_s = scaled(2.0, 10.0)
    stall_s = scaled(4.0, 30.0)
    phase_s = scaled(2.0, 20.0)
    clients = scaled(8, 16)
    target = scaled(0, 1_000_000)
    link = FaultLink((own_ferretdb.host, own_ferretdb.port))
    cfg = write_config(tmp_path / "r6.yaml", upstream_timeout_s=timeout_s, connect_timeout_s=1)
    proxy = proxy_factory(cfg, upstream=link.uri)
    stop, revived = threading.Event(), threading.Event()
    tally = Tally(limit_s=timeout_s + SWEEP_SLACK_S)
    threads = [
        threading.Thread(target=client_loop, args=(i, proxy.port, timeout_s, stop, revived, tally, 4), daemon=True)
        for i in range(clients)
    ]
    started = time.monotonic()
    try:
        for t in threads:
            t.start()
        time.sleep(phase_s)
        link.stall()
        time.sleep(stall_s)
        link.unstall()
        time.sleep(phase_s)
        link.reset()
        time.sleep(phase_s)
        link.kill()
        time.sleep(phase_s)
        link.revive()
        revived.set()
        time.sleep(phase_s)
        while tally.checked < target and time.monotonic() - started < 3000:
            time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout_s + 10)
        link.close()
    log = proxy.log_text()
    report(
        "R6",
        clients=clients,
        requests_checked=tally.checked,
        wrong_replies=len(tally.wrong),
        hangs=tally.hangs,
        closes_with_requests_in_flight=tally.closes,
        slowest_close_s=round(tally.slowest_close_s, 2),
        late_replies=len(tally.late_replies),
        faults_injected=len(link.faults),
        upstream_timeout_s=timeout_s,
        stall_s=stall_s,
        seconds=round(time.monotonic() - started, 1),
    )
    assert not any(t.is_alive() for t in threads), "a client thread is stuck"
    assert tally.wrong == [], tally.wrong[:5]
    assert tally.hangs == 0, "a client waited past the upstream timeout without an error or a close"
    assert tally.late_replies == [], f"answered later than upstream_timeout_s={timeout_s}: {tally.late_replies[:10]}"
    assert tally.late_closes == [], f"closed later than upstream_timeout_s={timeout_s}: {tally.late_closes[:10]}"
    assert tally.closes > 0, "no fault was seen by any client"
    assert '"upstream_timeout"' in log, "the stall did not trigger upstream_timeout_s"
    assert sorted(tally.ok_after) == list(range(clients)), f"clients without success after revive: {tally.ok_after}"
    assert tally.checked >= target
    assert proxy.proc is not None and proxy.proc.poll() is None


def test_r6_requests_succeed_without_faults_through_the_link(
    own_ferretdb: FerretDB, proxy_factory: Callable[..., ProxyProcess], tmp_path: Path
) -> None:
    """The control: the same clients through the same link, no fault: no close at all."""
    link = FaultLink((own_ferretdb.host, own_ferretdb.port))
    proxy = proxy_factory(write_config(tmp_path / "ok.yaml", upstream_timeout_s=2), upstream=link.uri)
    stop, revived = threading.Event(), threading.Event()
    revived.set()
    tally = Tally(limit_s=2.0 + SWEEP_SLACK_S)
    threads = [threading.Thread(target=client_loop, args=(i, proxy.port, 2.0, stop, revived, tally, 4)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.5)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        link.close()
    assert tally.checked > 100 and tally.wrong == [] and tally.closes == 0 and tally.hangs == 0

