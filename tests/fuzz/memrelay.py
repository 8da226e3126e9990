"""The relay (``ClientConnection`` + ``UpstreamConnection``) driven in memory.

No socket and no event loop: the client and upstream transports are small fakes
that record what the relay writes, so a test or a fuzzer can feed bytes to the
real protocol objects, chunk by chunk, and look at exactly what would have gone
to the upstream and back to the client. The connection is wired by hand the
way ``ClientConnection._connect_upstream`` wires it once the upstream answers.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from scalyproxy.config import load_config
from scalyproxy.logs import log
from scalyproxy.server.proxy import Proxy
from scalyproxy.server.relay import ClientConnection, UpstreamConnection

ROOT = Path(__file__).resolve().parents[2]
BLOG_CONFIG = ROOT / "config" / "blog.yaml"


class FakeTransport:
    """Records writes; ``close`` only marks it closed (no connection_lost callback)."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: Any) -> None:
        if not self.closed:
            self.out += data

    def writelines(self, pieces: Any) -> None:
        for piece in pieces:
            self.write(piece)

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass


class LogSink(io.StringIO):
    """Where the proxy's JSON log lines go while relaying in memory."""

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.getvalue().splitlines() if line]


_PROXIES: dict[str, Proxy] = {}


def proxy_for(config_path: Path = BLOG_CONFIG) -> Proxy:
    """One Proxy object per config (never started: no listener, no loop)."""
    key = str(config_path)
    if key not in _PROXIES:
        _PROXIES[key] = Proxy(load_config(config_path))
    return _PROXIES[key]


class MemoryRelay:
    """One proxied connection whose both ends are in-memory transports."""

    def __init__(self, proxy: Proxy | None = None) -> None:
        self.proxy = proxy or proxy_for()
        self.client = FakeTransport()
        self.upstream = FakeTransport()
        conn = ClientConnection(self.proxy)
        conn.transport = self.client  # type: ignore[assignment]
        conn.peer = "memory"
        up = UpstreamConnection(conn, self.proxy.upstreams.hosts[0])
        up.connection_made(self.upstream)  # type: ignore[arg-type]
        conn.upstream = up
        self.conn = conn

    def from_client(self, data: bytes) -> None:
        self.conn.data_received(data)

    def from_upstream(self, data: bytes) -> None:
        self.conn.upstream.data_received(data)  # type: ignore[union-attr]

    @property
    def to_upstream(self) -> bytes:
        return bytes(self.upstream.out)

    @property
    def to_client(self) -> bytes:
        return bytes(self.client.out)

    @property
    def closed(self) -> bool:
        return self.client.closed


@contextmanager
def captured_logs(sink: LogSink | None = None, level: str = "error") -> Iterator[LogSink]:
    """Send the proxy's log lines (``level`` and above) to a sink for the block; restored after."""
    sink = sink if sink is not None else LogSink()
    saved = log.stream, log.threshold
    log.stream = sink
    log.set_level(level)
    try:
        yield sink
    finally:
        log.stream, log.threshold = saved
