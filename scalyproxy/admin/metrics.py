"""Every metric the proxy exposes, declared in one list, in a registry of its own.

Label values are bounded: namespaces are those of the loaded config (plus
``other`` and ``none`` for commands that address no collection), command names
come from a known list (plus ``other``), protocol-error kinds from the codec's
closed set (plus ``other``), upstream hosts from the upstream URI. Nothing a
client sends can create a new time series.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import generate_latest

from scalyproxy.policy.commands import (
    COLLECTION_COMMANDS,
    FULL_NAMESPACE_COMMANDS,
    WRITE_COMMANDS,
    canonical,
)
from scalyproxy.wire.errors import KINDS

OTHER: Final = "other"
NO_NAMESPACE: Final = "none"
PREFIX: Final = "scalyproxy_"

#: Commands that get their own label value; every other name counts as ``other``.
KNOWN_COMMANDS: Final[frozenset[str]] = frozenset(
    COLLECTION_COMMANDS
    | FULL_NAMESPACE_COMMANDS
    | WRITE_COMMANDS
    | {
        "abortTransaction",
        "authenticate",
        "buildInfo",
        "bulkWrite",
        "commitTransaction",
        "connectionStatus",
        "currentOp",
        "dbStats",
        "endSessions",
        "explain",
        "getLog",
        "getMore",
        "getParameter",
        "hello",
        "hostInfo",
        "isMaster",
        "killAllSessions",
        "killOp",
        "killSessions",
        "listCollections",
        "listDatabases",
        "logout",
        "ping",
        "refreshSessions",
        "saslContinue",
        "saslStart",
        "serverStatus",
        "startSession",
        "whatsmyuri",
    }
)

#: Protocol-error kinds: the codec's set, the relay's own, and the upstream's.
KNOWN_PROTOCOL_ERRORS: Final[frozenset[str]] = frozenset(
    KINDS
    | {"read_timeout", "internal", "legacy_opcode"}
    | {"upstream_" + k for k in KINDS}
)

PROXY_BUCKETS: Final = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25,
)
ROUND_TRIP_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)


@dataclass(frozen=True)
class Spec:
    """One metric: its kind, name (without the ``scalyproxy_`` prefix), help and labels."""

    kind: type[Counter] | type[Gauge] | type[Histogram] | type[Info]
    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


#: The one list of every metric (Envoy style). Counters get ``_total`` in the exposition.
METRICS: Final[tuple[Spec, ...]] = (
    Spec(Counter, "commands", "Commands decided, by command, namespace and verdict (allowed, refused, warned)",
         ("command", "namespace", "verdict")),
    Spec(Counter, "refusals", "Refusals (rules in enforce), by rule and namespace", ("rule", "namespace")),
    Spec(Counter, "warnings", "Warnings (rules in warn: would have been refused), by rule and namespace",
         ("rule", "namespace")),
    Spec(Counter, "allow_marker_used", "Commands let through by the allow marker, by namespace", ("namespace",)),
    Spec(Histogram, "proxy_seconds", "Time the proxy adds per command (decode and decide; no upstream time)",
         buckets=PROXY_BUCKETS),
    Spec(Histogram, "round_trip_seconds", "From forwarding a request to the end of its reply, by command",
         ("command",), buckets=ROUND_TRIP_BUCKETS),
    Spec(Gauge, "client_connections", "Open client connections"),
    Spec(Counter, "client_rejected", "Client connections refused at accept, by reason", ("reason",)),
    Spec(Gauge, "upstream_connections", "Open upstream connections"),
    Spec(Counter, "upstream_connect_failures", "Failed connections to an upstream host, by host", ("host",)),
    Spec(Counter, "bytes_in", "Bytes received from clients"),
    Spec(Counter, "bytes_out", "Bytes sent to clients"),
    Spec(Counter, "protocol_errors", "Messages that could not be framed or decoded, by kind", ("kind",)),
    Spec(Counter, "config_reloads", "Config reloads, by outcome (success, failure)", ("outcome",)),
    Spec(Gauge, "config_generation", "Generation of the loaded config (1 at start, +1 per successful reload)"),
    Spec(Info, "config", "The loaded config: its file and sha256"),
    Spec(Gauge, "read_only", "1 when the loaded config has read_only: true"),
    Spec(Counter, "drift_checks", "Drift checks run, by outcome (ok, mismatch, error)", ("outcome",)),
    Spec(Gauge, "drift_mismatches", "Shard-key mismatches found by the last drift check, by namespace and kind",
         ("namespace", "kind")),
)


def _build(spec: Spec, registry: CollectorRegistry) -> Counter | Gauge | Histogram | Info:
    name = PREFIX + spec.name
    if spec.kind is Histogram:
        return Histogram(name, spec.help, spec.labels, registry=registry, buckets=spec.buckets)
    return spec.kind(name, spec.help, spec.labels, registry=registry)


class Metrics:
    """The registry and typed handles to every metric of :data:`METRICS`."""

    def __init__(self, namespaces: Iterable[str] = (), upstream_hosts: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self._all = {spec.name: _build(spec, self.registry) for spec in METRICS}
        self.namespaces: frozenset[str] = frozenset(namespaces)
        self.hosts: frozenset[str] = frozenset(upstream_hosts)
        self.commands = self._counter("commands")
        self.refusals = self._counter("refusals")
        self.warnings = self._counter("warnings")
        self.allow_marker_used = self._counter("allow_marker_used")
        self.proxy_seconds = self._histogram("proxy_seconds")
        self.round_trip_seconds = self._histogram("round_trip_seconds")
        self.client_connections = self._gauge("client_connections")
        self.client_rejected = self._counter("client_rejected")
        self.upstream_connections = self._gauge("upstream_connections")
        self.upstream_connect_failures = self._counter("upstream_connect_failures")
        self.bytes_in = self._counter("bytes_in")
        self.bytes_out = self._counter("bytes_out")
        self.protocol_errors = self._counter("protocol_errors")
        self.config_reloads = self._counter("config_reloads")
        self.config_generation = self._gauge("config_generation")
        self.config_info = self._info("config")
        self.read_only = self._gauge("read_only")
        self.drift_checks = self._counter("drift_checks")
        self.drift_mismatches = self._gauge("drift_mismatches")
        for outcome in ("success", "failure"):  # both series exist from the start, at 0
            self.config_reloads.labels(outcome)

    def _counter(self, name: str) -> Counter:
        metric = self._all[name]
        assert isinstance(metric, Counter)
        return metric

    def _gauge(self, name: str) -> Gauge:
        metric = self._all[name]
        assert isinstance(metric, Gauge)
        return metric

    def _histogram(self, name: str) -> Histogram:
        metric = self._all[name]
        assert isinstance(metric, Histogram)
        return metric

    def _info(self, name: str) -> Info:
        metric = self._all[name]
        assert isinstance(metric, Info)
        return metric

    # -- bounded label values --------------------------------------------------------

    def namespace(self, ns: str | None) -> str:
        if ns is None:
            return NO_NAMESPACE
        return ns if ns in self.namespaces else OTHER

    @staticmethod
    def command(name: str) -> str:
        name = canonical(name)
        return name if name in KNOWN_COMMANDS else OTHER

    @staticmethod
    def protocol_error_kind(kind: str) -> str:
        return kind if kind in KNOWN_PROTOCOL_ERRORS else OTHER

    def host(self, address: str) -> str:
        return address if address in self.hosts else OTHER

    @staticmethod
    def rejected_reason(reason: str) -> str:
        if reason.startswith("max_connections"):
            return "max_connections"
        if reason.startswith("shutting down"):
            return "shutting_down"
        return OTHER

    # -- config ---------------------------------------------------------------------

    def config_loaded(self, namespaces: Iterable[str], source: str | None, sha256: str,
                      read_only: bool, generation: int) -> None:
        """Record a (re)loaded config: its namespaces become label values from now on."""
        self.namespaces = frozenset(namespaces)
        self.config_generation.set(generation)
        self.config_info.info({"path": source or "", "sha256": sha256})
        self.read_only.set(1 if read_only else 0)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
