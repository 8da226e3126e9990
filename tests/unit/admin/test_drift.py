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
