"""The two small interfaces the server layer is wired by.

:class:`ProxyState` is what a connection reads from the proxy that owns it
(:class:`~scalyproxy.server.proxy.Proxy` is one; a test or a worker process
may bring another). :class:`Connection` is what the decision path
(:mod:`~scalyproxy.server.handshake`, :mod:`~scalyproxy.server.refusal`)
needs from a client connection (:class:`~scalyproxy.server.relay.ClientConnection`
is one). So the modules point one way::

    context  <-  handshake, refusal  <-  relay  <-  proxy

and none imports the proxy, or a module that imports it.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Protocol

from scalyproxy.config import ProxyConfig
from scalyproxy.policy import Engine, Finding
from scalyproxy.server.hooks import Hooks
from scalyproxy.server.stream import ReplyTracker
from scalyproxy.server.upstream import UpstreamPool
from scalyproxy.wire.command import CommandView
from scalyproxy.wire.framer import Frame


class ProxyState(Protocol):
    """What every connection reads from its proxy, at each command (a reload swaps
    ``config`` and ``engine`` between two commands)."""

    config: ProxyConfig
    engine: Engine
    upstreams: UpstreamPool
    hooks: Hooks
    compressors: frozenset[str]
    #: bytes read from and written to clients (plain ints: the relay adds to them per chunk, the
    #: metrics read them when scraped)
    bytes_in: int
    bytes_out: int

    def admit(self, conn: Any) -> bool:
        """Take a new connection in (False: refuse it, e.g. max_connections)."""

    def forget(self, conn: Any) -> bool:
        """A connection closed; whether it had been admitted."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a task the proxy keeps track of (and cancels at shutdown)."""

    def next_id(self) -> int:
        """A requestID for a message the proxy makes itself."""

    def report_refusal(self, conn: Any, view: CommandView, finding: Finding, enforced: bool) -> None:
        """Log and count one refusal (or, in warn mode, a warning)."""


class Connection(Protocol):
    """What the handshake and refusal paths use of a client connection."""

    @property
    def proxy(self) -> ProxyState: ...

    @property
    def peer(self) -> str: ...

    app_name: str | None
    tracker: ReplyTracker

    def forward(self, frame: Frame, view: CommandView, now: float | None = None) -> None:
        """Send the original bytes of a request upstream."""

    def forward_bytes(self, data: bytes, view: CommandView) -> None:
        """Send bytes the proxy rewrote upstream, in place of ``view``'s request."""

    def send_own_reply(self, reply: bytes) -> None:
        """Send a reply the proxy made, at a message boundary of the upstream stream."""

    def close(self) -> None:
        """Close the client connection (and its upstream connection)."""
