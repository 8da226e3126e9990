"""init-config's indexes and shard keys (pure): listIndexes documents, config.collections
entries and --shard-key -> indexes: entries, fitted into the inferred structure."""

from __future__ import annotations

from typing import Any

import pytest

from scalyproxy.admin.initconfig.indexes import (
    ShardKeyError,
    ShardKeySpec,
    index_plan,
    plan_indexes,
)
from scalyproxy.admin.initconfig.infer import sample_stats
from scalyproxy.admin.initconfig.model import ConfigPlan, IndexPlan
from scalyproxy.admin.initconfig.plan import CollectionInput, plan_collection
from scalyproxy.admin.initconfig.render import render
from scalyproxy.config import load_config_text

ID = {"v": 2, "key": {"_id": 1}, "name": "_id_"}


def test_plain_indexes_keep_keys_flags_and_names() -> None:
    plan = index_plan({"key": {"a": 1, "b": -1}, "name": "a_b", "unique": True, "sparse": True}, None)
    assert plan == IndexPlan((("a", 1), ("b", -1)), unique=True, sparse=True, name="a_b")
    hashed = index_plan({"key": {"h": "hashed"}, "name": "h_hashed"}, None)
    assert isinstance(hashed, IndexPlan) and hashed.keys == (("h", "hashed"),)
    geo = index_plan({"key": {"loc": "2dsphere"}, "name": "g", "2dsphereIndexVersion": 3}, None)
    assert isinstance(geo, IndexPlan) and geo.keys == (("loc", "2dsphere"),)
    assert index_plan({"key": {"a": 1.0, "b": Int(-1)}, "name": "n"}, None) == IndexPlan((("a", 1), ("b", -1)), name="n")


class Int(int):
    """An Int64-like int subclass: directions are compared by sign."""


def test_the_id_index_is_implicit() -> None:
    assert index_plan(ID, None) is None


def test_text_index_reads_its_weights() -> None:
    doc = {"key": {"kind": 1, "_fts": "text", "_ftsx": 1}, "name": "t", "weights": {"title": 3, "body": 1}}
    plan = index_plan(doc, None)
    assert isinstance(plan, IndexPlan)
    assert plan.keys == (("kind", 1), ("title", "text"), ("body", "text"))


@pytest.mark.parametrize(
    ("doc", "reason"),
    [
        ({"key": {"$**": 1}, "name": "w"}, "index w: a wildcard index"),
        ({"key": {"a.$**": 1}, "name": "w"}, "index w: a wildcard index"),
        ({"key": {"_fts": "text", "_ftsx": 1}, "name": "t", "weights": {"$**": 1}}, "index t: a wildcard text index"),
        ({"key": {"a": 1}, "name": "p", "partialFilterExpression": {"s": {"$eq": "secret"}}},
         "index p: a partial index (partialFilterExpression on s)"),
        ({"key": {"a": 1}, "name": "hid", "hidden": True}, "index hid: hidden"),
        ({"key": {"a": 1}, "name": "c", "collation": {"locale": "fr"}}, "index c: collation 'fr' differs"),
        ({"key": {"p": "geoHaystack", "q": 1}, "name": "gh"}, "index gh: key type 'geoHaystack' on p"),
    ],
)
def test_what_the_format_cannot_say_is_skipped_with_why(doc: dict[str, Any], reason: str) -> None:
    skipped = index_plan(doc, None)
    assert isinstance(skipped, str) and skipped.startswith(reason)
    assert "secret" not in skipped  # no values from filters


def test_an_index_with_the_collection_collation_is_kept() -> None:
    fr = {"locale": "fr", "strength": 2}
    assert isinstance(index_plan({"key": {"a": 1}, "name": "c", "collation": fr}, fr), IndexPlan)


def test_ttl_is_noted() -> None:
    plan = index_plan({"key": {"at": 1}, "name": "ttl", "expireAfterSeconds": 3600}, None)
    assert isinstance(plan, IndexPlan) and "expire after 3600 s" in plan.notes[0]


def test_the_shard_key_marks_the_index_with_exactly_its_fields() -> None:
    docs = [ID, {"key": {"a": 1, "b": 1}, "name": "a_b", "unique": True}, {"key": {"c": 1}, "name": "c"}]
    plans, skipped = plan_indexes(docs, None, [("a", 1), ("b", 1)], True, None)
    assert skipped == ()
    assert [p.shard_key for p in plans] == [True, False]
    assert plans[0].unique and plans[0].notes[0] == "shard key from config.collections"


def test_a_shard_key_without_its_index_is_added_first() -> None:
    docs = [{"key": {"a": 1, "b": 1, "z": 1}, "name": "abz"}]
    plans, _ = plan_indexes(docs, None, [("a", 1), ("b", 1)], True, None)
    assert plans[0].keys == (("a", 1), ("b", 1)) and plans[0].shard_key and plans[0].unique
    assert "added: index abz starts with these fields" in plans[0].notes[0]
    plans, _ = plan_indexes([], None, [("h", "hashed")], True, None)
    assert plans[0].keys == (("h", "hashed"),) and not plans[0].unique  # hashed is never unique
    assert "no index with these fields was listed" in plans[0].notes[0]


def test_shard_key_option_overrides_the_catalogue() -> None:
    spec = ShardKeySpec.parse("shop.orders=customer_id:hashed")
    assert spec.namespace == "shop.orders" and spec.keys == (("customer_id", "hashed"),)
    plans, _ = plan_indexes([], None, [("other", 1)], False, spec)
    assert plans[0].keys == (("customer_id", "hashed"),)
    assert "overrides config.collections: {other: 1}" in plans[0].notes[0]
    same = ShardKeySpec.parse("blog.posts=author,title")
    plans, _ = plan_indexes([{"key": {"author": 1, "title": 1}, "name": "at", "unique": True}], None,
                            [("author", 1), ("title", 1)], True, same)
    assert len(plans) == 1 and plans[0].shard_key and plans[0].unique
    assert plans[0].notes[0] == "shard key from --shard-key blog.posts=author,title; config.collections has the same"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("blog.posts", "write DB.COLLECTION=FIELD"),
        ("posts=author", "write DB.COLLECTION=FIELD"),
        ("blog.posts=", "'' is not a field name"),
        ("blog.posts=a,,b", "'' is not a field name"),
        ("blog.posts=$a", "'$a' is not a field name"),
        ("blog.posts=a:ranged", "the only suffix is :hashed"),
        ("blog.posts=a,a", "a field appears twice"),
        ("blog.posts=a:hashed,b:hashed", "at most one field can be hashed"),
    ],
)
def test_bad_shard_key_specs(text: str, message: str) -> None:
    with pytest.raises(ShardKeyError, match=message.replace("$", r"\$")):
        ShardKeySpec.parse(text)


# -- fitting the indexes into the structure ------------------------------------------------


def _plan(docs: list[dict[str, Any]], indexes: list[dict[str, Any]], spec: str | None = None,
          catalogue: dict[str, Any] | None = None) -> tuple[Any, str]:
    data = CollectionInput("db.c", {}, sample_stats(docs), "note", [ID, *indexes], catalogue,
                           ShardKeySpec.parse(spec) if spec else None)
    plan = plan_collection(data)
    text = render(ConfigPlan("mongodb://127.0.0.1:1", (plan,)))
    return plan, text


def test_shard_key_fields_become_required_along_their_path() -> None:
    docs = [{"c": {"region": "eu", "id": i}} for i in range(3)] + [{"c": {"id": 9}}, {}]
    plan, text = _plan(docs, [], "db.c=c.region,c.id")
    loaded = load_config_text(text).collections["db.c"]
    assert loaded.structure is not None and loaded.structure.required == ("c",)
    assert loaded.structure.fields["c"].required == ("region", "id")
    c = plan.structure.field("c")
    assert c.required and c.note == "required: shard key field; in 4 of 5 sampled documents"


def test_a_shard_key_field_missing_from_the_sample_is_declared() -> None:
    plan, text = _plan([{"a": 1}], [], "db.c=k.sub:hashed")
    k = plan.structure.field("k")
    assert k.required and k.node.kind == "object" and k.node.additional
    cfg = load_config_text(text).collections["db.c"]
    assert cfg.shard_key is not None and cfg.shard_key.keys == (("k.sub", "hashed"),)


def test_a_shard_key_field_that_also_held_arrays_drops_them() -> None:
    plan, _ = _plan([{"k": 1}, {"k": [1]}], [], "db.c=k")
    k = plan.structure.field("k")
    assert k.node.types == ("int",) and "array left out: a shard key field cannot be an array" in k.node.notes


@pytest.mark.parametrize(
    ("docs", "spec", "message"),
    [
        ([{"k": [1, 2]}], "db.c=k", "'k' holds arrays in the sample"),
        ([{"l": [{"s": 1}]}], "db.c=l.s", "'l' holds arrays in the sample"),
        ([{"l": 5}], "db.c=l.s", "'l' holds int in the sample"),
    ],
)
def test_shard_keys_a_structure_cannot_have_are_errors(docs: list[dict[str, Any]], spec: str, message: str) -> None:
    with pytest.raises(ShardKeyError, match=message):
        _plan(docs, [], spec)


def test_strict_documents_declare_every_index_field() -> None:
    indexes = [{"key": {"ghost": 1}, "name": "g"}, {"key": {"d.x": 1}, "name": "dx"},
               {"key": {"s.y": 1}, "name": "sy"}, {"key": {"l.z": 1}, "name": "lz"}]
    plan, text = _plan([{"d": {"w": 1}, "s": "str", "l": [{"q": 1}]}], indexes)
    root = plan.structure
    assert root.field("ghost").node.types == ("any",)
    assert root.field("ghost").note == "optional: not in the sample; declared for index g"
    assert root.field("d").node.field("x").node.types == ("any",)
    assert root.field("s").node.types == ("string", "object")
    assert root.field("l").node.items.field("z") is not None
    assert len(load_config_text(text).collections["db.c"].indexes) == 4


def test_an_index_through_an_array_of_arrays_is_skipped() -> None:
    plan, text = _plan([{"m": [[1]]}], [{"key": {"m.x": 1}, "name": "mx"}])
    assert plan.indexes == () and plan.skipped_indexes == (
        "index mx: its path goes through an array of arrays, which a structure cannot name",)
    assert "# skipped index mx:" in text
