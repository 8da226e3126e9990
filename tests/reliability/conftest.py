"""Fixtures of the reliability tests: a recording upstream and the guard in front of it.

The recording upstream is tests/scripted_peer.py: the real server (FerretDB)
cannot tell us what reached it byte for byte, nor be stalled or made to lie.
Tests that need the real server use the session's FerretDB (``ferretdb``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import BLOG_CONFIG, ProxyProcess
from tests.reliability.helpers import connect, op_msg, recv_message, reply_doc, response_to
from tests.scripted_peer import ScriptedPeer


@pytest.fixture(scope="module")
def peer() -> Iterator[ScriptedPeer]:
    """A scripted upstream that records every message it receives."""
    with ScriptedPeer() as p:
        yield p
        # let connections the proxy is still opening reach their threads before the
        # peer closes them (ScriptedPeer._serve fails on a socket closed under it)
        time.sleep(0.5)


@pytest.fixture(scope="module")
def guarded(proxy_factory: Callable[..., ProxyProcess], peer: ScriptedPeer) -> ProxyProcess:
    """The proxy with config/blog.yaml in front of the recording peer."""
    return proxy_factory(BLOG_CONFIG, upstream=peer.uri)


class Upstream:
    """What reached the recording peer since the last mark, checked with a positive control."""

    def __init__(self, proxy: ProxyProcess, peer: ScriptedPeer) -> None:
        self.proxy, self.peer = proxy, peer
        self.mark = len(peer.received)

    def reset(self) -> None:
        self.mark = len(self.peer.received)

    def new_messages(self) -> list[bytes]:
        """Messages received since the mark, after a control ping has gone through.

        The control proves the recorder works and gives a forwarded bad message
        time to arrive; it is removed from the result.
        """
        time.sleep(0.02)
        control = op_msg({"ping": 1, "$db": "admin", "comment": "control"}, request_id=424242)
        with connect(self.proxy.port) as s:
            s.sendall(control)
            reply = recv_message(s)
        assert response_to(reply) == 424242 and reply_doc(reply)["ok"] == 1
        deadline = time.monotonic() + 5
        while control not in self.peer.received[self.mark :] and time.monotonic() < deadline:
            time.sleep(0.005)
        got = [m for m in self.peer.received[self.mark :] if m != control]
        assert len(got) < len(self.peer.received) - self.mark, "the control ping never reached the upstream"
        self.reset()
        return got

    def assert_nothing(self) -> None:
        got = self.new_messages()
        assert got == [], f"{len(got)} message(s) reached the upstream: {[m[:64] for m in got]}"
        assert self.proxy.proc is not None and self.proxy.proc.poll() is None, "the proxy died"


@pytest.fixture()
def upstream(guarded: ProxyProcess, peer: ScriptedPeer) -> Upstream:
    return Upstream(guarded, peer)
