"""The drift comparison (pure): declared shard keys versus config.collections documents."""

from __future__ import annotations

from typing import Any

from scalyproxy.admin.catalogue import describe, is_sharded
from scalyproxy.admin.drift import Mismatch, compare
from scalyproxy.config import load_config_text

CONFIG = """\
collections:
  db.same:
    indexes:
      - fields: [a, b]
        shard_key: true
  db.hashed:
    indexes:
      - fields: {h: hashed}
        shard_key: true
  db.order:
    indexes:
      - fields: [a, b]
        shard_key: true
  db.plain:
    structure: {x: int}
"""


def _compare(catalogue: list[dict[str, Any]]) -> list[Mismatch]:
    cfg = load_config_text(CONFIG)
    return compare(cfg.collections, {d["_id"]: d for d in catalogue})


def test_matching_catalogue() -> None:
    assert _compare([
        {"_id": "db.same", "key": {"a": 1, "b": 1}},
        {"_id": "db.hashed", "key": {"h": "hashed"}},
        {"_id": "db.order", "key": {"a": 1.0, "b": 1}},  # numbers of any BSON type
        {"_id": "db.undeclared", "key": {"z": 1}},  # not in the YAML: not our business
    ]) == []


def test_each_kind() -> None:
    found = _compare([
        {"_id": "db.same", "key": {"a": 1, "c": 1}},
        {"_id": "db.hashed", "key": {"h": 1}},
        {"_id": "db.order", "key": {"b": 1, "a": 1}},
        {"_id": "db.plain", "key": {"x": "hashed"}},
    ])
    assert [(m.namespace, m.kind, m.declared, m.actual) for m in found] == [
        ("db.hashed", "hashed_vs_ranged", "{h: hashed}", "{h: 1}"),
        ("db.order", "other_key", "{a: 1, b: 1}", "{b: 1, a: 1}"),
        ("db.plain", "undeclared_shard_key", None, "{x: hashed}"),
        ("db.same", "other_key", "{a: 1, b: 1}", "{a: 1, c: 1}"),
    ]
    assert "hashed versus ranged" in found[0].message()
    assert "declares no shard key" in found[2].message()


def test_not_sharded_dropped_and_unsplittable() -> None:
    found = _compare([
        {"_id": "db.same", "key": {"a": 1, "b": 1}, "dropped": True},
        {"_id": "db.hashed", "key": {"h": "hashed"}, "unsplittable": True},
        {"_id": "db.order", "key": {"a": 1, "b": 1}},
    ])
    assert [(m.namespace, m.kind) for m in found] == [("db.hashed", "not_sharded"), ("db.same", "not_sharded")]
    assert "is not sharded" in found[0].message()


def test_helpers() -> None:
    assert describe([("a", 1), ("h", "hashed")]) == "{a: 1, h: hashed}"
    assert not is_sharded({"_id": "x"})
    assert is_sharded({"_id": "x", "key": {"a": 1}})


COLLATED = """\
collections:
  db.fr:
    collation: {locale: fr, strength: 2}
    indexes: [{fields: [a], shard_key: true}]
  db.simple:
    collation: {locale: simple}
    indexes: [{fields: [a], shard_key: true}]
  db.none:
    indexes: [{fields: [a], shard_key: true}]
  db.unsharded:
    collation: {locale: fr}
"""
FRENCH = {"locale": "fr", "caseLevel": False, "caseFirst": "off", "strength": 2, "numericOrdering": False,
          "alternate": "non-ignorable", "maxVariable": "punct", "normalization": False, "backwards": False,
          "version": "57.1"}  # fmt: skip


def _compare_collated(catalogue: list[dict[str, Any]]) -> list[Mismatch]:
    cfg = load_config_text(COLLATED)
    return compare(cfg.collections, {d["_id"]: d for d in catalogue})


def test_default_collation_matches_on_the_declared_fields() -> None:
    assert _compare_collated([
        {"_id": "db.fr", "key": {"a": 1}, "defaultCollation": FRENCH},  # every field the server reports
        {"_id": "db.simple", "key": {"a": 1}},  # simple: no defaultCollation
        {"_id": "db.none", "key": {"a": 1}, "defaultCollation": {"locale": "simple"}},
    ]) == []


def test_default_collation_mismatches() -> None:
    found = _compare_collated([
        {"_id": "db.fr", "key": {"a": 1}, "defaultCollation": {**FRENCH, "strength": 3}},
        {"_id": "db.simple", "key": {"a": 1}, "defaultCollation": {"locale": "en", "strength": 1}},
        {"_id": "db.none", "key": {"a": 1}, "defaultCollation": FRENCH},
    ])
    assert [(m.namespace, m.kind, m.declared) for m in found] == [
        ("db.fr", "collation", "{locale: fr, strength: 2}"),
        ("db.none", "collation", "simple"),
        ("db.simple", "collation", "simple"),
    ]
    assert found[0].actual is not None and "strength: 3" in found[0].actual
    assert found[2].message() == "db.simple: declared default collation simple, the cluster has {locale: en, strength: 1}"


def test_collation_of_an_unsharded_collection_is_not_compared() -> None:
    """config.collections reports only sharded collections: the unsharded one is 'not sharded' or nothing."""
    assert _compare_collated([{"_id": "db.fr", "key": {"a": 1}, "defaultCollation": FRENCH},
                              {"_id": "db.simple", "key": {"a": 1}}, {"_id": "db.none", "key": {"a": 1}}]) == []
