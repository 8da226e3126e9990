"""The admin side of the relay's events: metrics, the shadow report, the traffic
profile, user names.

:class:`AdminHooks` is the :class:`~scalyproxy.server.hooks.Hooks` the running
proxy uses. Every method is a few dictionary lookups and a counter increment
(the histogram observations and the profile row's figures in C: ``_scan.Series``,
``_scan.RowOps``), and none raises into the relay. With the profile on, :meth:`AdminHooks.command`
returns the command's profile row (:mod:`scalyproxy.evidence.recorder`), which
the relay hands back to :meth:`AdminHooks.round_trip` with the latency.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scalyproxy.admin.auth import user_of
from scalyproxy.admin.metrics import Metrics
from scalyproxy.admin.report import ShadowReport
from scalyproxy.evidence.recorder import Recorder
from scalyproxy.evidence.table import Row, observe_row
from scalyproxy.logs import log
from scalyproxy.policy import Finding, Verdict
from scalyproxy.server.hooks import Hooks
from scalyproxy.wire.errors import ProtocolError

AUTH_COMMANDS = frozenset({"saslStart", "authenticate"})


def _user(view: Any) -> str | None:
    """The user an auth command names, for the logs; None when it does not read one way."""
    try:
        return user_of(view.body)
    except ProtocolError:  # a repeated key or a string that is not UTF-8 (wire.ambiguous)
        return None


class AdminHooks(Hooks):
    def __init__(self, metrics: Metrics, report: ShadowReport, recorder: Recorder | None = None) -> None:
        self.metrics = metrics
        self.report = report
        self.recorder = recorder  # None: the profile is off
        self._open_clients: set[str] = set()
        self._commands = metrics.commands.values
        self._labels: dict[tuple[str, str | None], tuple[str, str]] = {}  # (command, ns) -> bounded labels
        self._command_keys: dict[tuple[str, str | None, str], tuple[str, ...]] = {}  # raw -> label values
        self._allowed_keys: dict[int, tuple[Verdict, tuple[str, ...], bool]] = {}  # id -> (verdict, labels, plain)
        self._observe_proxy_seconds = metrics.proxy_seconds.observer()
        self._round_trip_observers: dict[str, Callable[[float], None]] = {}  # command -> its series' observe

    # -- connections ------------------------------------------------------------------

    def client_opened(self, peer: str) -> None:
        self._open_clients.add(peer)
        self.metrics.client_connections.set(len(self._open_clients))

    def client_closed(self, peer: str) -> None:
        # the relay also reports a close for connections it refused at accept (never opened)
        if peer in self._open_clients:
            self._open_clients.discard(peer)
            self.metrics.client_connections.set(len(self._open_clients))

    def client_rejected(self, peer: str, reason: str) -> None:
        self.metrics.client_rejected.labels(self.metrics.rejected_reason(reason)).inc()

    def upstream_opened(self, address: str) -> None:
        self.metrics.upstream_connections.inc()

    def upstream_closed(self, address: str) -> None:
        self.metrics.upstream_connections.dec()

    def upstream_connect_failed(self, address: str, reason: str) -> None:
        self.metrics.upstream_connect_failures.labels(self.metrics.host(address)).inc()

    def protocol_error(self, kind: str) -> None:
        self.metrics.protocol_errors.labels(self.metrics.protocol_error_kind(kind)).inc()

    # -- commands ---------------------------------------------------------------------

    def handshake(self, conn: Any, view: Any) -> None:
        if getattr(conn, "user", None) is None:
            conn.user = _user(view)

    def _bounded(self, command: str, ns: str | None) -> tuple[str, str]:
        labels = self._labels.get((command, ns))
        if labels is None:
            labels = (self.metrics.command(command), self.metrics.namespace(ns))
            if len(self._labels) < 4096:  # raw names are client-chosen: the cache is bounded too
                self._labels[(command, ns)] = labels
        return labels

    def command(self, conn: Any, view: Any, verdict: Any, proxy_seconds: float, data: Any) -> Any:
        v: Verdict = verdict
        hit = self._allowed_keys.get(id(v))
        if hit is not None and hit[0] is v:  # an allowed verdict of the engine's cache, seen before
            key, plain = hit[1], hit[2]
        else:
            key, plain = self._command_key(v), False
        counts = self._commands
        counts[key] = counts.get(key, 0) + 1
        self._observe_proxy_seconds(proxy_seconds)
        if not plain:
            if v.marker_used:
                self.metrics.allow_marker_used.inc((key[1],))
            if v.command in AUTH_COMMANDS and getattr(conn, "user", None) is None and view is not None:
                conn.user = _user(view)
        recorder = self.recorder
        if recorder is None:
            return v.command
        try:
            if plain and view is None:  # the fast path's: its row counted in C once it exists
                return recorder.record_allowed(conn.app_name, v, data)
            return recorder.record(conn.app_name, view, v, data)
        except Exception as exc:  # the profile must never cost a command
            errors = self.metrics.profile_errors
            errors.inc()
            if errors.get() in (1, 10, 100) or errors.get() % 1000 == 0:  # a bug: said, not repeated per command
                log.error("internal_error", error=f"profile: {exc!r}", count=int(errors.get()))
            return v.command

    def _command_key(self, v: Verdict) -> tuple[str, ...]:
        namespaces = v.namespaces
        allowed = v.refusal is None and not v.warnings
        raw = (v.command, namespaces[0] if namespaces else None,
               "allowed" if allowed else "refused" if v.refusal else "warned")
        key = self._command_keys.get(raw)
        if key is None:
            key = (*self._bounded(raw[0], raw[1]), raw[2])
            if len(self._command_keys) < 4096:
                self._command_keys[raw] = key
        if allowed and len(self._allowed_keys) < 4096:
            # allowed verdicts come from the engine's bounded cache and are reused: keyed by
            # identity (the entry keeps the verdict alive, so its id is not reused meanwhile);
            # plain: nothing more to do for it than count it (no marker, not an auth command)
            plain = not v.marker_used and v.command not in AUTH_COMMANDS
            self._allowed_keys[id(v)] = (v, key, plain)
        return key

    def round_trip(self, tag: Any, seconds: float) -> None:
        if tag.__class__ is Row:  # a profile row (see command)
            row: Row = tag
            command = row.command or "other"
            if row.retired:  # its table went to the sink meanwhile: never touch it again
                recorder = self.recorder
                row = recorder.successor(row) if recorder is not None else None  # type: ignore[assignment]
            if row is not None:
                observe_row(row, seconds)
        else:
            command = tag
        observe = self._round_trip_observers.get(command)
        if observe is None:
            observe = self.metrics.round_trip_seconds.observer((self._bounded(command, None)[0],))
            if len(self._round_trip_observers) < 4096:
                self._round_trip_observers[command] = observe
        observe(seconds)

    def finding(self, conn: Any, view: Any, finding: Finding, enforced: bool) -> None:
        m = self.metrics
        counter = m.refusals if enforced else m.warnings
        counter.inc((finding.rule, self._bounded(finding.command, finding.namespace)[1]))
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
        """Namespaces may have changed: cached label values are recomputed."""
        self._labels.clear()
        self._command_keys.clear()
        self._allowed_keys.clear()
        self._round_trip_observers.clear()
