"""limits.upstream_timeout_s, in memory: which connections the sweeper finds stalled.

The relay remembers each forwarded request that expects a reply until its whole
reply has come back; a connection is stalled when the oldest such request and
the last upstream byte are both older than the timeout (and the proxy itself is
not holding the upstream back for a slow client). The end-to-end version is R6.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scalyproxy.server.proxy import Proxy
from tests.fuzz.memrelay import MemoryRelay, captured_logs, proxy_for
from tests.reliability.helpers import op_msg, write_config

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

MORE_TO_COME = 1 << 1


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with captured_logs(level="error"):
        yield


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Proxy:
    path: Path = tmp_path_factory.mktemp("timeout") / "t.yaml"
    return proxy_for(write_config(path, upstream_timeout_s=1))


def reply(to: int, payload: bytes = b"") -> bytes:
    """An OP_MSG reply to request ``to``."""
    msg = op_msg({"ok": 1.0, "p": payload}, 900)
    return msg[:8] + to.to_bytes(4, "little", signed=True) + msg[12:]


def test_a_request_without_reply_stalls(proxy: Proxy) -> None:
    relay = MemoryRelay(proxy)
    relay.from_client(op_msg({"ping": 1, "$db": "admin"}, 5))
    now = time.monotonic()
    assert relay.to_upstream  # forwarded
    assert not relay.conn.upstream_stalled(now + 0.5, 1)
    assert relay.conn.upstream_stalled(now + 1.5, 1)


def test_a_whole_reply_ends_the_wait(proxy: Proxy) -> None:
    relay = MemoryRelay(proxy)
    relay.from_client(op_msg({"ping": 1, "$db": "admin"}, 5))
    relay.from_upstream(reply(5))
    assert not relay.conn.upstream_stalled(time.monotonic() + 5, 1)


def test_a_reply_stalled_half_way_still_counts(proxy: Proxy) -> None:
    relay = MemoryRelay(proxy)
    relay.from_client(op_msg({"ping": 1, "$db": "admin"}, 5))
    whole = reply(5, b"x" * 1000)
    relay.from_upstream(whole[:100])
    now = time.monotonic()
    assert not relay.conn.upstream_stalled(now + 0.5, 1)
    assert relay.conn.upstream_stalled(now + 1.5, 1)
    relay.from_upstream(whole[100:])
    assert not relay.conn.upstream_stalled(now + 5, 1)


def test_pipelined_requests_wait_for_the_last_reply(proxy: Proxy) -> None:
    relay = MemoryRelay(proxy)
    relay.from_client(op_msg({"ping": 1, "$db": "admin"}, 5) + op_msg({"ping": 1, "$db": "admin"}, 6))
    relay.from_upstream(reply(5))
    assert relay.conn.upstream_stalled(time.monotonic() + 1.5, 1)
    relay.from_upstream(reply(6))
    assert not relay.conn.upstream_stalled(time.monotonic() + 5, 1)


def test_more_to_come_requests_wait_for_nothing(proxy: Proxy) -> None:
    relay = MemoryRelay(proxy)
    relay.from_client(op_msg({"insert": "c", "documents": [{}], "$db": "d"}, 5, MORE_TO_COME))
    assert relay.to_upstream
    assert not relay.conn.upstream_stalled(time.monotonic() + 5, 1)


def test_a_slow_client_is_not_an_upstream_stall(proxy: Proxy) -> None:
    relay = MemoryRelay(proxy)
    relay.from_client(op_msg({"ping": 1, "$db": "admin"}, 5))
    relay.conn.pause_writing()  # the client's socket buffer is full: we stop reading the upstream
    assert not relay.conn.upstream_stalled(time.monotonic() + 5, 1)
    relay.conn.resume_writing()
    now = time.monotonic()
    assert not relay.conn.upstream_stalled(now + 0.5, 1)
    assert relay.conn.upstream_stalled(now + 1.5, 1)


def test_without_a_timeout_nothing_is_remembered() -> None:
    relay = MemoryRelay(proxy_for())  # blog.yaml: upstream_timeout_s 0
    relay.from_client(op_msg({"ping": 1, "$db": "admin"}, 5))
    assert relay.conn.awaiting == {}
