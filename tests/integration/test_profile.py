"""The traffic profile end to end: real proxies, real pymongo traffic, FerretDB as the
backend and as the MongoDB sink.

- ``/profile`` and ``scalyproxy profile`` show every shape by application with its
  verdicts and latencies, and never a value;
- through a MongoDB sink the profile survives a restart, and two proxies writing
  into one collection give the sum of both;
- a sink that goes down (a second FerretDB, stopped) costs the relay nothing:
  commands are answered, ``/metrics`` counts the failed flushes, and what was kept
  is written when the sink is back;
- ``scalyproxy whatif`` names exactly the shapes that enforcing would refuse,
  from the file sink, from ``/profile`` and from the MongoDB sink.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient

from scalyproxy.backend import FerretDB
from scalyproxy.sinks.sources import read_source
from tests.conftest import ROOT, ProxyProcess
from tests.integration.test_ops import admin_of, scrape, value, wait_for_event

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

Client = MongoClient[dict[str, Any]]
MARK = "scaly:allow-global"

CONFIG = """\
listen: 127.0.0.1:0
upstream: mongodb://127.0.0.1:1
admin_listen: 127.0.0.1:0
policy:
  rules: {{global_query: {mode}, shard_key_write: {mode}, schema: {mode}, unindexed_query: off}}
profile:
  flush_interval_s: 0.2
{sink}
collections:
  prof.posts:
    structure: {{author: string, title: string, n: int}}
    indexes:
      - fields: [author, title]
        shard_key: true
"""


def config(mode: str = "warn", sink: str | None = None) -> str:
    return CONFIG.format(mode=mode, sink=f"  sink: {sink!r}" if sink else "")


@pytest.fixture()
def start(proxy_factory: Callable[..., ProxyProcess], tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    started: list[ProxyProcess] = []

    def run(text: str, name: str = "profile.yaml") -> ProxyProcess:
        path = tmp_path / name
        path.write_text(text)
        p = proxy_factory(path)
        started.append(p)
        return p

    try:
        yield run
    finally:
        for p in started:
            p.stop()


def client(proxy: ProxyProcess, app: str) -> Client:
    return MongoClient(proxy.uri, appname=app, serverSelectionTimeoutMS=10_000)


def get_profile(admin: str) -> dict[str, Any]:
    with urllib.request.urlopen(admin + "/profile", timeout=10) as resp:
        doc: dict[str, Any] = json.loads(resp.read())
    return doc


def rows_by(doc: dict[str, Any]) -> dict[tuple[str, str | None, str], dict[str, Any]]:
    """(command, app, filter or document shape as JSON) -> row."""
    out = {}
    for r in doc["rows"]:
        shape = r["shape"]
        part = shape.get("filter") or shape.get("<sequences>") or shape.get("updates") or {}
        out[(r["command"], r["app"], json.dumps(part, sort_keys=True))] = r
    return out


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scalyproxy", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=60)


def shadow_traffic(proxy: ProxyProcess, secret: str) -> None:
    web, batch = client(proxy, "web"), client(proxy, "batch")
    try:
        posts = web.prof.posts
        for i in range(5):
            posts.insert_one({"author": secret, "title": f"t{i}", "n": i})  # targeted insert: fast path
        for i in range(5):
            assert posts.find_one({"author": secret, "title": f"t{i}"}) is not None  # targeted find: fast path
        for _ in range(3):
            assert posts.find_one({"author": secret}) is not None  # no title: warned in shadow mode
        posts.insert_one({"author": secret, "n": 1})  # no title (key and structure): warned twice
        assert posts.find_one({"n": 1}, comment=MARK) is not None  # marked: allowed
        batch.prof.posts.update_one({"author": secret, "title": "t0"}, {"$set": {"n": 7}})
        assert batch.prof.posts.find_one({"author": secret, "title": "t1"}) is not None
    finally:
        web.close()
        batch.close()


def test_profile_endpoint_and_command(start: Callable[..., ProxyProcess], direct_client: Client) -> None:
    direct_client.prof.posts.drop()
    p = start(config())
    admin = admin_of(p)
    secret = uuid.uuid4().hex
    shadow_traffic(p, secret)
    doc = get_profile(admin)
    assert secret not in json.dumps(doc)  # shapes carry no values
    rows = rows_by(doc)
    targeted = json.dumps({"author": "<string>", "title": "<string>"}, sort_keys=True)
    find = rows[("find", "web", targeted)]
    assert find["count"] == 5 and find["outcomes"] == {"allowed": 5} and find["namespace"] == "prof.posts"
    assert find["latency"]["count"] == 5 and 0 < find["latency"]["p50_ms"] <= find["latency"]["p99_ms"] < 5000
    assert rows[("find", "web", json.dumps({"author": "<string>"}))]["outcomes"] == {"warned:global_query": 3}
    assert rows[("find", "batch", targeted)]["count"] == 1  # another application: another row
    inserts = {k: r["outcomes"] for k, r in rows.items() if k[0] == "insert"}
    assert sorted(inserts.values(), key=str) == [{"allowed": 5}, {"warned:schema,shard_key_write": 1}]
    marked = [r for (cmd, _, part), r in rows.items() if cmd == "find" and r["shape"].get("comment") == "<marker>"]
    assert [r["outcomes"] for r in marked] == [{"allowed": 1}]
    assert doc["commands"] == sum(r["count"] for r in doc["rows"]) >= 16

    table = cli("profile", "--admin", admin)
    assert table.returncode == 0, table.stderr
    assert "warned:global_query 3" in table.stdout and "prof.posts" in table.stdout
    assert table.stdout.splitlines()[1].startswith("5 ")  # sorted by count
    as_json = cli("profile", "--admin", admin.removeprefix("http://"), "--json")
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["rows"]
    assert cli("profile", "--admin", "127.0.0.1:1").returncode == 1
    assert value(scrape(admin), "scalyproxy_profile_rows") == len(doc["rows"])


def sink_count(direct: Client, db: str, coll: str) -> int:
    """The finds counted in a sink (the drivers' endSessions are profiled too)."""
    return sum(d.get("count", 0) for d in direct[db][coll].find({"command": "find"}))


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def targeted_finds(proxy: ProxyProcess, n: int, app: str = "fleet") -> None:
    c = client(proxy, app)
    try:
        for i in range(n):
            c.prof.posts.find_one({"author": "a", "title": f"t{i}"})
    finally:
        c.close()


def test_mongodb_sink_sums_a_fleet_and_survives_a_restart(start: Callable[..., ProxyProcess], direct_client: Client,
                                                          ferretdb: FerretDB) -> None:
    coll = f"rows_{uuid.uuid4().hex[:8]}"
    sink = f"{ferretdb.uri}/scaly_profile.{coll}"
    a = start(config(sink=sink), "a.yaml")
    b = start(config(sink=sink), "b.yaml")
    targeted_finds(a, 3)
    targeted_finds(b, 4)
    wait_for(lambda: sink_count(direct_client, "scaly_profile", coll) == 7, "both proxies' rows in the sink")
    [doc] = direct_client.scaly_profile[coll].find({"command": "find"})  # one shape and app: one document
    assert doc["count"] == 7 and doc["outcomes"] == {"allowed": 7} and doc["app"] == "fleet"
    assert sum(v for k, v in doc["latency"].items() if k.startswith("b")) == 7
    a.stop()  # SIGTERM: the last flush goes out
    a2 = start(config(sink=sink), "a.yaml")
    targeted_finds(a2, 2)
    wait_for(lambda: sink_count(direct_client, "scaly_profile", coll) == 9, "the restarted proxy's rows")
    table = read_source(sink)
    [row] = [r for r in table if r.command == "find"]
    assert row.count == 9 and sum(row.latency.values()) == 9 and row.shape is not None
    enforce = Path(a2.config_path).parent / "enforce.yaml"
    enforce.write_text(config("enforce"))
    result = cli("whatif", "--config", str(enforce), sink, "--json")
    assert result.returncode == 0, result.stderr  # targeted finds stay allowed
    assert json.loads(result.stdout)["commands"] == table.total() >= 9


def test_a_sink_that_is_down_never_slows_the_relay(start: Callable[..., ProxyProcess], direct_client: Client,
                                                   tmp_path: Path) -> None:
    sink_server = FerretDB(data_dir=str(tmp_path / "sink-data")).start()
    try:
        sink = f"{sink_server.uri}/scaly.profile"
        p = start(config(sink=sink))
        admin = admin_of(p)
        targeted_finds(p, 3)
        watcher: Client = MongoClient(sink_server.uri, serverSelectionTimeoutMS=10_000)
        try:
            wait_for(lambda: sink_count(watcher, "scaly", "profile") == 3, "the first flush")
        finally:
            watcher.close()
        sink_server.kill()  # the sink goes down
        c = client(p, "fleet")
        try:
            slowest = 0.0
            for i in range(40):
                started = time.monotonic()
                c.prof.posts.find_one({"author": "a", "title": f"t{i}"})
                slowest = max(slowest, time.monotonic() - started)
                time.sleep(0.05)
        finally:
            c.close()
        assert slowest < 1.0  # a failed write takes seconds (its timeout); no command waited for it
        wait_for(lambda: value(scrape(admin), "scalyproxy_profile_flushes_total", outcome="failed") >= 1,
                 "a failed flush in /metrics")
        assert value(scrape(admin), "scalyproxy_profile_pending_rows") >= 1  # kept for the next write
        wait_for_event(p, "profile_sink_down")
        sink_server.start()  # back, on the same port with the same data
        wait_for_event(p, "profile_sink_up", timeout=30)
        watcher = MongoClient(sink_server.uri, serverSelectionTimeoutMS=10_000)
        try:
            wait_for(lambda: sink_count(watcher, "scaly", "profile") == 43, "what was kept, written")
        finally:
            watcher.close()
        assert value(scrape(admin), "scalyproxy_profile_pending_rows") == 0
        assert value(scrape(admin), "scalyproxy_profile_rows_dropped_total") == 0
    finally:
        sink_server.stop()


def test_whatif_names_the_shapes_enforcing_would_refuse(start: Callable[..., ProxyProcess], direct_client: Client,
                                                        tmp_path: Path) -> None:
    direct_client.prof.posts.drop()
    jsonl = tmp_path / "profile.jsonl"
    p = start(config("warn", sink=f"file:{jsonl}"), "shadow.yaml")
    admin = admin_of(p)
    shadow_traffic(p, uuid.uuid4().hex)
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps(get_profile(admin)))
    enforce = tmp_path / "enforce.yaml"
    enforce.write_text(config("enforce"))
    live = cli("whatif", "--config", str(enforce), admin, "--json")
    p.stop()  # the last flush writes the file
    for source in (str(jsonl), str(saved)):
        result = cli("whatif", "--config", str(enforce), source, "--json")
        assert result.returncode == 1, result.stderr
        assert json.loads(result.stdout) == json.loads(live.stdout)
    report = json.loads(live.stdout)
    changes = {(c["command"], c["app"], c["then"], c["now"], c["count"]) for c in report["changes"]}
    assert changes == {
        ("find", "web", "warned:global_query", "refused:global_query", 3),
        ("insert", "web", "warned:schema,shard_key_write", "refused:shard_key_write", 1),
    }
    assert report["by_app"] == {"web": {"changed": 4, "breaking": 4}}
    assert report["by_rule"] == {"global_query": {"changed": 3, "breaking": 3},
                                 "shard_key_write": {"changed": 1, "breaking": 1}}
    text = cli("whatif", "--config", str(enforce), str(jsonl))
    assert text.returncode == 1 and "Missing fields were title." in text.stdout
    assert "4 that were allowed or warned would be refused" in text.stdout
    same = cli("whatif", "--config", str(tmp_path / "shadow.yaml"), str(jsonl), str(saved))
    assert same.returncode == 0 and "0 would get another verdict" in same.stdout
    bad = cli("whatif", "--config", str(enforce), str(tmp_path / "nothing-here.jsonl"))
    assert bad.returncode == 2 and "cannot read" in bad.stderr
