"""Limits and shutdown of the relay: max connections, idle and read timeouts,
SIGTERM with a request in flight. Real proxy processes over real sockets; the
slow upstream is the scripted peer (a real server cannot be told to be slow)."""

from __future__ import annotations

import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from scalyproxy.wire.framer import Frame
from scalyproxy.wire.op_msg import encode_op_msg
from tests.conftest import ProxyProcess
from tests.integration.test_relay_scripted import recv_message, reply_body
from tests.scripted_peer import ScriptedPeer, default_handler, ok_reply

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

LIMITS_CONFIG = """\
listen: 127.0.0.1:27017
upstream: mongodb://127.0.0.1:27018
limits:
  max_connections: 3
  idle_timeout_s: 1
  message_read_timeout_s: 1
  connect_timeout_s: 2
"""


@pytest.fixture()
def limits_config(tmp_path: Path) -> Path:
    path = tmp_path / "limits.yaml"
    path.write_text(LIMITS_CONFIG)
    return path


def ping(sock: socket.socket, request_id: int) -> dict[str, Any]:
    sock.sendall(encode_op_msg({"ping": 1, "$db": "admin"}, request_id=request_id))
    return reply_body(recv_message(sock))


def closed_by_peer(sock: socket.socket, within: float) -> bool:
    sock.settimeout(within)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def answers(sock: socket.socket, request_id: int) -> bool:
    """A ping on ``sock`` is answered (True), or the proxy closed the connection (False)."""
    sock.settimeout(5)
    try:
        return ping(sock, request_id)["ok"] == 1.0
    except (ConnectionError, BrokenPipeError):
        return False


def test_max_connections(proxy_factory: Callable[..., ProxyProcess], limits_config: Path, workers: int) -> None:
    """max_connections (3) holds per process: with workers, each worker admits 3; of 3 x workers + 1
    connections at least one is refused (pigeonhole), and the admitted ones are unaffected."""
    with ScriptedPeer() as peer:
        p = proxy_factory(limits_config, upstream=peer.uri)
        socks = [socket.create_connection(("127.0.0.1", p.port), timeout=5) for _ in range(3 * workers)]
        try:
            # one process admits all 3; with workers, those the kernel sent to a full worker are
            # closed (the ping meets EOF) and the others answer
            admitted = [s for i, s in enumerate(socks) if answers(s, i + 1)]
            assert len(admitted) == 3 if workers == 1 else len(admitted) >= 3
            extras = [socket.create_connection(("127.0.0.1", p.port), timeout=5)
                      for _ in range(3 * workers + 1 - len(admitted))]
            socks += extras
            # pinged rather than waited on: idle_timeout_s (1) would close the admitted ones meanwhile
            assert not all([answers(s, 50 + i) for i, s in enumerate(extras)])
            assert ping(admitted[0], 100)["ok"] == 1.0  # the admitted ones are unaffected
        finally:
            for s in socks:
                s.close()
    assert '"client_rejected"' in p.log_text()


def test_idle_connection_is_closed(proxy_factory: Callable[..., ProxyProcess], limits_config: Path) -> None:
    with ScriptedPeer() as peer:
        p = proxy_factory(limits_config, upstream=peer.uri)
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            assert ping(s, 1)["ok"] == 1.0
            started = time.monotonic()
            assert closed_by_peer(s, 5)
            assert 0.8 < time.monotonic() - started < 4
    assert '"idle_timeout"' in p.log_text()


def test_stalled_message_is_cut(proxy_factory: Callable[..., ProxyProcess], limits_config: Path) -> None:
    with ScriptedPeer() as peer:
        p = proxy_factory(limits_config, upstream=peer.uri)
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            message = encode_op_msg({"ping": 1, "$db": "admin"}, request_id=5)
            s.sendall(message[:10])  # a header's worth, then nothing (slowloris)
            started = time.monotonic()
            assert closed_by_peer(s, 5)
            assert time.monotonic() - started < 4
    assert '"read_timeout"' in p.log_text()


def test_sigterm_lets_the_request_in_flight_finish(
    proxy_factory: Callable[..., ProxyProcess], limits_config: Path
) -> None:
    release = threading.Event()

    def slow(peer: ScriptedPeer, conn: socket.socket, frame: Frame, body: dict[str, Any]) -> bytes | None:
        if "slow" in body:
            release.wait(5)
            return ok_reply(frame, {"ok": 1.0, "slow": True})
        return default_handler(peer, conn, frame, body)

    with ScriptedPeer(handler=slow) as peer:
        p = proxy_factory(limits_config, upstream=peer.uri)
        assert p.proc is not None
        with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
            assert ping(s, 1)["ok"] == 1.0
            s.sendall(encode_op_msg({"slow": 1, "$db": "admin"}, request_id=2))
            time.sleep(0.3)
            p.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            # no longer accepting
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", p.port), timeout=2).close()
            release.set()
            reply = recv_message(s)
            assert struct.unpack_from("<i", reply, 8)[0] == 2
            assert reply_body(reply)["slow"] is True
        assert p.proc.wait(15) == 0
