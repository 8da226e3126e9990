"""Operations: metrics, JSON logs, admin endpoints and the shadow report.

Every test runs a real ``scalyproxy run`` process (its admin listener on an OS
port, read from the "started" log line) in front of the session's FerretDB,
sends real pymongo traffic and reads what the proxy exposes.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pymongo import MongoClient
from pymongo.errors import OperationFailure

from scalyproxy.wire.op_msg import encode_op_msg
from tests.conftest import ROOT, ProxyProcess

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
Client = MongoClient[dict[str, Any]]

# --- helpers (also used by test_ops_reload.py and test_ops_drift.py) -----------------


def log_events(proxy: ProxyProcess) -> list[dict[str, Any]]:
    """The proxy's JSON log lines (stdout's human lines are skipped); each must parse."""
    return proxy.events()


def wait_for_event(proxy: ProxyProcess, event: str, count: int = 1, timeout: float = 15.0,
                   **match: Any) -> dict[str, Any]:
    """The ``count``-th log line of ``event`` whose fields equal ``match``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [e for e in log_events(proxy) if e["event"] == event
                 and all(e.get(k) == v for k, v in match.items())]
        if len(found) >= count:
            return found[count - 1]
        if time.monotonic() > deadline:
            raise AssertionError(f"no {count}x {event} {match} in the log:\n{proxy.log_text()[-4000:]}")
        time.sleep(0.1)


def admin_of(proxy: ProxyProcess) -> str:
    """``http://127.0.0.1:PORT`` of the proxy's admin listener (it listens on port 0 and
    the port is read back from its "started" line)."""
    assert proxy.admin, f"the proxy has no admin listener:\n{proxy.log_text()[-3000:]}"
    return f"http://{proxy.admin}"


def http(url: str, method: str = "GET") -> tuple[int, str, str]:
    """(status, content type, body) of one request."""
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.headers.get("Content-Type", ""), exc.read().decode()


def scrape(admin: str) -> Samples:
    status, ctype, text = http(admin + "/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture()
def start_proxy(proxy_factory: Callable[..., ProxyProcess], tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    """Start a proxy on a config text written to tmp_path; stopped by PID after the test."""
    started: list[ProxyProcess] = []

    def start(config_text: str, name: str = "ops.yaml", **kwargs: Any) -> ProxyProcess:
        p = proxy_factory(write(tmp_path / name, config_text), **kwargs)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            p.stop()


def client(proxy: ProxyProcess, app: str, **kwargs: Any) -> Client:
    return Client(proxy.uri, appname=app, serverSelectionTimeoutMS=10_000, **kwargs)


# --- metrics ---------------------------------------------------------------------

METRICS_CONFIG = """\
listen: 127.0.0.1:0
upstream: mongodb://127.0.0.1:1
admin_listen: 127.0.0.1:0
policy:
  unknown_namespaces: allow
  rules: {unindexed_query: off}
collections:
  ops.posts:
    structure: {author: string, title: string}
    indexes:
      - fields: [author]
        shard_key: true
  ops.notes:
    structure: {owner: string, text: string}
    rules: {global_query: warn}
    indexes:
      - fields: [owner]
        shard_key: true
"""


def test_metrics_count_real_traffic(start_proxy: Callable[..., ProxyProcess], direct_client: Client) -> None:
    direct_client.ops.posts.drop()
    direct_client.ops.notes.drop()
    p = start_proxy(METRICS_CONFIG)
    admin = admin_of(p)
    c = client(p, "metrics-app")
    try:
        c.ops.posts.insert_one({"author": "ann", "title": "one"})
        c.ops.posts.insert_one({"author": "bob", "title": "two"})
        assert (c.ops.posts.find_one({"author": "ann"}) or {}).get("title") == "one"
        with pytest.raises(OperationFailure) as refused:
            c.ops.posts.find_one({"title": "two"})
        assert refused.value.code == 29001
        assert list(c.ops.posts.find({"title": "two"}, comment="scaly:allow-global"))[0]["author"] == "bob"
        for _ in range(2):
            assert c.ops.notes.find_one({"text": "x"}) is None  # warned, forwarded
        c.ops.undeclared.find_one({})
        m = scrape(admin)
        assert value(m, "scalyproxy_client_connections") >= 1
        assert value(m, "scalyproxy_upstream_connections") >= 1
    finally:
        c.close()
    cmd = "scalyproxy_commands_total"
    assert value(m, cmd, command="insert", namespace="ops.posts", verdict="allowed") == 2
    assert value(m, cmd, command="find", namespace="ops.posts", verdict="allowed") == 2
    assert value(m, cmd, command="find", namespace="ops.posts", verdict="refused") == 1
    assert value(m, cmd, command="find", namespace="ops.notes", verdict="warned") == 2
    assert value(m, cmd, command="find", namespace="other", verdict="allowed") == 1
    assert value(m, "scalyproxy_refusals_total", rule="global_query", namespace="ops.posts") == 1
    assert value(m, "scalyproxy_warnings_total", rule="global_query", namespace="ops.notes") == 2
    assert value(m, "scalyproxy_allow_marker_used_total", namespace="ops.posts") == 1
    decided = sum(v for (name, _), v in m.items() if name == cmd)
    assert value(m, "scalyproxy_proxy_seconds_count") == decided
    assert 0 < value(m, "scalyproxy_proxy_seconds_sum") < decided * 0.05
    assert value(m, "scalyproxy_round_trip_seconds_count", command="insert") == 2
    assert value(m, "scalyproxy_round_trip_seconds_count", command="find") == 5  # the refusal never went up
    assert value(m, "scalyproxy_bytes_in_total") > 0 and value(m, "scalyproxy_bytes_out_total") > 0
    assert value(m, "scalyproxy_config_generation") == 1
    assert value(m, "scalyproxy_config_reloads_total", outcome="failure") == 0


def test_metrics_protocol_errors_and_bounded_labels(start_proxy: Callable[..., ProxyProcess]) -> None:
    p = start_proxy(METRICS_CONFIG)
    admin = admin_of(p)
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
        s.sendall(struct.pack("<iiii", 8, 1, 0, 2013))  # messageLength 8 < 16
        while s.recv(1024):  # the proxy closes the connection (maybe after an error reply)
            pass
    c = client(p, "labels-app")
    try:
        for k in range(20):  # 20 client-chosen namespaces and command names
            c[f"db{k}"][f"c{k}"].find_one({})
            with pytest.raises(OperationFailure):
                c.ops.command(f"noSuchCommand{k}")
    finally:
        c.close()
    deadline = time.monotonic() + 10
    while value(m := scrape(admin), "scalyproxy_protocol_errors_total", kind="bad_length") < 1:
        assert time.monotonic() < deadline, "the bad frame was not counted"
        time.sleep(0.1)
    namespaces = {dict(labels).get("namespace") for (name, labels), _ in m.items()
                  if name == "scalyproxy_commands_total"}
    commands = {dict(labels).get("command") for (name, labels), _ in m.items()
                if name == "scalyproxy_commands_total"}
    assert namespaces <= {"ops.posts", "ops.notes", "other", "none"}
    assert "other" in namespaces and "other" in commands
    assert not any(c.startswith("noSuchCommand") for c in commands if c)
    assert value(m, "scalyproxy_commands_total", command="other", namespace="none", verdict="allowed") == 20


def test_connection_gauges_count_rejections_apart(start_proxy: Callable[..., ProxyProcess], workers: int) -> None:
    """max_connections 1 holds per process: of workers + 1 connections held open, one is closed at
    once (pigeonhole); the gauges count the admitted ones and the rejection apart."""
    p = start_proxy(METRICS_CONFIG.replace("policy:", "limits: {max_connections: 1}\npolicy:"))
    admin = admin_of(p)

    def wait_for(name: str, expected: float, **labels: str) -> None:
        deadline = time.monotonic() + 10
        while (got := value(scrape(admin), name, **labels)) != expected:
            assert time.monotonic() < deadline, f"{name}{labels} = {got}, expected {expected}"
            time.sleep(0.1)

    def answers(sock: socket.socket, request_id: int) -> bool:
        """A ping is answered (admitted), or the proxy closed the connection at once (rejected)."""
        sock.sendall(encode_op_msg({"ping": 1, "$db": "admin"}, request_id=request_id))
        try:
            header = sock.recv(16)
        except ConnectionResetError:
            return False  # (or reset: the proxy aborts it)
        if not header:
            return False
        length = struct.unpack_from("<i", header)[0]
        rest = b""
        while len(header) + len(rest) < length:
            chunk = sock.recv(length - len(header) - len(rest))
            assert chunk, "closed in the middle of a reply"
            rest += chunk
        return True

    wait_for("scalyproxy_client_connections", 0)  # the start-up port check has gone
    held: list[socket.socket] = []
    try:
        rejected = False
        for i in range(workers + 1):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=10)
            if answers(s, i + 1):
                held.append(s)
                continue
            s.close()
            rejected = True
            break
        assert rejected and 1 <= len(held) <= workers
        wait_for("scalyproxy_upstream_connections", len(held))
        wait_for("scalyproxy_client_rejected_total", 1, reason="max_connections")
        wait_for("scalyproxy_client_connections", len(held))
    finally:
        for s in held:
            s.close()
    wait_for("scalyproxy_client_connections", 0)
    wait_for("scalyproxy_upstream_connections", 0)


# --- logs ------------------------------------------------------------------------

LOG_CONFIG = """\
listen: 127.0.0.1:0
upstream: mongodb://127.0.0.1:1
admin_listen: 127.0.0.1:0
log_values: {log_values}
collections:
  ops.secrets:
    structure: {{owner: string, pin: string}}
    indexes:
      - fields: [owner]
        shard_key: true
"""


def test_log_lines_are_json_with_app_name_and_no_values(start_proxy: Callable[..., ProxyProcess]) -> None:
    p = start_proxy(LOG_CONFIG.format(log_values="false"))
    c = client(p, "ledger-service", maxPoolSize=1)
    try:
        with pytest.raises(OperationFailure):
            c.ops.secrets.find_one({"pin": "hunter2-value"})
        with pytest.raises(OperationFailure) as exc:
            c.ops.secrets.insert_one({"owner": "ann", "pin": 1234567})
        assert exc.value.code == 29003
    finally:
        c.close()
    line = wait_for_event(p, "refused", rule="global_query")
    assert line["app"] == "ledger-service"
    assert line["client"].startswith("127.0.0.1:")
    assert line["namespace"] == "ops.secrets" and line["command"] == "find"
    assert line["shape"] == '{"pin":"string"}'
    assert line["code_name"] == "ScalyGlobalQuery" and "shard key" in line["reason"]
    assert line["ts"].endswith("Z") and line["level"] == "warning"
    schema = wait_for_event(p, "refused", rule="schema")
    assert schema["app"] == "ledger-service" and schema["command"] == "insert"
    text = p.log_text()
    assert "hunter2-value" not in text and "1234567" not in text
    assert all(e["event"] for e in log_events(p))  # every JSON line parsed, each names its event
    assert {"started", "admin_listening"} <= {e["event"] for e in log_events(p)}


def test_log_values_when_asked(start_proxy: Callable[..., ProxyProcess]) -> None:
    p = start_proxy(LOG_CONFIG.format(log_values="true"))
    c = client(p, "values-app")
    try:
        with pytest.raises(OperationFailure):
            c.ops.secrets.find_one({"pin": "hunter2-value"})
    finally:
        c.close()
    line = wait_for_event(p, "refused", rule="global_query")
    assert "hunter2-value" in line["values"]
    assert line["shape"] == '{"pin":"string"}'


def test_user_from_sasl_start_is_logged_not_the_payload(start_proxy: Callable[..., ProxyProcess]) -> None:
    """The SCRAM client-first message names the user; only that name reaches the log."""
    p = start_proxy(LOG_CONFIG.format(log_values="false"))
    c = client(p, "auth-app", maxPoolSize=1)  # one connection: the sasl and the find share it
    try:
        payload = b"n,,n=alice=2Cthe=3Dfirst,r=fyko+d2lbbFgONRv9qkxdawL"
        try:
            c.admin.command("saslStart", 1, mechanism="SCRAM-SHA-256", payload=payload, autoAuthorize=1)
        except OperationFailure:
            pass  # FerretDB runs without authentication: the server's answer does not matter here
        with pytest.raises(OperationFailure):
            c.ops.secrets.find_one({"pin": "x"})
    finally:
        c.close()
    line = wait_for_event(p, "refused", rule="global_query")
    assert line["user"] == "alice,the=first"
    assert "fyko" not in p.log_text()


REPEATS_CONFIG = """\
listen: 127.0.0.1:0
upstream: mongodb://127.0.0.1:1
admin_listen: 127.0.0.1:0
log_repeats_s: 3
collections:
  ops.secrets:
    structure: {owner: string, pin: string}
    indexes:
      - fields: [owner]
        shard_key: true
"""


def test_repeated_refusals_are_summarised_in_the_log_and_counted_in_full(
    start_proxy: Callable[..., ProxyProcess],
) -> None:
    """N identical refusals in quick succession: one line, then one summary line with
    repeats N-1 once log_repeats_s has passed; /metrics counts all N. What is still
    pending when the proxy stops is written then. One connection: one worker of a fleet
    sees them all (each worker summarises its own)."""
    n = 20
    p = start_proxy(REPEATS_CONFIG)
    c = client(p, "storm-app", maxPoolSize=1)
    try:
        for _ in range(n):
            with pytest.raises(OperationFailure) as exc:
                c.ops.secrets.find_one({"pin": "x"})
            assert exc.value.code == 29001
        summary = wait_for_event(p, "refused", rule="global_query", summary=True)
        refusals = value(scrape(admin_of(p)), "scalyproxy_refusals_total", rule="global_query", namespace="ops.secrets")
        for _ in range(2):  # within log_repeats_s of the summary line: counted, written at stop
            with pytest.raises(OperationFailure):
                c.ops.secrets.find_one({"pin": "x"})
    finally:
        c.close()
    assert refusals == n
    lines = [e for e in log_events(p) if e["event"] == "refused"]
    first = lines[0]
    assert lines == [first, summary], json.dumps(lines, indent=1)
    assert "repeats" not in first and "summary" not in first and first["app"] == "storm-app"
    assert summary["repeats"] == n - 1 and summary["app"] == "storm-app" and summary["client"] == first["client"]
    assert (summary["namespace"], summary["command"], summary["shape"]) == ("ops.secrets", "find", '{"pin":"string"}')
    p.stop()
    lines = [e for e in log_events(p) if e["event"] == "refused"]
    assert len(lines) == 3 and lines[2]["summary"] is True and lines[2]["repeats"] == 2, json.dumps(lines, indent=1)


# --- admin endpoints ---------------------------------------------------------------


def test_admin_endpoints(start_proxy: Callable[..., ProxyProcess]) -> None:
    p = start_proxy(METRICS_CONFIG)
    admin = admin_of(p)
    assert http(admin + "/healthz")[:1] == (200,)
    status, ctype, body = http(admin + "/readyz")
    assert status == 200 and ctype == "application/json"
    ready = json.loads(body)
    assert ready["ready"] is True and ready["generation"] == 1
    assert http(admin + "/nope")[0] == 404
    assert http(admin + "/metrics", method="POST")[0] == 405
    status, _, body = http(admin + "/healthz", method="HEAD")
    assert status == 200 and body == ""
    assert json.loads(http(admin + "/report")[2])["entries"] == []


def test_readyz_fails_without_a_reachable_upstream(start_proxy: Callable[..., ProxyProcess],
                                                   refused_port: int) -> None:
    p = start_proxy(METRICS_CONFIG, upstream=f"mongodb://127.0.0.1:{refused_port}")
    admin = admin_of(p)
    assert http(admin + "/healthz")[0] == 200  # alive
    status, _, body = http(admin + "/readyz")
    assert status == 503
    assert "no upstream reachable" in json.loads(body)["reason"]


# --- the shadow report -------------------------------------------------------------

SHADOW_CONFIG = """\
listen: 127.0.0.1:0
upstream: mongodb://127.0.0.1:1
admin_listen: 127.0.0.1:0
report_size: 100
policy:
  rules: {global_query: warn, shard_key_write: warn, schema: warn, unindexed_query: warn}
collections:
  shadow.posts:
    structure: {author: string, title: string, views: int}
    indexes:
      - fields: [author]
        shard_key: true
"""


def test_shadow_report_lists_each_shape_once_with_its_count(
    start_proxy: Callable[..., ProxyProcess], direct_client: Client
) -> None:
    direct_client.shadow.posts.drop()
    p = start_proxy(SHADOW_CONFIG)
    admin = admin_of(p)
    web, batch = client(p, "web"), client(p, "batch")
    try:
        coll = web.shadow.posts
        coll.insert_one({"author": "ann", "title": "t1", "views": 1})
        for title in ("t1", "t2", "t3"):  # one shape, three values: all forwarded in shadow mode
            coll.find_one({"title": title})
        for views in (1, 2):
            coll.find_one({"title": "t1", "views": {"$gt": views}})
        coll.find_one({"author": "ann"})  # targeted: not in the report
        batch.shadow.posts.find_one({"title": "t9"})  # same shape, another app: its own line
        assert direct_client.shadow.posts.count_documents({}) == 1
    finally:
        web.close()
        batch.close()
    report = json.loads(http(admin + "/report")[2])
    rows = {(e["app"], e["shape"]): e for e in report["entries"] if e["rule"] == "global_query"}
    assert set(rows) == {
        ("web", '{"title":"string"}'),
        ("web", '{"title":"string","views":{"$gt":"int"}}'),
        ("batch", '{"title":"string"}'),
    }
    assert rows[("web", '{"title":"string"}')]["count"] == 3
    assert rows[("web", '{"title":"string"}')]["warned"] == 3
    assert rows[("web", '{"title":"string"}')]["refused"] == 0
    assert rows[("web", '{"title":"string","views":{"$gt":"int"}}')]["count"] == 2
    assert rows[("batch", '{"title":"string"}')]["count"] == 1
    first = rows[("web", '{"title":"string"}')]
    assert first["namespace"] == "shadow.posts" and first["first_seen"] <= first["last_seen"]
    assert "t2" not in json.dumps(report)  # shapes, never values

    cli = subprocess.run([sys.executable, "-m", "scalyproxy", "report", "--admin", admin],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert cli.returncode == 0, cli.stderr
    lines = cli.stdout.splitlines()
    assert lines[0].split()[:4] == ["COUNT", "REFUSED", "WARNED", "RULE"]
    shape_lines = [ln for ln in lines if '{"title":"string"}' in ln and "global_query" in ln]
    assert sorted(ln.split()[0] for ln in shape_lines) == ["1", "3"]
    assert any(ln.split()[:4] == ["2", "0", "2", "global_query"] and "views" in ln for ln in lines)
    # unindexed_query (warn) saw the same queries: its own lines, keyed by rule
    assert {e["rule"] for e in report["entries"]} == {"global_query", "unindexed_query"}
    as_json = subprocess.run([sys.executable, "-m", "scalyproxy", "report", "--json", "--admin",
                              admin.removeprefix("http://")], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert json.loads(as_json.stdout)["size"] == report["size"]


def test_report_cli_names_an_unreachable_admin(refused_port: int) -> None:
    url = f"http://127.0.0.1:{refused_port}"
    cli = subprocess.run([sys.executable, "-m", "scalyproxy", "report", "--admin", url],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert cli.returncode == 1
    assert f"cannot read {url}/report" in cli.stderr
