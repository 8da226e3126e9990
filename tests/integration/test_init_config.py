"""`scalyproxy init-config` against FerretDB, as a new user runs it: generate, check, run the
proxy with the file, and see that the traffic that passed before still passes (every rule warns).

FerretDB v1.24 has no `$sample` (the fallback to a find is what runs here), no hashed
indexes, no validators, views or collations, and does not report `sparse` in listIndexes:
those paths are unit-tested (tests/unit/admin/test_init_config_*.py). Like the drift tests,
a `config.collections` entry is written into FerretDB to stand in for mongos' catalogue.
"""

from __future__ import annotations

import datetime
import json
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import pytest
import yaml
from bson import Int64

from scalyproxy.backend import FerretDB
from scalyproxy.config import ProxyConfig, load_config
from tests.conftest import ROOT, ProxyProcess
from tests.integration.test_ops import log_events, wait_for_event

DB = f"initcfg_{uuid.uuid4().hex[:8]}"


def _posts() -> list[dict[str, Any]]:
    out = []
    for i in range(60):
        doc: dict[str, Any] = {
            "author": f"author{i % 6}", "title": f"title {i}", "views": Int64(i) if i % 10 == 0 else i,
            "tags": ["mongo", "proxy"][: i % 3], "created": datetime.datetime(2024, 1, 1 + i % 28),
            "comments": [{"by": f"u{j}", "rank": j} for j in range(i % 3)],
            "status": None if i % 5 == 0 else "published",
        }
        if i % 4 == 0:
            doc["subtitle"] = "s"
        out.append(doc)
    return out


@pytest.fixture(scope="module")
def client(ferretdb: FerretDB) -> Iterator[pymongo.MongoClient[dict[str, Any]]]:
    c: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(ferretdb.uri, serverSelectionTimeoutMS=10_000)
    db = c[DB]
    db.posts.insert_many(_posts())
    db.posts.create_index([("author", 1), ("title", 1)], unique=True, name="author_title")
    db.posts.create_index([("created", -1), ("views", 1)])
    db.orders.insert_many([{"customer_id": i, "total": 2.5 * i, "lines": [{"sku": "a", "qty": i}]} for i in range(40)])
    db.users.insert_many([{"email": f"u{i}@x.org", "name": f"n{i}", "age": i if i % 2 else None} for i in range(30)])
    db.users.create_index([("email", 1)], unique=True, name="by_email")
    db.users.create_index([("name", 1), ("age", -1)], sparse=True)
    db.events.insert_many([{"kind": "click", "counters": {f"item{i}": i, f"item{i + 100}": 1}} for i in range(40)])
    db.create_collection("empty")
    c.config.collections.insert_one({"_id": f"{DB}.users", "key": {"email": 1}, "unique": True})
    try:
        yield c
    finally:
        c.config.collections.delete_one({"_id": f"{DB}.users"})
        c.drop_database(DB)
        c.close()


def init_config(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scalyproxy", "init-config", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, stdin=subprocess.DEVNULL)


@dataclass
class Generated:
    path: Path
    run: subprocess.CompletedProcess[str]
    config: ProxyConfig


SHARD_KEYS = (f"{DB}.posts=author,title", f"{DB}.orders=customer_id:hashed")


@pytest.fixture(scope="module")
def generated(client: pymongo.MongoClient[dict[str, Any]], ferretdb: FerretDB,
              tmp_path_factory: pytest.TempPathFactory) -> Generated:
    path = tmp_path_factory.mktemp("init-config") / "generated.yaml"
    run = init_config("--from", ferretdb.uri, "--include", f"{DB}.*", "--shard-key", *SHARD_KEYS, "-o", str(path))
    assert run.returncode == 0, run.stderr
    return Generated(path, run, load_config(path))


def test_progress_and_summary_on_stderr(generated: Generated, ferretdb: FerretDB) -> None:
    err = generated.run.stderr
    assert generated.run.stdout == ""
    assert f"init-config: {ferretdb.uri}: FerretDB" in err
    assert re.search(rf"\[4/5\] {DB}\.posts: sampled 60 of ~60 with find in \d+\.\d\ds, 3 indexes", err), err
    assert f"[1/5] {DB}.empty: empty, 1 indexes" in err
    assert re.search(r"init-config: 5 collections \(3 with a shard key, 4 with a structure\), "
                     r"0 views/system collections left out, 0 indexes skipped .*; wrote .*generated\.yaml", err), err


def test_check_accepts_the_file(generated: Generated) -> None:
    check = subprocess.run([sys.executable, "-m", "scalyproxy", "check", str(generated.path)],
                           capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith("OK: 5 collections (3 sharded, 4 with a structure)")


def test_the_file_says_what_the_cluster_has(generated: Generated, ferretdb: FerretDB) -> None:
    cfg, text = generated.config, generated.path.read_text()
    assert cfg.upstream == ferretdb.uri and all(mode == "warn" for mode in vars(cfg.policy.rules).values())
    assert cfg.policy.unknown_namespaces == "allow"
    posts = cfg.collections[f"{DB}.posts"]
    assert posts.shard_key is not None and posts.shard_key.keys == (("author", 1), ("title", 1))
    assert posts.shard_key.unique and posts.shard_key.name == "author_title"
    assert [ix.keys for ix in posts.indexes] == [(("author", 1), ("title", 1)), (("created", -1), ("views", 1))]
    s = posts.structure
    assert s is not None and not s.additional_fields
    assert set(s.required) == {"author", "title", "views", "tags", "created", "comments", "status"}
    assert s.fields["views"].types == ("int", "long") and s.fields["status"].nullable
    comments = s.fields["comments"]
    assert comments.kind == "array" and comments.items is not None and set(comments.items.required) == {"by", "rank"}
    assert "# optional: in 15 of 60 sampled documents" in text  # subtitle
    assert "# types seen: int 54, long 6" in text
    orders = cfg.collections[f"{DB}.orders"]
    assert orders.shard_key is not None and orders.shard_key.keys == (("customer_id", "hashed"),)
    assert "shard key from --shard-key" in text and "added: no index with these fields was listed" in text
    users = cfg.collections[f"{DB}.users"]
    assert users.shard_key is not None and users.shard_key.keys == (("email", 1),) and users.shard_key.unique
    assert "# shard key from config.collections" in text
    events = cfg.collections[f"{DB}.events"].structure
    assert events is not None and events.fields["counters"].types == ("object",)
    assert "map-like: 80 field names are rare" in text
    assert cfg.collections[f"{DB}.empty"].structure is None


def test_the_proxy_with_it_refuses_nothing(generated: Generated, client: pymongo.MongoClient[dict[str, Any]],
                                           proxy_factory: Callable[..., ProxyProcess]) -> None:
    proxy = proxy_factory(generated.path)
    via: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(proxy.uri, serverSelectionTimeoutMS=10_000)
    try:
        db = via[DB]
        found = sorted(d["title"] for d in db.posts.find({"views": {"$gt": 50}}))  # global query
        assert found == sorted(d["title"] for d in client[DB].posts.find({"views": {"$gt": 50}}))
        db.posts.insert_one({"author": "x", "title": "new", "views": "many", "unknown": 1})  # breaks the structure
        db.orders.insert_one({"total": 1.0})  # no shard key
        assert db.orders.update_many({"total": 1.0}, {"$set": {"total": 2.0}}).matched_count == 1
        assert db.users.count_documents({"age": 3}) == 1  # not targeted by email
    finally:
        via.close()
    for rule, ns in (("global_query", "posts"), ("schema", "posts"), ("shard_key_write", "orders")):
        wait_for_event(proxy, "warned", rule=rule, namespace=f"{DB}.{ns}")
    assert [e for e in log_events(proxy) if e["event"] == "refused"] == []
    assert client[DB].posts.count_documents({"title": "new"}) == 1


def test_the_same_file_enforced_would_refuse(generated: Generated, tmp_path: Path) -> None:
    enforced = tmp_path / "enforced.yaml"
    enforced.write_text(generated.path.read_text().replace(": warn", ": enforce"))
    cmd = json.dumps({"find": "posts", "filter": {"views": {"$gt": 50}}, "$db": DB})
    run = subprocess.run([sys.executable, "-m", "scalyproxy", "explain", str(enforced), cmd],
                         capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert run.returncode == 1 and "rule: global_query" in run.stdout, run.stdout + run.stderr


def test_stdout_when_no_output_file(client: pymongo.MongoClient[dict[str, Any]], ferretdb: FerretDB) -> None:
    run = init_config("--from", ferretdb.uri, "--include", f"{DB}.user*", "--sample", "5")
    assert run.returncode == 0, run.stderr
    raw = yaml.safe_load(run.stdout)
    assert list(raw["collections"]) == [f"{DB}.users"]
    assert "# shard key from config.collections" in run.stdout
    assert f"{DB}.users: sampled 5 of ~30 with find" in run.stderr


def test_usage_errors(client: pymongo.MongoClient[dict[str, Any]], ferretdb: FerretDB, tmp_path: Path) -> None:
    nothing = init_config("--from", ferretdb.uri, "--include", "no_such_db_*", "-o", str(tmp_path / "x.yaml"))
    assert nothing.returncode == 2 and "init-config: no collection matched (--include ['no_such_db_*']" in nothing.stderr
    unknown = init_config("--from", ferretdb.uri, "--include", f"{DB}.*", "--shard-key", f"{DB}.nope=a")
    assert unknown.returncode == 2 and f"--shard-key for {DB}.nope: no such collection among those selected" in unknown.stderr
    array = init_config("--from", ferretdb.uri, "--include", f"{DB}.posts", "--shard-key", f"{DB}.posts=tags")
    assert array.returncode == 2 and "shard key field 'tags' holds arrays in the sample" in array.stderr
    unwritable = init_config("--from", ferretdb.uri, "--include", f"{DB}.users", "-o", str(tmp_path / "no" / "x.yaml"))
    assert unwritable.returncode == 1 and "init-config: cannot write" in unwritable.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A socket that accepts connections and never answers (bound to port 0, closed after)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def test_an_unreachable_server_fails_within_the_timeout(silent_port: int, tmp_path: Path) -> None:
    out = tmp_path / "out.yaml"
    run = init_config("--from", f"mongodb://127.0.0.1:{silent_port}", "--timeout", "1", "-o", str(out), timeout=30)
    assert run.returncode == 1
    assert f"init-config: cannot reach 127.0.0.1:{silent_port} within 1s" in run.stderr
    assert not out.exists()
