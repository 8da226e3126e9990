"""Metrics: the one list, bounded label values, and what the admin hooks count."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import REGISTRY, Info
from prometheus_client.parser import text_string_to_metric_families

from scalyproxy.admin.events import AdminHooks
from scalyproxy.admin.metrics import METRICS, Metrics
from scalyproxy.admin.report import ShadowReport
from scalyproxy.policy import Finding, Verdict


def _samples(m: Metrics) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = m.exposition().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_every_declared_metric_is_exposed_in_a_private_registry() -> None:
    m = Metrics(["db.c"])
    families = {f.name for f in text_string_to_metric_families(m.exposition().decode())}
    assert {"scalyproxy_" + spec.name + ("_info" if spec.kind is Info else "") for spec in METRICS} <= families
    assert len({spec.name for spec in METRICS}) == len(METRICS)
    assert not any(n.startswith("scalyproxy_") for n in REGISTRY._names_to_collectors)
    Metrics(["db.c"])  # a second one does not collide


def test_label_values_are_bounded() -> None:
    m = Metrics(["db.c"], ["h1:27017"])
    assert m.namespace("db.c") == "db.c"
    assert m.namespace("db.evil-" + "x" * 50) == "other"
    assert m.namespace(None) == "none"
    assert m.command("find") == "find"
    assert m.command("findandmodify") == "findAndModify"
    assert m.command("ismaster") == "isMaster"
    assert m.command("whatever123") == "other"
    assert m.protocol_error_kind("bad_bson") == "bad_bson"
    assert m.protocol_error_kind("upstream_bad_length") == "upstream_bad_length"
    assert m.protocol_error_kind("made_up") == "other"
    assert m.host("h1:27017") == "h1:27017" and m.host("h9:1") == "other"
    assert m.rejected_reason("max_connections (10) reached") == "max_connections"
    assert m.rejected_reason("shutting down") == "shutting_down"


def _verdict(ns: str, refusal: Finding | None = None, warnings: tuple[Finding, ...] = (),
             marker: bool = False) -> Verdict:
    return Verdict(refusal, warnings, (ns,), "find", marker)


def _finding(ns: str, rule: str = "global_query") -> Finding:
    return Finding(rule, 29001, "ScalyGlobalQuery", "no shard key", ns, "find", '{"a":"int"}')  # type: ignore[arg-type]


def test_hooks_count_commands_findings_and_connections() -> None:
    m = Metrics(["db.c"])
    report = ShadowReport(10)
    hooks = AdminHooks(m, report)
    conn = SimpleNamespace(app_name="app", user=None, peer="1.2.3.4:5")
    view = SimpleNamespace(body={"find": "c"})
    hooks.command(conn, view, _verdict("db.c"), 0.0001, None)
    hooks.command(conn, view, _verdict("db.c", marker=True), 0.0001, None)
    hooks.command(conn, view, _verdict("db.c", refusal=_finding("db.c")), 0.0002, None)
    hooks.command(conn, view, _verdict("db.zzz", warnings=(_finding("db.zzz"),)), 0.0002, None)
    hooks.finding(conn, view, _finding("db.c"), True)
    hooks.finding(conn, view, _finding("db.zzz"), False)
    hooks.client_opened("p1")
    hooks.client_opened("p2")
    hooks.client_closed("p1")
    hooks.client_rejected("p3", "max_connections (2) reached")
    hooks.client_closed("p3")  # the relay reports the refused one closed too: it never counted
    hooks.protocol_error("bad_length")
    hooks.round_trip("find", 0.003)
    s = _samples(m)

    def v(name: str, **labels: str) -> float:
        return s.get((name, frozenset(labels.items())), 0.0)

    assert v("scalyproxy_commands_total", command="find", namespace="db.c", verdict="allowed") == 2
    assert v("scalyproxy_commands_total", command="find", namespace="db.c", verdict="refused") == 1
    assert v("scalyproxy_commands_total", command="find", namespace="other", verdict="warned") == 1
    assert v("scalyproxy_allow_marker_used_total", namespace="db.c") == 1
    assert v("scalyproxy_refusals_total", rule="global_query", namespace="db.c") == 1
    assert v("scalyproxy_warnings_total", rule="global_query", namespace="other") == 1
    assert v("scalyproxy_proxy_seconds_count") == 4
    assert v("scalyproxy_client_connections") == 1
    assert v("scalyproxy_client_rejected_total", reason="max_connections") == 1
    assert v("scalyproxy_protocol_errors_total", kind="bad_length") == 1
    assert v("scalyproxy_round_trip_seconds_count", command="find") == 1
    # the report keeps the real namespace: it is bounded by its own LRU, not by labels
    assert {e["namespace"] for e in report.as_json()["entries"]} == {"db.c", "db.zzz"}


def test_hooks_learn_the_user_from_auth_commands() -> None:
    hooks = AdminHooks(Metrics(), ShadowReport(10))
    conn = SimpleNamespace(app_name=None, user=None)
    sasl = SimpleNamespace(body={"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": b"n,,n=zoe,r=1"})
    hooks.command(conn, sasl, Verdict(None, (), (), "saslStart", False), 0.0, None)
    assert conn.user == "zoe"
    other = SimpleNamespace(body={"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": b"n,,n=mallory,r=1"})
    hooks.command(conn, other, Verdict(None, (), (), "saslStart", False), 0.0, None)
    assert conn.user == "zoe"  # the first authentication names the connection
    fresh = SimpleNamespace(app_name=None, user=None)
    hello = SimpleNamespace(body={"hello": 1, "speculativeAuthenticate": dict(other.body)})
    hooks.handshake(fresh, hello)
    assert fresh.user == "mallory"


def test_config_loaded_moves_the_namespace_bound() -> None:
    m = Metrics(["db.a"])
    m.config_loaded(["db.b"], "/etc/x.yaml", "ab" * 32, True, 3)
    assert m.namespace("db.a") == "other" and m.namespace("db.b") == "db.b"
    s = _samples(m)
    assert s[("scalyproxy_config_generation", frozenset())] == 3
    assert s[("scalyproxy_read_only", frozenset())] == 1
    assert s[("scalyproxy_config_info", frozenset({("path", "/etc/x.yaml"), ("sha256", "ab" * 32)}))] == 1


def test_hot_histogram_buckets_are_cumulative_and_le() -> None:
    m = Metrics()
    for seconds in (0.00001, 0.00001, 0.0003, 0.002, 99.0):  # 0.00001 sits on a bound: le counts it
        m.proxy_seconds.observe(seconds)
    s = _samples(m)

    def bucket(le: str) -> float:
        return s[("scalyproxy_proxy_seconds_bucket", frozenset({("le", le)}))]

    assert bucket("1e-05") == 2
    assert bucket("0.00025") == 2
    assert bucket("0.0005") == 3
    assert bucket("0.0025") == 4
    assert bucket("0.25") == 4
    assert bucket("+Inf") == 5
    assert s[("scalyproxy_proxy_seconds_count", frozenset())] == 5
    assert abs(s[("scalyproxy_proxy_seconds_sum", frozenset())] - 99.00232) < 1e-9
    assert m.proxy_seconds.count() == 5


def test_hot_series_exist_at_zero_before_traffic() -> None:
    s = _samples(Metrics())
    assert s[("scalyproxy_bytes_in_total", frozenset())] == 0
    assert s[("scalyproxy_proxy_seconds_count", frozenset())] == 0
    assert s[("scalyproxy_config_reloads_total", frozenset({("outcome", "failure")}))] == 0
