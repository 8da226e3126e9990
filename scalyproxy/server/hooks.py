"""What the relay reports as it works: one object, many no-op methods.

The admin layer (metrics, shadow report) subclasses this; the relay calls it at
each event and never depends on what it does with them.
"""

from __future__ import annotations

from typing import Any


class Hooks:
    """Receives the relay's events. Every method must be cheap and must not raise."""

    def client_opened(self, peer: str) -> None: ...
    def client_closed(self, peer: str) -> None: ...
    def client_rejected(self, peer: str, reason: str) -> None: ...
    def upstream_opened(self, address: str) -> None: ...
    def upstream_closed(self, address: str) -> None: ...
    def upstream_connect_failed(self, address: str, reason: str) -> None: ...
    def protocol_error(self, kind: str) -> None: ...

    def command(self, conn: Any, view: Any, verdict: Any, proxy_seconds: float, data: Any) -> Any:
        """A command was decided: about to be forwarded (maybe with warnings) or refused.

        ``view`` is None for a command the C fast path allowed on its bytes (a
        targeted find, insert, update, delete, findAndModify, count, distinct or
        aggregate): no view was built; ``verdict`` says what it was; ``data`` is the
        message's bytes. What it returns is kept with a forwarded request and handed
        to :meth:`round_trip` when its reply comes (the admin hooks return the
        request's profile row)."""
        return verdict.command

    def round_trip(self, tag: Any, seconds: float) -> None:
        """A reply came back for a forwarded request, ``seconds`` after it went out;
        ``tag`` is what :meth:`command` returned for it (the command name for the handshake)."""

    def handshake(self, conn: Any, view: Any) -> None:
        """A hello/isMaster from the client (it may carry ``speculativeAuthenticate``)."""

    def finding(self, conn: Any, view: Any, finding: Any, enforced: bool) -> None:
        """One refusal (``enforced``) or warning, called by ``Proxy.report_refusal``."""
