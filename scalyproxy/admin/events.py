"""The admin side of the relay's events: metrics, the shadow report, user names.

:class:`AdminHooks` is the :class:`~scalyproxy.server.hooks.Hooks` the running
proxy uses. Every method is a few dictionary lookups and a counter increment,
and none raises into the relay.
"""

from __future__ import annotations

from typing import Any

from scalyproxy.admin.auth import user_of
from scalyproxy.admin.metrics import Metrics
from scalyproxy.admin.report import ShadowReport
from scalyproxy.policy import Finding, Verdict
from scalyproxy.server.hooks import Hooks

AUTH_COMMANDS = frozenset({"saslStart", "authenticate"})


class AdminHooks(Hooks):
    def __init__(self, metrics: Metrics, report: ShadowReport) -> None:
        self.metrics = metrics
        self.report = report
        m = metrics
        self._bytes_in = m.bytes_in
        self._bytes_out = m.bytes_out
        self._proxy_seconds = m.proxy_seconds
        self._commands: dict[tuple[str, str | None, str], Any] = {}  # label children, by raw key

    # -- connections ------------------------------------------------------------------

    def client_opened(self, peer: str) -> None:
        self.metrics.client_connections.inc()

    def client_closed(self, peer: str) -> None:
        self.metrics.client_connections.dec()

    def client_rejected(self, peer: str, reason: str) -> None:
        self.metrics.client_rejected.labels(self.metrics.rejected_reason(reason)).inc()

    def upstream_opened(self, address: str) -> None:
        self.metrics.upstream_connections.inc()

    def upstream_closed(self, address: str) -> None:
        self.metrics.upstream_connections.dec()

    def upstream_connect_failed(self, address: str, reason: str) -> None:
        self.metrics.upstream_connect_failures.labels(self.metrics.host(address)).inc()

    def bytes_in(self, n: int) -> None:
        self._bytes_in.inc(n)

    def bytes_out(self, n: int) -> None:
        self._bytes_out.inc(n)

    def protocol_error(self, kind: str) -> None:
        self.metrics.protocol_errors.labels(self.metrics.protocol_error_kind(kind)).inc()

    # -- commands ---------------------------------------------------------------------

    def handshake(self, conn: Any, view: Any) -> None:
        if getattr(conn, "user", None) is None:
            conn.user = user_of(view.body)

    def command(self, conn: Any, view: Any, verdict: Any, proxy_seconds: float) -> None:
        v: Verdict = verdict
        ns = v.namespaces[0] if v.namespaces else None
        outcome = "refused" if v.refusal is not None else ("warned" if v.warnings else "allowed")
        key = (v.command, ns, outcome)
        child = self._commands.get(key)
        if child is None:
            m = self.metrics
            child = m.commands.labels(m.command(v.command), m.namespace(ns), outcome)
            if len(self._commands) < 4096:
                self._commands[key] = child
        child.inc()
        self._proxy_seconds.observe(proxy_seconds)
        if v.marker_used:
            self.metrics.allow_marker_used.labels(self.metrics.namespace(ns)).inc()
        if v.command in AUTH_COMMANDS and getattr(conn, "user", None) is None:
            conn.user = user_of(view.body)

    def round_trip(self, command: str, seconds: float) -> None:
        self.metrics.round_trip_seconds.labels(self.metrics.command(command)).observe(seconds)

    def finding(self, conn: Any, view: Any, finding: Finding, enforced: bool) -> None:
        m = self.metrics
        counter = m.refusals if enforced else m.warnings
        counter.labels(finding.rule, m.namespace(finding.namespace)).inc()
        self.report.record(
            rule=finding.rule,
            namespace=finding.namespace,
            app=getattr(conn, "app_name", None),
            shape=finding.shape,
            command=finding.command,
            code_name=finding.code_name,
            reason=finding.message,
            enforced=enforced,
        )

    def config_loaded(self) -> None:
        """Namespaces may have changed: cached label children are recomputed."""
        self._commands.clear()
