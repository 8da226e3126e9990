"""Every metric the proxy exposes, declared in one list, in a registry of its own.

Label values are bounded: namespaces are those of the loaded config (plus
``other`` and ``none`` for commands that address no collection), command names
come from a known list (plus ``other``), protocol-error kinds from the codec's
closed set (plus ``other``), upstream hosts from the upstream URI. Nothing a
client sends can create a new time series.

Metrics touched for every command or every chunk of bytes are :class:`HotCounter`
and :class:`HotHistogram`: plain dicts of numbers (a histogram's series in C,
``_scan.Series``, when the extension is built), updated on the event loop
without a lock (an observation about 0.1 µs through :meth:`HotHistogram.observe`,
0.04 µs through the series' own ``observe``, which the hooks keep), which
prometheus_client formats at scrape time.
prometheus_client's own Counter and Histogram take 1.6 µs and 4 µs per update
(a lock, exemplars), too much for the relay's hot path. The others are
prometheus_client's Counter, Gauge and Info. Everything is read and written on
the event loop thread (the admin listener runs there too).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Info
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, HistogramMetricFamily, Metric

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


LabelValues = tuple[str, ...]


class HotCounter:
    """A counter family for the hot path: label values -> a number, formatted at scrape time."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...],
                 registry: CollectorRegistry) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.values: dict[LabelValues, float] = {} if labelnames else {(): 0}
        registry.register(self)

    def inc(self, labels: LabelValues = (), amount: float = 1) -> None:
        values = self.values
        values[labels] = values.get(labels, 0) + amount

    def get(self, labels: LabelValues = ()) -> float:
        return self.values.get(labels, 0)

    def _family(self) -> CounterMetricFamily:
        return CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for labels, value in list(self.values.items()):
            family.add_metric(labels, value)
        yield family


class _Series:
    """One series: its bucket counts and sum (the pure-Python install's; else ``_scan.Series``)."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # per bucket, not cumulative; the last one is +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: value <= bound
        self.total += value


class SeriesLike(Protocol):
    """What a histogram series shows: ``counts`` per bucket (the last one +Inf) and ``total``."""

    @property
    def counts(self) -> list[int]: ...
    @property
    def total(self) -> float: ...
    def observe(self, value: float, /) -> None: ...


try:  # the same in C: an observation without a Python frame (about 40 ns, against 200)
    from scalyproxy._scan import Series as _CSeries
except ImportError:  # pragma: no cover - the pure-Python install
    _CSeries = None  # type: ignore[assignment,misc]


def new_series(bounds: tuple[float, ...]) -> SeriesLike:
    return _Series(bounds) if _CSeries is None else _CSeries(bounds)


class HotHistogram:
    """A histogram family for the hot path: bucket counts per label values."""

    def __init__(self, name: str, documentation: str, labelnames: tuple[str, ...],
                 registry: CollectorRegistry, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation, self.labelnames = name, documentation, labelnames
        self.bounds = tuple(sorted(buckets))
        self.series: dict[LabelValues, SeriesLike] = {} if labelnames else {(): new_series(self.bounds)}
        registry.register(self)

    def observe(self, value: float, labels: LabelValues = ()) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = new_series(self.bounds)
        series.observe(value)

    def observer(self, labels: LabelValues = ()) -> Callable[[float], None]:
        """The ``observe`` of one series (made now if new): what the hooks keep and call per command."""
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = new_series(self.bounds)
        return series.observe

    def count(self, labels: LabelValues = ()) -> int:
        series = self.series.get(labels)
        return 0 if series is None else sum(series.counts)

    def _family(self) -> HistogramMetricFamily:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def describe(self) -> list[Metric]:
        return [self._family()]

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        edges = [repr(float(b)) for b in self.bounds] + ["+Inf"]
        for labels, series in list(self.series.items()):
            running, buckets = 0, []
            for edge, n in zip(edges, series.counts, strict=True):
                running += n
                buckets.append((edge, float(running)))
            family.add_metric(labels, buckets, series.total)
        yield family


@dataclass(frozen=True)
class Spec:
    """One metric: its kind, name (without the ``scalyproxy_`` prefix), help and labels."""

    kind: type[HotCounter] | type[HotHistogram] | type[Counter] | type[Gauge] | type[Info]
    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


#: The one list of every metric (Envoy style). Counters get ``_total`` in the exposition.
METRICS: Final[tuple[Spec, ...]] = (
    Spec(HotCounter, "commands", "Commands decided, by command, namespace and verdict (allowed, refused, warned)",
         ("command", "namespace", "verdict")),
    Spec(HotCounter, "refusals", "Refusals (rules in enforce), by rule and namespace", ("rule", "namespace")),
    Spec(HotCounter, "warnings", "Warnings (rules in warn: would have been refused), by rule and namespace",
         ("rule", "namespace")),
    Spec(HotCounter, "allow_marker_used", "Commands let through by the allow marker, by namespace", ("namespace",)),
    Spec(HotHistogram, "proxy_seconds", "Time the proxy adds per command (decode and decide; no upstream time)",
         buckets=PROXY_BUCKETS),
    Spec(HotHistogram, "round_trip_seconds", "From forwarding a request to the end of its reply, by command",
         ("command",), buckets=ROUND_TRIP_BUCKETS),
    Spec(Gauge, "client_connections", "Open client connections"),
    Spec(Counter, "client_rejected", "Client connections refused at accept, by reason", ("reason",)),
    Spec(Gauge, "upstream_connections", "Open upstream connections"),
    Spec(Counter, "upstream_connect_failures", "Failed connections to an upstream host, by host", ("host",)),
    Spec(HotCounter, "bytes_in", "Bytes received from clients"),
    Spec(HotCounter, "bytes_out", "Bytes sent to clients"),
    Spec(Counter, "protocol_errors", "Messages that could not be framed or decoded, by kind", ("kind",)),
    Spec(Counter, "config_reloads", "Config reloads, by outcome (success, failure)", ("outcome",)),
    Spec(Gauge, "config_generation", "Generation of the loaded config (1 at start, +1 per successful reload)"),
    Spec(Info, "config", "The loaded config: its file and sha256"),
    Spec(Gauge, "read_only", "1 when the loaded config has read_only: true"),
    Spec(Counter, "drift_checks", "Drift checks run, by outcome (ok, mismatch, error)", ("outcome",)),
    Spec(Gauge, "drift_mismatches", "Shard-key mismatches found by the last drift check, by namespace and kind",
         ("namespace", "kind")),
    Spec(Gauge, "profile_rows", "Rows (namespace, command, shape, appName) of the traffic profile being filled"),
    Spec(HotCounter, "profile_overflow_commands", "Commands counted in the profile's overflow row (no row of their "
         "own: profile.max_shapes reached)"),
    Spec(HotCounter, "profile_errors", "Commands the profile could not record (a bug; logged)"),
    Spec(Counter, "profile_flushes", "Profile flushes to profile.sink, by outcome (ok, failed)", ("outcome",)),
    Spec(Counter, "profile_rows_written", "Profile rows written to profile.sink"),
    Spec(Counter, "profile_rows_dropped", "Profile rows kept for a sink that was down but folded into the overflow "
         "row for lack of room (their counts are kept, their shapes lost)"),
    Spec(Gauge, "profile_pending_rows", "Profile rows waiting to be written to profile.sink (it failed)"),
)


#: A fleet's supervisor (``workers: N``) keeps these of its own; the workers' others are merged.
SUPERVISOR_OWNED: Final = ("config_reloads", "config_generation", "config", "read_only")
FLEET_METRICS: Final[tuple[Spec, ...]] = (
    Spec(Gauge, "workers", "Worker processes the fleet runs (workers: N)"),
    Spec(Gauge, "workers_up", "Worker processes accepting connections"),
    Spec(Counter, "worker_restarts", "Worker processes restarted after they died, by worker", ("worker",)),
)

Built = HotCounter | HotHistogram | Counter | Gauge | Info
_M = TypeVar("_M", Counter, Gauge, Info)


def _build(spec: Spec, registry: CollectorRegistry) -> Built:
    name = PREFIX + spec.name
    if spec.kind is HotHistogram:
        return HotHistogram(name, spec.help, spec.labels, registry, spec.buckets)
    if spec.kind is HotCounter:
        return HotCounter(name, spec.help, spec.labels, registry)
    if spec.kind is Counter:
        return Counter(name, spec.help, spec.labels, registry=registry)
    if spec.kind is Gauge:
        return Gauge(name, spec.help, spec.labels, registry=registry)
    return Info(name, spec.help, spec.labels, registry=registry)


class Metrics:
    """The registry and typed handles to every metric of :data:`METRICS`."""

    def __init__(self, namespaces: Iterable[str] = (), upstream_hosts: Iterable[str] = ()) -> None:
        self.registry = CollectorRegistry()
        self._all = {spec.name: _build(spec, self.registry) for spec in METRICS}
        self.namespaces: frozenset[str] = frozenset(namespaces)
        self.hosts: frozenset[str] = frozenset(upstream_hosts)
        self.commands = self._hot_counter("commands")
        self.refusals = self._hot_counter("refusals")
        self.warnings = self._hot_counter("warnings")
        self.allow_marker_used = self._hot_counter("allow_marker_used")
        self.proxy_seconds = self._hot_histogram("proxy_seconds")
        self.round_trip_seconds = self._hot_histogram("round_trip_seconds")
        self.client_connections = self._gauge("client_connections")
        self.client_rejected = self._counter("client_rejected")
        self.upstream_connections = self._gauge("upstream_connections")
        self.upstream_connect_failures = self._counter("upstream_connect_failures")
        self.bytes_in = self._hot_counter("bytes_in")
        self.bytes_out = self._hot_counter("bytes_out")
        self.protocol_errors = self._counter("protocol_errors")
        self.config_reloads = self._counter("config_reloads")
        self.config_generation = self._gauge("config_generation")
        self.config_info = self._info("config")
        self.read_only = self._gauge("read_only")
        self.drift_checks = self._counter("drift_checks")
        self.drift_mismatches = self._gauge("drift_mismatches")
        self.profile_rows = self._gauge("profile_rows")
        self.profile_overflow_commands = self._hot_counter("profile_overflow_commands")
        self.profile_errors = self._hot_counter("profile_errors")
        self.profile_flushes = self._counter("profile_flushes")
        self.profile_rows_written = self._counter("profile_rows_written")
        self.profile_rows_dropped = self._counter("profile_rows_dropped")
        self.profile_pending_rows = self._gauge("profile_pending_rows")
        #: called before each scrape, to bring figures kept elsewhere up to date
        self.before_scrape: list[Callable[[], None]] = []
        for outcome in ("success", "failure"):  # both series exist from the start, at 0
            self.config_reloads.labels(outcome)
        for outcome in ("ok", "failed"):
            self.profile_flushes.labels(outcome)

    def _counter(self, name: str) -> Counter:
        metric = self._all[name]
        assert isinstance(metric, Counter)
        return metric

    def _gauge(self, name: str) -> Gauge:
        metric = self._all[name]
        assert isinstance(metric, Gauge)
        return metric

    def _hot_counter(self, name: str) -> HotCounter:
        metric = self._all[name]
        assert isinstance(metric, HotCounter)
        return metric

    def _hot_histogram(self, name: str) -> HotHistogram:
        metric = self._all[name]
        assert isinstance(metric, HotHistogram)
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
        for refresh in self.before_scrape:
            refresh()
        return generate_latest(self.registry)

    def families(self) -> list[dict[str, Any]]:
        """Every metric as JSON (a fleet's worker sends this to its supervisor, which merges
        the workers' families: :mod:`scalyproxy.admin.fleet`)."""
        for refresh in self.before_scrape:
            refresh()
        return [{"name": m.name, "type": m.type, "help": m.documentation,
                 "samples": [[s.name, s.labels, s.value] for s in m.samples]}
                for m in self.registry.collect()]


def _typed(metric: Built, kind: type[_M]) -> _M:
    assert isinstance(metric, kind)
    return metric


class FleetMetrics:
    """The supervisor's own metrics: :data:`FLEET_METRICS` and the config's
    (:data:`SUPERVISOR_OWNED`, one reload of the fleet counts once)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        specs = {s.name: s for s in METRICS}
        built = {name: _build(specs[name], self.registry) for name in SUPERVISOR_OWNED}
        built.update({s.name: _build(s, self.registry) for s in FLEET_METRICS})
        self.owned = frozenset(PREFIX + name for name in SUPERVISOR_OWNED)
        self.config_reloads = _typed(built["config_reloads"], Counter)
        self.config_generation = _typed(built["config_generation"], Gauge)
        self.config_info = _typed(built["config"], Info)
        self.read_only = _typed(built["read_only"], Gauge)
        self.workers = _typed(built["workers"], Gauge)
        self.workers_up = _typed(built["workers_up"], Gauge)
        self.worker_restarts = _typed(built["worker_restarts"], Counter)
        for outcome in ("success", "failure"):
            self.config_reloads.labels(outcome)

    def config_loaded(self, source: str | None, sha256: str, read_only: bool, generation: int) -> None:
        self.config_generation.set(generation)
        self.config_info.info({"path": source or "", "sha256": sha256})
        self.read_only.set(1 if read_only else 0)
