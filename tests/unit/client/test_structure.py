"""Python declarations -> the proxy config's YAML form (scalymongo_client.structure)."""

from __future__ import annotations

import datetime
import typing
from typing import Any

import pytest
from bson.int64 import Int64
from bson.objectid import ObjectId

from scalymongo_client.structure import (
    collection_entry,
    index_entry,
    structure_to_yaml,
    type_to_yaml,
)


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        (str, "string"),
        (int, "int"),
        (Int64, "long"),
        (float, "double"),
        (bool, "bool"),
        (datetime.datetime, "date"),
        (ObjectId, "objectId"),
        (bytes, "binData"),
        (dict, "object"),
        ({}, "object"),
        (list, "array"),
        ([], "array"),
        (None, "null"),
        (typing.Any, "any"),
        ("string?", "string?"),
        ("int | long", "int | long"),
        (str | None, "string?"),
        (typing.Optional[int], "int?"),  # noqa: UP045 - the typing spelling is what is tested
        (int | float, "int | double"),
        (int | float | None, "int | double?"),
        ([str], ["string"]),
        (list[int], ["int"]),
        (list[int] | None, {"$array": "int", "$nullable": True}),
        ({"a": int, "b": [{"c": str}]}, {"a": "int", "b": [{"c": "string"}]}),
        ({"a": int, "$nullable": True}, {"a": "int", "$nullable": True}),
    ],
)
def test_type_to_yaml(declared: Any, expected: Any) -> None:
    assert type_to_yaml(declared) == expected


@pytest.mark.parametrize(
    ("declared", "fragment"),
    [
        (set, "cannot declare"),
        ([str, int], "one-element list"),
        ({1: int}, "field names must be strings"),
        (list[str] | dict, "may mix an array or embedded document only with None"),
    ],
)
def test_bad_declarations(declared: Any, fragment: str) -> None:
    with pytest.raises(TypeError, match=fragment):
        structure_to_yaml({"outer": {"inner": declared}})


def test_bad_declaration_message_names_the_field() -> None:
    with pytest.raises(TypeError, match="'outer.inner'"):
        structure_to_yaml({"outer": {"inner": set}})


@pytest.mark.parametrize(
    ("index", "expected"),
    [
        ({"fields": ["a", "b"], "unique": True}, {"fields": ["a", "b"], "unique": True}),
        ({"fields": "a"}, {"fields": ["a"]}),
        ({"fields": [("a", 1), ("b", -1)]}, {"fields": {"a": 1, "b": -1}}),
        ({"fields": {"a": "hashed"}, "shard_key": True}, {"fields": {"a": "hashed"}, "shard_key": True}),
        ({"fields": ["a"], "hashed": True}, {"fields": {"a": "hashed"}}),
        ({"fields": ["a"], "sparse": True, "name": "by_a", "unique": False}, {"fields": ["a"], "sparse": True, "name": "by_a"}),
    ],
)
def test_index_entry(index: dict[str, Any], expected: dict[str, Any]) -> None:
    assert index_entry(index) == expected


@pytest.mark.parametrize(
    ("index", "fragment"),
    [
        ({"keys": ["a"]}, "unknown index option"),
        ({"unique": True}, "has no 'fields'"),
        ({"fields": ["a", "b"], "hashed": True}, "exactly one field"),
    ],
)
def test_bad_index(index: dict[str, Any], fragment: str) -> None:
    with pytest.raises(TypeError, match=fragment):
        index_entry(index)


def test_collection_entry_is_the_config_form() -> None:
    entry = collection_entry(
        {"author": str, "n": int},
        required=["n"],
        indexes=[{"fields": ["author"], "shard_key": True}],
        rules={"unindexed_query": "off"},
    )
    assert entry == {
        "structure": {"author": "string", "n": "int"},
        "required": ["n"],
        "additional_fields": False,
        "rules": {"unindexed_query": "off"},
        "indexes": [{"fields": ["author"], "shard_key": True}],
    }
