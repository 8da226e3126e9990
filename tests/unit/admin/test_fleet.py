"""Merging a fleet's workers (scalyproxy.admin.fleet) and the supervisor's back-off, without
processes: the workers' answers are built by the same code a worker runs."""

from __future__ import annotations

from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from scalyproxy.admin.fleet import Families, merge_families, merge_profiles, merge_reports
from scalyproxy.admin.metrics import Metrics
from scalyproxy.admin.report import ShadowReport
from scalyproxy.evidence.table import ProfileTable, Row
from scalyproxy.server.supervisor import BACKOFF_CAP_S, backoff_delay, describe_exit


def samples(families: list[Any]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = generate_latest(Families(merge_families(families))).decode()  # type: ignore[arg-type]
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def worker_metrics(commands: int, seconds: list[float], connections: int, generation: int) -> Metrics:
    m = Metrics(["a.b"])
    for _ in range(commands):
        m.commands.inc(("find", "a.b", "allowed"))
    for s in seconds:
        m.round_trip_seconds.observe(s, ("find",))
    m.client_connections.set(connections)
    m.config_generation.set(generation)
    m.protocol_errors.labels("bad_length").inc()
    return m


def test_counters_histograms_and_counting_gauges_add_up() -> None:
    one = worker_metrics(3, [0.001, 0.2], 4, 2)
    two = worker_metrics(5, [0.002], 1, 2)
    got = samples([one.families(), two.families()])
    assert got[("scalyproxy_commands_total", frozenset({("command", "find"), ("namespace", "a.b"),
                                                        ("verdict", "allowed")}))] == 8
    assert got[("scalyproxy_round_trip_seconds_count", frozenset({("command", "find")}))] == 3
    assert got[("scalyproxy_round_trip_seconds_bucket", frozenset({("command", "find"), ("le", "0.001")}))] == 1
    assert got[("scalyproxy_round_trip_seconds_bucket", frozenset({("command", "find"), ("le", "0.0025")}))] == 2
    assert got[("scalyproxy_round_trip_seconds_sum", frozenset({("command", "find")}))] == 0.203
    assert got[("scalyproxy_client_connections", frozenset())] == 5
    assert got[("scalyproxy_protocol_errors_total", frozenset({("kind", "bad_length")}))] == 2
    assert got[("scalyproxy_config_generation", frozenset())] == 2  # a shared state: not summed


def test_a_family_left_to_the_supervisor_is_skipped() -> None:
    fams = worker_metrics(1, [], 0, 1).families()
    merged = merge_families([fams], skip=frozenset({"scalyproxy_config_reloads"}))
    assert "scalyproxy_config_reloads" not in {m.name for m in merged}
    assert "scalyproxy_commands" in {m.name for m in merged}


def report_of(*records: tuple[str, bool, float]) -> dict[str, Any]:
    r = ShadowReport(10)
    for shape, enforced, now in records:
        r.record(rule="global_query", namespace="a.b", app="app", shape=shape, command="find",
                 code_name="ScalyGlobalQuery", reason=f"seen at {now}", enforced=enforced, now=now)
    return r.as_json()


def test_reports_add_their_counts_per_shape() -> None:
    one = report_of(("{x: 1}", True, 100.0), ("{x: 1}", True, 300.0), ("{y: 1}", False, 50.0))
    two = report_of(("{x: 1}", False, 200.0), ("{z: 1}", True, 400.0))
    merged = merge_reports([one, two])
    by_shape = {e["shape"]: e for e in merged["entries"]}
    x = by_shape["{x: 1}"]
    assert (x["count"], x["refused"], x["warned"]) == (3, 2, 1)
    assert x["reason"] == "seen at 300.0" and x["first_seen"] < x["last_seen"]
    assert [e["shape"] for e in merged["entries"]] == ["{x: 1}", "{z: 1}", "{y: 1}"]
    assert merged["size"] == 3 and merged["workers"] == 2 and merged["capacity"] == 10


def test_reports_keep_their_capacity() -> None:
    one = report_of(*[(f"{{f{i}: 1}}", True, float(i)) for i in range(10)])
    two = report_of(*[(f"{{g{i}: 1}}", True, float(i)) for i in range(10)])
    merged = merge_reports([one, two])
    assert merged["size"] == 10 and merged["evicted"] == 10


def profile_of(counts: dict[int, int]) -> dict[str, Any]:
    t = ProfileTable(100, since=1000.0)
    for shape_id, n in counts.items():
        row = t.add(Row(shape_id, "app", "a.b", "find", {"find": "b"}, 1000.0 + shape_id))
        for _ in range(n):
            row.count += 1
            row.allowed += 1
            row.observe(0.001)
    doc = t.to_json()
    doc.update(enabled=True, sink=None)
    return doc


def test_profiles_merge_row_by_row() -> None:
    merged = merge_profiles([profile_of({1: 2, 2: 1}), profile_of({1: 3})])
    rows = {r["shape_id"]: r for r in merged["rows"]}
    assert rows["0000000000000001"]["count"] == 5 and rows["0000000000000001"]["outcomes"] == {"allowed": 5}
    assert rows["0000000000000001"]["latency"]["count"] == 5
    assert rows["0000000000000002"]["count"] == 1
    assert merged["commands"] == 6 and merged["workers"] == 2 and merged["enabled"] is True


def test_profiles_sized_to_their_rows_keep_every_row() -> None:
    one, two = profile_of({1: 1, 2: 1}), profile_of({3: 1, 4: 1})
    one["max_shapes"] = two["max_shapes"] = 3  # as Recorder.snapshot sizes them: rows + 1
    merged = merge_profiles([one, two])
    assert merged["size"] == 4 and merged["overflow"]["count"] == 0


def test_backoff_restarts_at_once_then_doubles_to_the_cap() -> None:
    assert [backoff_delay(n) for n in range(1, 6)] == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert backoff_delay(50) == BACKOFF_CAP_S


def test_exit_descriptions() -> None:
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(1) == "exit status 1"
    assert describe_exit(None) == "running"
