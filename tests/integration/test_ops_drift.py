"""The drift check against FerretDB.

FerretDB has no sharding catalogue, so these tests write documents shaped like
mongos' ``config.collections`` entries (``{_id: "db.coll", key: {...}, unique}``)
into FerretDB's ``config.collections``: they stand in for the catalogue of a
real cluster, which the proxy reads the same way through mongos (the Docker
tier runs the check against a real one).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from scalyproxy.backend import FerretDB
from tests.conftest import BLOG_CONFIG, ROOT, ProxyProcess
from tests.docker_tier import ComposeCluster
from tests.integration.test_ops import (
    Client,
    admin_of,
    log_events,
    scrape,
    start_proxy,
    value,
    wait_for_event,
    write,
)

__all__ = ["start_proxy"]

DRIFT_CONFIG = """\
listen: 127.0.0.1:0
upstream: mongodb://127.0.0.1:1
admin_listen: 127.0.0.1:0
drift_check: {mode}
drift_check_interval_s: 0.5
collections:
  drift.same:
    indexes:
      - fields: [author, title]
        shard_key: true
        unique: true
  drift.other_key:
    indexes:
      - fields: [a]
        shard_key: true
  drift.hashed:
    indexes:
      - fields: {{h: hashed}}
        shard_key: true
  drift.unsharded:
    indexes:
      - fields: [u]
        shard_key: true
  drift.undeclared:
    structure: {{x: int}}
"""

CATALOGUE = [  # what mongos would have in config.collections
    {"_id": "drift.same", "key": {"author": 1, "title": 1}, "unique": True},
    {"_id": "drift.other_key", "key": {"b": 1}, "unique": False},
    {"_id": "drift.hashed", "key": {"h": 1}, "unique": False},
    {"_id": "drift.undeclared", "key": {"x": "hashed"}, "unique": False},
    {"_id": "drift.dropped", "key": {"z": 1}, "unique": False, "dropped": True},  # not declared: ignored
]
EXPECTED = {
    ("drift.other_key", "other_key"),
    ("drift.hashed", "hashed_vs_ranged"),
    ("drift.unsharded", "not_sharded"),
    ("drift.undeclared", "undeclared_shard_key"),
}


@pytest.fixture()
def catalogue(direct_client: Client) -> Iterator[Client]:
    coll = direct_client.config.collections
    coll.delete_many({"_id": {"$regex": "^drift\\."}})
    coll.insert_many(CATALOGUE)
    try:
        yield direct_client
    finally:
        coll.delete_many({"_id": {"$regex": "^drift\\."}})


def _mismatches(admin: str) -> set[tuple[str, str]]:
    return {
        (dict(labels)["namespace"], dict(labels)["kind"])
        for (name, labels), v in scrape(admin).items()
        if name == "scalyproxy_drift_mismatches" and v == 1
    }


def test_drift_check_finds_each_mismatch(start_proxy: Callable[..., ProxyProcess], catalogue: Client) -> None:
    p = start_proxy(DRIFT_CONFIG.format(mode="true"))
    admin = admin_of(p)
    wait_for_event(p, "drift_check", mismatches=4)
    logged = {(e["namespace"], e["kind"]) for e in log_events(p) if e["event"] == "drift_mismatch"}
    assert logged == EXPECTED
    other = wait_for_event(p, "drift_mismatch", namespace="drift.other_key")
    assert other["declared"] == "{a: 1}" and other["actual"] == "{b: 1}"
    hashed = wait_for_event(p, "drift_mismatch", namespace="drift.hashed")
    assert hashed["declared"] == "{h: hashed}" and hashed["actual"] == "{h: 1}"
    assert _mismatches(admin) == EXPECTED
    assert value(scrape(admin), "scalyproxy_drift_checks_total", outcome="mismatch") >= 1

    # the cluster is fixed (resharded, sharded): the next checks see it
    coll = catalogue.config.collections
    # replace_one: FerretDB v1.24 reports nModified 0 for a $set of {b: 1} to {a: 1}
    coll.replace_one({"_id": "drift.other_key"}, {"key": {"a": 1}, "unique": False})
    coll.replace_one({"_id": "drift.hashed"}, {"key": {"h": "hashed"}, "unique": False})
    coll.insert_one({"_id": "drift.unsharded", "key": {"u": 1}, "unique": False})
    coll.delete_one({"_id": "drift.undeclared"})
    wait_for_event(p, "drift_check", mismatches=0)
    resolved = {(e["namespace"], e["kind"]) for e in log_events(p) if e["event"] == "drift_resolved"}
    assert resolved == EXPECTED
    assert _mismatches(admin) == set()
    assert value(scrape(admin), "scalyproxy_drift_checks_total", outcome="ok") >= 1


def test_strict_refuses_to_start_on_a_mismatch(tmp_path: Path, ferretdb: FerretDB,
                                               catalogue: Client) -> None:
    config = write(tmp_path / "strict.yaml", DRIFT_CONFIG.format(mode="strict"))
    run = subprocess.run(
        [sys.executable, "-m", "scalyproxy", "run", "--config", str(config),
         "--listen", "127.0.0.1:0", "--upstream", ferretdb.uri],
        capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 1
    assert "drift check (strict): 4 shard key mismatch(es)" in run.stderr
    assert "drift.other_key: declared shard key {a: 1}, the cluster has {b: 1}" in run.stderr
    assert "Point any driver at" not in run.stdout  # it never listened


def test_strict_starts_when_the_catalogue_matches(start_proxy: Callable[..., ProxyProcess],
                                                  catalogue: Client) -> None:
    catalogue.config.collections.delete_many({"_id": {"$regex": "^drift\\."}})
    catalogue.config.collections.insert_one({"_id": "drift.only", "key": {"k": "hashed"}, "unique": False})
    config = ("listen: 127.0.0.1:0\nupstream: mongodb://127.0.0.1:1\nadmin_listen: 127.0.0.1:0\n"
              "drift_check: strict\ncollections:\n  drift.only:\n    indexes:\n"
              "      - fields: {k: hashed}\n        shard_key: true\n")
    p = start_proxy(config)
    admin = admin_of(p)
    assert wait_for_event(p, "drift_check")["mismatches"] == 0
    assert value(scrape(admin), "scalyproxy_drift_checks_total", outcome="ok") == 1


def test_strict_refuses_to_start_when_the_catalogue_cannot_be_read(tmp_path: Path, refused_port: int) -> None:
    config = write(tmp_path / "strict.yaml", DRIFT_CONFIG.format(mode="strict"))
    run = subprocess.run(
        [sys.executable, "-m", "scalyproxy", "run", "--config", str(config),
         "--listen", "127.0.0.1:0", "--upstream", f"mongodb://127.0.0.1:{refused_port}"],
        capture_output=True, text=True, timeout=60, cwd=ROOT, stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 1
    assert "drift check (strict) could not run" in run.stderr


# --- against the real mongos of docker-compose.yml (Docker tier; skips, saying why,
# without a Docker engine) ----------------------------------------------------------------


@pytest.mark.docker
def test_drift_check_against_real_mongos(compose_cluster: ComposeCluster, start_proxy: Callable[..., ProxyProcess],
                                         tmp_path: Path) -> None:
    real_cluster = compose_cluster
    blog = BLOG_CONFIG.read_text()
    strict = "admin_listen: 127.0.0.1:0\ndrift_check: strict\n" + blog
    p = start_proxy(strict, upstream=real_cluster.mongos_uri)  # blog.blog_posts really is sharded so
    assert wait_for_event(p, "drift_check")["mismatches"] == 0
    other = strict.replace("- fields: [author, title]", "- fields: [author]")
    assert other != strict
    config = write(tmp_path / "other.yaml", other)
    run = subprocess.run(
        [sys.executable, "-m", "scalyproxy", "run", "--config", str(config),
         "--listen", "127.0.0.1:0", "--upstream", real_cluster.mongos_uri],
        capture_output=True, text=True, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 1
    assert "blog.blog_posts: declared shard key {author: 1}, the cluster has {author: 1, title: 1}" in run.stderr
