"""A fleet's figures as one (``workers: N``): the workers' metrics, shadow reports and
traffic profiles merged for the supervisor's admin listener.

Counters and histograms (bucket counts, sums and counts) add up across workers;
so do the gauges that count things (connections, profile rows); the gauges that
describe a state every worker shares (``config_generation``, ``read_only``,
``drift_mismatches``) take the highest value, ``_created`` samples the earliest,
info metrics their one value. A worker that is down is missing from the sum
until it is back (its counts start again from zero, as a restarted process's do).
Reports add their counts per (rule, namespace, appName, shape); profiles merge
with :meth:`~scalyproxy.evidence.table.ProfileTable.merge`. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

from prometheus_client.metrics_core import Metric

from scalyproxy.evidence.table import ProfileTable

Family = Mapping[str, Any]  # Metrics.families(): name, type, help, samples [[name, labels, value]]

#: gauges whose workers all report the same state: the fleet's value is the highest
HIGHEST: Final = frozenset({"scalyproxy_config_generation", "scalyproxy_read_only", "scalyproxy_drift_mismatches"})


def merge_families(workers: Iterable[Sequence[Family]], skip: frozenset[str] = frozenset()) -> list[Metric]:
    """The families of every worker merged into one set (``skip``: names left out)."""
    merged: dict[str, Metric] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for families in workers:
        for fam in families:
            name, kind = str(fam["name"]), str(fam["type"])
            if name in skip:
                continue
            if name not in merged:
                merged[name] = Metric(name, str(fam["help"]), kind)
                values[name] = {}
            series = values[name]
            for sample_name, labels, value in fam["samples"]:
                key = (str(sample_name), tuple(sorted((str(k), str(v)) for k, v in dict(labels).items())))
                old = series.get(key)
                series[key] = float(value) if old is None else _combine(name, kind, key[0], old, float(value))
    for name, metric in merged.items():
        for (sample_name, labels), value in values[name].items():
            metric.add_sample(sample_name, dict(labels), value)
    return list(merged.values())


def _combine(family: str, kind: str, sample: str, old: float, new: float) -> float:
    if sample.endswith("_created"):
        return min(old, new)
    if kind in ("info", "stateset") or (kind == "gauge" and family in HIGHEST):
        return max(old, new)
    return old + new


class Families:
    """What ``generate_latest`` reads: a fixed list of families."""

    def __init__(self, metrics: Iterable[Metric]) -> None:
        self.metrics = list(metrics)

    def collect(self) -> Iterator[Metric]:
        return iter(self.metrics)


def merge_reports(reports: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``/report`` documents of every worker as one: counts added per (rule, namespace, app,
    shape), first seen the earliest, last seen (and the reason then) the latest."""
    entries: dict[tuple[Any, ...], dict[str, Any]] = {}
    for report in reports:
        for e in report.get("entries") or []:
            key = (e.get("rule"), e.get("namespace"), e.get("app"), e.get("shape"))
            mine = entries.get(key)
            if mine is None:
                entries[key] = dict(e)
                continue
            for field in ("count", "refused", "warned"):
                mine[field] = int(mine.get(field, 0)) + int(e.get(field, 0))
            mine["first_seen"] = min(mine["first_seen"], e["first_seen"])  # ISO 8601 UTC: ordered as text
            if e["last_seen"] > mine["last_seen"]:
                for field in ("last_seen", "command", "code_name", "reason"):
                    mine[field] = e.get(field)
    capacity = max((int(r.get("capacity", 0)) for r in reports), default=0)
    rows = sorted(entries.values(), key=lambda e: str(e.get("last_seen", "")), reverse=True)
    rows.sort(key=lambda e: -int(e.get("count", 0)))  # by count, then the latest first (as one report)
    kept = rows[:capacity] if capacity else rows
    return {
        "since": min((str(r["since"]) for r in reports if r.get("since")), default=None),
        "capacity": capacity,
        "size": len(kept),
        "evicted": sum(int(r.get("evicted", 0)) for r in reports) + len(rows) - len(kept),
        "entries": kept,
        "workers": len(reports),
    }


def merge_profiles(profiles: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``/profile`` documents of every worker as one table (ValueError when one is not a profile)."""
    tables = [ProfileTable.from_json(p) for p in profiles]
    if not tables:
        raise ValueError("no profile to merge")
    # room for every row (a worker's /profile is sized to its own rows: Recorder.snapshot)
    total = ProfileTable(sum(len(t) for t in tables) + 1, min(t.since for t in tables))
    for table in tables:
        total.merge(table)
    doc = total.to_json()
    doc["enabled"] = profiles[0].get("enabled")
    doc["sink"] = profiles[0].get("sink")
    doc["workers"] = len(profiles)
    return doc
