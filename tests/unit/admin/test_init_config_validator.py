"""init-config and $jsonSchema validators (pure). FerretDB v1.24 has no validators
(`create` with `validator` is "not implemented yet"), so this path is tested here with
listCollections results written as the MongoDB server gives them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scalyproxy.admin.initconfig.infer import sample_stats
from scalyproxy.admin.initconfig.model import ConfigPlan, Node
from scalyproxy.admin.initconfig.plan import CollectionInput, plan_collection
from scalyproxy.admin.initconfig.render import render
from scalyproxy.admin.initconfig.validator import from_validator, merge
from scalyproxy.config import TypeSpec, load_config, load_config_text
from scalyproxy.policy.bsontypes import accepted_names
from scalyproxy.policy.jsonschema import node_schema

ROOT = Path(__file__).resolve().parents[3]

SCHEMA: dict[str, Any] = {
    "bsonType": "object",
    "required": ["name", "address"],
    "additionalProperties": False,
    "properties": {
        "_id": {"bsonType": "objectId"},
        "name": {"bsonType": "string"},
        "age": {"bsonType": ["int", "null"]},
        "score": {"bsonType": ["int", "long", "double", "decimal"]},
        "flag": {"type": "boolean"},
        "kind": {"enum": ["a", "b"]},
        "address": {"bsonType": "object", "required": ["city"],
                    "properties": {"city": {"bsonType": "string"}, "zip": {"bsonType": "string"}}},
        "tags": {"bsonType": "array", "items": {"bsonType": "string"}},
        "pair": {"bsonType": "array", "items": [{"bsonType": "int"}, {"bsonType": "string"}]},
        "either": {"anyOf": [{"bsonType": "int"}, {"bsonType": "string"}]},
    },
}


def field(node: Node | None, name: str) -> Any:
    assert node is not None
    found = node.field(name)
    assert found is not None, name
    return found


def test_a_json_schema_becomes_a_structure() -> None:
    node, notes = from_validator({"$jsonSchema": SCHEMA})
    assert notes == ()
    assert node is not None and node.kind == "object" and not node.additional
    assert field(node, "name").required and not field(node, "age").required
    assert field(node, "age").node.types == ("int",) and field(node, "age").node.nullable
    assert field(node, "score").node.types == ("number",)
    assert field(node, "flag").node.types == ("bool",)
    kind = field(node, "kind").node
    assert kind.types == ("string",) and "enum in the validator: only the types of its values are kept" in kind.notes
    address = field(node, "address")
    assert address.required and field(address.node, "city").required and not field(address.node, "zip").required
    assert address.node.additional  # no additionalProperties: false inside
    tags = field(node, "tags").node
    assert tags.kind == "array" and tags.items is not None and tags.items.types == ("string",)
    assert field(node, "pair").node.types == ("array",)
    assert "per-position items in the validator not translated" in field(node, "pair").node.notes
    assert field(node, "either").node.types == ("any",)
    assert "anyOf in the validator not translated" in field(node, "either").node.notes


@pytest.mark.parametrize(
    ("validator", "note"),
    [
        ({"status": {"$in": ["a", "b"]}}, "the validator is a query expression, not a $jsonSchema: not translated"),
        ({"$jsonSchema": {"bsonType": "string"}}, "the $jsonSchema does not describe documents: not translated"),
    ],
)
def test_what_is_not_a_document_schema_is_named(validator: dict[str, Any], note: str) -> None:
    node, notes = from_validator(validator)
    assert node is None and note in notes


def test_a_validator_with_other_operators_keeps_its_json_schema() -> None:
    node, notes = from_validator({"$jsonSchema": {"properties": {"a": {"bsonType": "int"}}}, "b": {"$gt": 1}})
    assert node is not None and field(node, "a").node.types == ("int",)
    assert notes == ("validator parts that are not $jsonSchema (b) are not translated",)


def test_merge_adds_what_the_validator_says_more() -> None:
    sampled = _infer([{"name": "x", "age": 3}, {"age": Int64Like(5)}])
    declared, _ = from_validator({"$jsonSchema": SCHEMA})
    merged = merge(sampled, declared)
    assert merged is not None and not merged.additional
    name = field(merged, "name")
    assert name.required and name.note.startswith("required by the $jsonSchema validator; optional: in 1 of 2")
    assert field(merged, "address").note == "required: from the $jsonSchema validator, not in the sample"
    age = field(merged, "age").node
    assert age.types == ("int", "long") and age.nullable  # the sample's long and the validator's null
    assert merge(sampled, None) is sampled
    alone = merge(None, declared)
    assert alone is not None and "from the $jsonSchema validator (no documents sampled)" in alone.notes


class Int64Like(int):
    pass


def _infer(docs: list[dict[str, Any]]) -> Node:
    from bson import Int64

    from scalyproxy.admin.initconfig.infer import infer

    return infer(sample_stats([{k: Int64(v) if isinstance(v, Int64Like) else v for k, v in d.items()} for d in docs]))


def test_merge_of_different_kinds_is_a_bare_union() -> None:
    sampled = _infer([{"a": [1]}])
    declared, _ = from_validator({"$jsonSchema": {"properties": {"a": {"bsonType": "string"}}}})
    a = field(merge(sampled, declared), "a").node
    assert a.kind == "scalar" and a.types == ("string", "array")


def _accepts(spec: TypeSpec) -> object:
    """What a spec accepts, however it is spelled (long = int | long; the root's _id: any is implicit)."""
    if spec.kind == "scalar":
        return "any" if "any" in spec.types else accepted_names(spec.types, spec.nullable)
    if spec.kind == "array":
        assert spec.items is not None
        return ("array", spec.nullable, _accepts(spec.items))
    fields = {n: _accepts(c) for n, c in spec.fields.items() if not (n == "_id" and c.types == ("any",))}
    return ("object", spec.nullable, spec.additional_fields, frozenset(spec.required), fields)


@pytest.mark.parametrize("path", ["config/shop.yaml", "config/blog.yaml"])
def test_export_then_import_gives_the_same_structure(path: str) -> None:
    for coll in load_config(ROOT / path).collections.values():
        if coll.structure is None:
            continue
        node, _ = from_validator({"$jsonSchema": node_schema(coll.structure, root=True)})
        assert node is not None
        assert _accepts(node.to_spec()) == _accepts(coll.structure), coll.namespace


def _plan(options: dict[str, Any], docs: list[dict[str, Any]]) -> tuple[Any, str]:
    plan = plan_collection(CollectionInput("shop.users", options, sample_stats(docs), "note"))
    return plan, render(ConfigPlan("mongodb://127.0.0.1:1", (plan,)))


def test_a_listcollections_result_with_validator_and_collation() -> None:
    options = {"validator": {"$jsonSchema": SCHEMA}, "validationLevel": "moderate", "validationAction": "warn",
               "collation": {"locale": "fr", "strength": 2, "caseLevel": False, "version": "57.1"}}
    plan, text = _plan(options, [{"name": "x", "address": {"city": "c"}}])
    assert plan.structure_notes == ("$jsonSchema validator (validationLevel moderate, validationAction warn) merged in",)
    assert plan.collation == '{"locale": "fr", "strength": 2, "caseLevel": false}'
    assert 'collation: {"locale": "fr", "strength": 2, "caseLevel": false}' in text
    cfg = load_config_text(text).collections["shop.users"]
    assert cfg.collation == {"locale": "fr", "strength": 2, "caseLevel": False}  # the ICU version is not a field
    assert cfg.structure is not None and set(cfg.structure.required) == {"name", "address"}
    assert cfg.structure.fields["address"].required == ("city",)


def test_a_validator_that_is_off_is_not_used() -> None:
    plan, _ = _plan({"validator": {"$jsonSchema": SCHEMA}, "validationLevel": "off"}, [{"name": "x"}])
    assert plan.structure.field("address") is None
    assert "the $jsonSchema validator is off (validationLevel: off): not used" in plan.structure_notes


def test_an_empty_collection_with_a_validator_gets_its_structure() -> None:
    plan, text = _plan({"validator": {"$jsonSchema": SCHEMA}}, [])
    assert plan.structure is not None and plan.structure.field("name").required
    assert load_config_text(text).collections["shop.users"].structure is not None
