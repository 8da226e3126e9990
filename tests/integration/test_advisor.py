"""``scalyproxy advise`` end to end (issue 18): a workload with known answers through real
proxies to FerretDB, advised from ``/profile``, from the file sink, and from one MongoDB
sink (FerretDB) into which two proxies that each saw half of the traffic wrote.

The workload: orders of 1,000 customers; finds 70% by ``customer_id``, 20% by
``order_id``, 10% by ``status`` (3 values, from the app ``reports``); 3,000 inserts with
an increasing ``created_at``. The answers: ``customer_id`` has 70% single-shard reads
and about 1,000 distinct values (within the sketch's stated bounds), ``status`` is
ruled out for its cardinality, ``created_at`` is monotonic, and ``customer_id`` (ranged)
is recommended.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from scalyproxy.backend import FerretDB
from tests.conftest import ProxyProcess
from tests.integration.test_ops import admin_of
from tests.integration.test_profile import cli, get_profile, start  # noqa: F401 (start: a fixture)

Client = MongoClient[dict[str, Any]]
STATUSES = ("new", "paid", "shipped")
CONFIG = """\
listen: 127.0.0.1:0
upstream: mongodb://127.0.0.1:1
admin_listen: 127.0.0.1:0
policy:
  rules: {{global_query: warn, shard_key_write: warn, schema: warn, unindexed_query: off}}
profile:
  flush_interval_s: 0.2
  salt: "advisor-test-salt-6f1d2c"
  sample_rate: 1.0
  candidates: {{{db}.orders: [created_at]}}
{sink}
collections:
  {db}.orders:
    structure: {{order_id: int, customer_id: int, status: string, created_at: int}}
    indexes:
      - fields: [order_id]
        shard_key: true
"""


def config(db: str, sink: str | None = None) -> str:
    return CONFIG.format(db=db, sink=f"  sink: {sink!r}" if sink else "")


def workload(proxy: ProxyProcess, db: str, part: int = 0, parts: int = 1) -> None:
    """The issue's workload, or the part of it whose commands are ``i % parts == part``."""
    web = MongoClient(proxy.uri, appname="web", serverSelectionTimeoutMS=10_000)
    reports = MongoClient(proxy.uri, appname="reports", serverSelectionTimeoutMS=10_000)
    rng = random.Random(18)
    try:
        for i in range(1000):
            pick = i % 10
            if i % parts != part:
                rng.random()  # the same draws whichever part runs
                continue
            if pick < 7:
                web[db].orders.find_one({"customer_id": rng.randrange(1000)})
            elif pick < 9:
                web[db].orders.find_one({"order_id": rng.randrange(3000)})
            else:
                reports[db].orders.find_one({"status": rng.choice(STATUSES)})
        for batch in range(part, 30, parts):
            web[db].orders.insert_many([
                {"order_id": i, "customer_id": i % 1000, "status": STATUSES[i % 3], "created_at": 1_700_000_000 + i}
                for i in range(batch * 100, batch * 100 + 100)])  # fmt: skip
    finally:
        web.close()
        reports.close()


def advise_json(*sources: str) -> dict[str, Any]:
    result = cli("advise", *sources, "--json")
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def check_answers(doc: dict[str, Any], db: str) -> dict[str, dict[str, Any]]:
    [ns] = [n for n in doc["namespaces"] if n["namespace"] == f"{db}.orders"]
    by_key = {json.dumps(c["key"]): c for c in ns["candidates"]}
    customer = by_key['{"customer_id": 1}']
    reads = customer["readDistribution"]
    assert reads["sampleSize"]["find"] == 1000
    assert (reads["percentageOfSingleShardReads"], reads["percentageOfScatterGatherReads"]) == (70.0, 30.0)
    chars = customer["keyCharacteristics"]
    low, high = chars["numDistinctValuesBounds"]
    assert low <= 1000 <= high and chars["numDocsSampled"] == 3000
    assert abs(chars["numDistinctValues"] - 1000) <= 1000 * chars["numDistinctValuesRelativeError"]
    assert chars["monotonicity"]["type"] == "not monotonic"
    status = by_key['{"status": 1}']
    assert status["ruledOut"] and status["keyCharacteristics"]["numDistinctValues"] == 3
    assert any(r.startswith("too low cardinality") for r in status["risks"])
    assert by_key['{"created_at": 1}']["keyCharacteristics"]["monotonicity"]["type"] == "monotonic"
    assert by_key['{"order_id": 1}']["readDistribution"]["percentageOfSingleShardReads"] == 20.0
    assert ns["candidates"][0]["key"] == {"customer_id": 1} and ns["candidates"][0]["rank"] == 1
    assert ns["recommendation"].startswith(f"shard {db}.orders on {{customer_id: 1}} (ranged)")
    assert "reports (10.0%)" in ns["recommendation"]
    return by_key


def exact_figures(doc: dict[str, Any]) -> dict[str, Any]:
    """What must not depend on how the profile was put together: the counts and what is decided
    from them. The HLL's estimate does (a union of the file's flushed parts is not estimated
    exactly as the sketch that saw it all, docs/advisor.md), and so do the approximate
    heavy hitters and the text and ranks that quote them: check_answers bounds those."""
    out: dict[str, Any] = {}
    for ns in doc["namespaces"]:
        for c in ns["candidates"]:
            chars = c.get("keyCharacteristics") or {}
            out[f"{ns['namespace']} {json.dumps(c['key'])} {c['type']}"] = (
                c.get("readDistribution"), c.get("writeDistribution"), c.get("ruledOut"),
                chars.get("numDocsSampled"), chars.get("monotonicity"))
        out[ns["namespace"]] = ns["recommendation"].split(")")[0]  # "shard NS on {KEY} (TYPE"
    return out


def test_advise_reports_the_known_answers(start: Callable[..., ProxyProcess], direct_client: Client,  # noqa: F811
                                          tmp_path: Path) -> None:
    db = f"adv_{uuid.uuid4().hex[:8]}"
    jsonl = tmp_path / "profile.jsonl"
    p = start(config(db, f"file:{jsonl}"), "one.yaml")
    workload(p, db)
    assert direct_client[db].orders.count_documents({}) == 3000
    live = advise_json(admin_of(p))
    check_answers(live, db)
    saved = tmp_path / "saved.json"
    profile = get_profile(admin_of(p))
    text = json.dumps(profile)
    assert "1700000" not in text and '"shipped"' not in text  # no value of a document in the profile
    saved.write_text(text)
    p.stop()  # the last flush
    from_file, from_saved = advise_json(str(jsonl)), advise_json(str(saved))
    check_answers(from_file, db)
    check_answers(from_saved, db)
    assert exact_figures(from_file) == exact_figures(live) == exact_figures(from_saved)
    out = cli("advise", str(jsonl), "--namespace", f"{db}.orders", "--candidate", f"{db}.orders=customer_id:hashed")
    assert out.returncode == 0, out.stderr
    assert f"Recommendation: shard {db}.orders on {{customer_id: 1}} (ranged)" in out.stdout
    assert "{customer_id: hashed}" in out.stdout and "too low cardinality" in out.stdout
    assert cli("advise", str(jsonl), "--candidate", "customer_id").returncode == 2
    assert cli("advise", str(jsonl), "--namespace", f"{db}.none").returncode == 1


def test_two_proxies_each_with_half_merge_through_one_mongodb_sink(
        start: Callable[..., ProxyProcess], direct_client: Client, ferretdb: FerretDB) -> None:  # noqa: F811
    db = f"adv_{uuid.uuid4().hex[:8]}"
    sink = f"{ferretdb.uri}/scaly_profile.adv_{uuid.uuid4().hex[:8]}"
    a = start(config(db, sink), "a.yaml")
    b = start(config(db, sink), "b.yaml")
    for part, p in enumerate((a, b)):
        # one proxy after the other: FerretDB's $inc upserts of the rows are not atomic under
        # concurrent writers (MongoDB's are); the sketches' parts are inserts, safe either way
        workload(p, db, part, 2)
        [ns] = advise_json(admin_of(p))["namespaces"]  # each saw half
        [customer] = [c for c in ns["candidates"] if c["key"] == {"customer_id": 1}]
        assert customer["readDistribution"]["sampleSize"]["find"] == 500
        assert customer["keyCharacteristics"]["numDocsSampled"] == 1500
        p.stop()  # its last flush
    merged = advise_json(sink)
    by_key = check_answers(merged, db)
    assert by_key['{"customer_id": 1}']["keyCharacteristics"]["numDocsSampled"] == 3000
    kinds = {d.get("kind") for d in direct_client[sink.rpartition("/")[2].split(".")[0]][sink.rpartition(".")[2]].find()}
    assert "sketch" in kinds


def test_sketch_parts_fold_and_read_back_whole(ferretdb: FerretDB, direct_client: Client) -> None:
    """Many flushes of one key: parts are folded under a lock, nothing is counted twice."""
    from scalyproxy.evidence.sketches import KeyTracker
    from scalyproxy.evidence.table import ProfileTable
    from scalyproxy.sinks.mongo import MAX_PARTS, MongoSink

    name = f"adv_{uuid.uuid4().hex[:8]}"
    sink = MongoSink(f"{ferretdb.uri}/scaly_profile.{name}")
    tracker = KeyTracker("advisor-test-salt-6f1d2c", 4, {"s.o": [("k",)]})
    try:
        for flush in range(3 * MAX_PARTS):
            delta = ProfileTable(10)
            tracker.feed(delta.sketches, "s.o", [("k",)], ({"k": flush * 10 + j} for j in range(10)))
            assert sink.write(delta) == 1 and not delta.sketches  # what was written is taken out
        parts = direct_client.scaly_profile[name].count_documents({"kind": "sketch"})
        assert parts <= MAX_PARTS + 1
        sketch = sink.read().sketches.get("s.o", "k")
        assert sketch is not None and sketch.documents == 30 * MAX_PARTS and sketch.newmax == 30 * MAX_PARTS
        low, high = sketch.distinct()["lower"], sketch.distinct()["upper"]
        assert low <= 30 * MAX_PARTS <= high
    finally:
        sink.close()
