"""init-config's inference (pure): crafted samples -> structure, with the reasons given."""

from __future__ import annotations

from typing import Any

from bson import DBRef, Int64, ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from scalyproxy.admin.initconfig.infer import (
    MAX_RARE_FIELDS,
    MAX_TRACKED_FIELDS,
    MIN_DOCUMENTS_TO_OPEN,
    infer,
    sample_stats,
)
from scalyproxy.admin.initconfig.model import CollectionPlan, ConfigPlan, Node, normalized
from scalyproxy.admin.initconfig.render import render
from scalyproxy.config import load_config_text
from scalyproxy.policy import Command, Engine
from tests.unit.policy.strategies import scalar


def structure(docs: list[dict[str, Any]]) -> Node:
    return infer(sample_stats(docs))


def field(node: Node, name: str) -> Any:
    found = node.field(name)
    assert found is not None, f"{name} not declared"
    return found


def test_union_of_types_with_counts() -> None:
    docs = [{"n": i} for i in range(8)] + [{"n": Int64(5)}, {"n": 2**40}]
    n = field(structure(docs), "n")
    assert n.node.types == ("int", "long") and not n.node.nullable
    assert n.required and n.note == "required: in all 10 sampled documents"
    assert "types seen: int 8, long 2" in n.node.notes


def test_optional_with_its_count_and_nullable() -> None:
    docs = [{"a": "x"} for _ in range(812)] + [{} for _ in range(185)] + [{"a": None}] * 3
    a = field(structure(docs), "a")
    assert not a.required
    assert a.note == "optional: in 815 of 1,000 sampled documents"
    assert a.node.types == ("string",) and a.node.nullable


def test_only_null_seen_is_the_null_type() -> None:
    n = field(structure([{"z": None}, {"z": None}]), "z")
    assert n.node.types == () and n.node.nullable
    assert n.node.to_spec().types == ("null",)


def test_id_is_declared_but_never_required() -> None:
    root = structure([{"_id": ObjectId()}, {"_id": ObjectId()}])
    ident = field(root, "_id")
    assert ident.node.types == ("objectId",) and not ident.required
    assert "never required" in ident.note


def test_nested_documents_and_their_own_required_fields() -> None:
    docs = [{"c": {"id": i, "region": "eu"}} for i in range(6)] + [{"c": {"id": 1}}, {"c": None}, {}]
    c = field(structure(docs), "c")
    assert not c.required and c.node.kind == "object" and c.node.nullable
    ident, region = field(c.node, "id"), field(c.node, "region")
    assert ident.required and ident.note == "required: in all 7 c documents"
    assert not region.required and region.note == "optional: in 6 of 7 c documents"


def test_arrays_of_documents_merge_their_elements() -> None:
    docs = [{"lines": [{"sku": "a", "qty": 1}, {"sku": "b"}]}, {"lines": [{"sku": "c", "qty": Int64(2)}]}, {"lines": []}]
    lines = field(structure(docs), "lines")
    assert lines.node.kind == "array" and lines.required
    assert "3 elements in 3 arrays (1 empty)" in lines.node.notes
    items = lines.node.items
    assert items is not None and items.kind == "object"
    assert field(items, "sku").required and field(items, "sku").note == "required: in all 3 elements of lines"
    qty = field(items, "qty")
    assert not qty.required and qty.node.types == ("int", "long")


def test_nested_arrays_of_documents_inside_documents() -> None:
    docs = [{"a": {"b": [{"c": [{"d": 1}, {"d": "x"}]}]}}]
    a = field(structure(docs), "a").node
    b = field(a, "b").node
    assert b.kind == "array" and b.items is not None
    c = field(b.items, "c").node
    assert c.kind == "array" and c.items is not None
    assert field(c.items, "d").node.types == ("string", "int")


def test_only_empty_arrays_is_any_array() -> None:
    tags = field(structure([{"tags": []}, {"tags": []}]), "tags")
    assert tags.node.kind == "scalar" and tags.node.types == ("array",)
    assert "only empty arrays seen (2): any array" in tags.node.notes


def test_mixed_arrays_give_a_union_of_elements() -> None:
    mixed = field(structure([{"m": [1, "a", None]}, {"m": [2.5]}]), "m").node
    assert mixed.kind == "array" and mixed.items is not None
    assert mixed.items.types == ("double", "string", "int") and mixed.items.nullable
    nested = field(structure([{"m": [[1], [2, 3]]}]), "m").node
    assert nested.items is not None and nested.items.kind == "array"
    assert nested.items.items is not None and nested.items.items.types == ("int",)


def test_a_field_that_is_sometimes_a_document_is_a_bare_union() -> None:
    x = field(structure([{"x": {"a": 1}}, {"x": "s"}, {"x": [1]}]), "x").node
    assert x.kind == "scalar" and set(x.types) == {"object", "string", "array"}
    assert any("embedded documents here are not described" in n for n in x.notes)
    assert any("arrays here are not described" in n for n in x.notes)


def test_dbref_is_any_document() -> None:
    ref = field(structure([{"r": DBRef("c", 1)}]), "r").node
    assert ref.kind == "scalar" and ref.types == ("object",)
    assert "1 DBRef value(s): declared as any embedded document" in ref.notes


def test_map_like_documents_become_any_document() -> None:
    docs = [{"name": "x", "scores": {f"user{i}": i, f"user{i + 1000}": 1}} for i in range(MIN_DOCUMENTS_TO_OPEN * 2)]
    root = structure(docs)
    assert not root.additional  # the document itself agrees with itself
    scores = field(root, "scores").node
    assert scores.kind == "scalar" and scores.types == ("object",)
    assert scores.notes[0].startswith("map-like: 80 field names are rare (each in fewer than 5% of the 40 scores documents")


def test_a_long_tail_of_rare_fields_opens_the_level_and_keeps_the_common_ones() -> None:
    docs: list[dict[str, Any]] = [{"a": 1, "b": "x"} for _ in range(100)]
    for i in range(MAX_RARE_FIELDS + 1):
        docs[i][f"rare{i}"] = 1
    root = structure(docs)
    assert root.additional and [f.name for f in root.fields] == ["a", "b"]
    assert root.notes[0].startswith("open: 11 field names are rare")
    # ten rare fields are still declared (optional), the level stays strict
    root = structure(docs[:MAX_RARE_FIELDS] + docs[MAX_RARE_FIELDS + 1:])
    assert not root.additional and len(root.fields) == 2 + MAX_RARE_FIELDS


def test_too_few_documents_are_never_judged_open() -> None:
    docs = [{f"k{i}x{j}": 1 for j in range(3)} for i in range(MIN_DOCUMENTS_TO_OPEN - 1)]
    root = structure(docs)
    assert not root.additional and len(root.fields) == 3 * (MIN_DOCUMENTS_TO_OPEN - 1)


def test_too_many_distinct_names_are_not_all_tracked() -> None:
    docs = [{f"k{i}": 1 for i in range(MAX_TRACKED_FIELDS + 5)} for _ in range(MIN_DOCUMENTS_TO_OPEN)]
    stats = sample_stats(docs)
    assert len(stats.fields) == MAX_TRACKED_FIELDS and stats.untracked == 5 * MIN_DOCUMENTS_TO_OPEN
    root = infer(stats)
    assert root.additional and "more than 1,000 distinct names" in root.notes[0]


def test_undeclarable_names_open_their_level() -> None:
    root = structure([{"a": 1, "x.y": 1, "$weird": 2}])
    assert root.additional and [f.name for f in root.fields] == ["a"]
    assert "2 field name(s) cannot be declared" in root.notes[0]


def test_empty_documents_are_any_document() -> None:
    e = field(structure([{"e": {}}]), "e").node
    assert e.kind == "scalar" and e.types == ("object",)


# -- every sampled document is accepted by what was inferred from it -------------------

_names = st.sampled_from(["a", "b", "c", "_id", "on", "x y"])
_values: st.SearchStrategy[Any] = st.recursive(
    scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_names, inner, max_size=3),
    max_leaves=8,
)
_documents = st.lists(st.dictionaries(_names, _values, max_size=4), min_size=1, max_size=25)


def _config(root: Node) -> str:
    plan = CollectionPlan("db.coll", root)
    text = render(ConfigPlan("mongodb://127.0.0.1:27017", (plan,)))
    return text.replace("schema: warn", "schema: enforce")


@settings(max_examples=150, deadline=None)
@given(_documents)
def test_the_inferred_structure_accepts_every_sampled_document(docs: list[dict[str, Any]]) -> None:
    root = structure(docs)
    cfg = load_config_text(_config(root))
    loaded = cfg.collections["db.coll"].structure
    assert loaded is not None and normalized(loaded) == normalized(root.to_spec())
    engine = Engine.from_config(cfg)
    for doc in docs:
        verdict = engine.decide(Command.from_body({"insert": "coll", "documents": [doc], "$db": "db"}))
        assert verdict.allowed and not verdict.warnings, (doc, verdict.refusal)
