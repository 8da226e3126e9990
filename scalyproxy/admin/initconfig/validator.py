"""A collection's ``$jsonSchema`` validator -> a structure, merged with the sample's. Pure.

The opposite direction of :mod:`scalyproxy.policy.jsonschema` (``export-jsonschema``):
``bsonType`` / ``type`` give the type names (all four numeric types read back
as ``number``), ``properties`` an embedded document, ``items`` (one schema) an
array, ``required`` the required fields, ``additionalProperties: false`` a
strict document. What a structure cannot say (``anyOf``, ``oneOf``, ``allOf``,
``not``, ``patternProperties``, tuple ``items``, a validator that is a query
rather than a ``$jsonSchema``) is named in a comment and left out.

The validator says what the server accepts, the sample what is there; the
merge keeps both: a field only the validator declares is added, a field it
requires is required, its types join the sample's union.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from scalyproxy.admin.initconfig.infer import declarable
from scalyproxy.admin.initconfig.model import NUMERIC, Field, Node, canonical
from scalyproxy.config.model import TYPE_NAMES
from scalyproxy.policy.bsontypes import type_name

SOURCE: Final = "$jsonSchema validator"
_OPEN: Final = "open:"
_JSON_TYPES: Final = {"boolean": "bool", "integer": "long", "number": "number", "string": "string",
                      "object": "object", "array": "array", "null": "null"}
_UNSUPPORTED: Final = ("anyOf", "oneOf", "allOf", "not", "patternProperties", "dependencies")
_BSON_NAMES: Final = frozenset(TYPE_NAMES) - {"any"}  # the aliases $jsonSchema knows, number included


def from_validator(validator: Any) -> tuple[Node | None, tuple[str, ...]]:
    """The structure a collection's ``validator`` option declares, and notes on what was left out."""
    if not isinstance(validator, Mapping) or not validator:
        return None, ()
    schema = validator.get("$jsonSchema")
    if not isinstance(schema, Mapping):
        return None, ("the validator is a query expression, not a $jsonSchema: not translated",)
    others = sorted(k for k in validator if k != "$jsonSchema")
    notes = (f"validator parts that are not $jsonSchema ({', '.join(others)}) are not translated",) if others else ()
    node = _schema(schema, "")
    if node.kind != "object":
        return None, (*notes, "the $jsonSchema does not describe documents: not translated")
    return node, notes


def _names(schema: Mapping[str, Any]) -> list[str] | None:
    raw = schema.get("bsonType", schema.get("type"))
    if raw is None:
        return None
    values = [raw] if isinstance(raw, str) else list(raw) if isinstance(raw, list) else []
    out = []
    for value in values:
        name = value if "bsonType" in schema else _JSON_TYPES.get(str(value), "")
        if name in _BSON_NAMES:
            out.append(name)
    return out


def _collapse(names: list[str]) -> list[str]:
    if set(NUMERIC) <= set(names):
        names = ["number", *[n for n in names if n not in NUMERIC]]
    return names


def _schema(schema: Mapping[str, Any], path: str) -> Node:
    notes = [f"{key} in the validator not translated" for key in _UNSUPPORTED if key in schema]
    names = _names(schema)
    if names is None:
        names = _implied(schema)
    if "enum" in schema and isinstance(schema["enum"], list):
        names = names or sorted({type_name(v) for v in schema["enum"]})
        notes.append("enum in the validator: only the types of its values are kept")
    nullable = "null" in names
    names = _collapse([n for n in names if n != "null"])
    if names == ["object"] and isinstance(schema.get("properties"), Mapping):
        return replace(_object(schema, path), nullable=nullable).noted(*notes)
    if names == ["array"] and isinstance(schema.get("items"), Mapping):
        return Node("array", nullable=nullable, items=_schema(schema["items"], f"{path}[]"), notes=tuple(notes))
    if names == ["array"] and "items" in schema:
        notes.append("per-position items in the validator not translated")
    return Node("scalar", types=canonical(names) if names else ("any",), nullable=nullable and bool(names),
                notes=tuple(notes))


def _implied(schema: Mapping[str, Any]) -> list[str]:
    if "properties" in schema or "required" in schema:
        return ["object"]
    if "items" in schema:
        return ["array"]
    return []


def _object(schema: Mapping[str, Any], path: str) -> Node:
    required = schema.get("required")
    required_names = {str(r) for r in required} if isinstance(required, list) else set()
    fields = []
    skipped = []
    for name, sub in schema["properties"].items():
        if not declarable(str(name)) or not isinstance(sub, Mapping):
            skipped.append(str(name))
            continue
        if path == "" and name == "_id":
            fields.append(Field("_id", _schema(sub, "_id"), False, f"from the {SOURCE}"))
            continue
        is_required = name in required_names
        note = f"{'required' if is_required else 'optional'}: from the {SOURCE}"
        fields.append(Field(str(name), _schema(sub, f"{path}.{name}" if path else str(name)), is_required, note))
    notes = [f"{len(skipped)} propert(ies) of the validator cannot be declared"] if skipped else []
    missing = sorted(required_names - {f.name for f in fields})
    if missing:
        notes.append(f"required in the validator but not in its properties: {', '.join(missing)} (not translated)")
    additional = schema.get("additionalProperties") is not False
    if additional:
        notes.insert(0, f"{_OPEN} the validator does not set additionalProperties: false")
    return Node("object", fields=tuple(fields), additional=additional, notes=tuple(notes))


# -- merging with the sample ---------------------------------------------------------


def merge(sampled: Node | None, declared: Node | None) -> Node | None:
    """The sample's structure, with what the validator says more."""
    if declared is None:
        return sampled
    if sampled is None:
        return declared.noted(f"from the {SOURCE} (no documents sampled)")
    return _merge(sampled, declared, root=True)


def _merge(sampled: Node, declared: Node, root: bool = False) -> Node:
    nullable = sampled.nullable or declared.nullable
    if sampled.kind == declared.kind == "object":
        return _merge_objects(sampled, declared, nullable, root)
    if sampled.kind == declared.kind == "array":
        assert sampled.items is not None and declared.items is not None
        return replace(sampled, nullable=nullable, items=_merge(sampled.items, declared.items))
    if sampled.kind == "scalar" and declared.kind == "scalar":
        types = canonical((*sampled.types, *declared.types))
        note = _widened(sampled, types)
        return replace(sampled, types=types, nullable=nullable).noted(note, *declared.notes)
    types = canonical((_bare(sampled), _bare(declared)))
    return Node("scalar", types=types, nullable=nullable, notes=(
        f"the sample shows {_bare(sampled)}, the {SOURCE} {_bare(declared)}: declared as {' | '.join(types)}",))


def _bare(node: Node) -> str:
    return " | ".join(node.types) if node.kind == "scalar" else node.kind


def _widened(sampled: Node, types: tuple[str, ...]) -> str:
    if types == sampled.types or not sampled.types:
        return ""
    return f"the {SOURCE} allows {' | '.join(types)}"


def _merge_objects(sampled: Node, declared: Node, nullable: bool, root: bool) -> Node:
    out = replace(sampled, nullable=nullable)
    if not declared.additional and sampled.additional:
        out = replace(out, additional=False).noted(f"strict: the {SOURCE} has additionalProperties: false")
    for dfield in declared.fields:
        sfield = sampled.field(dfield.name)
        if sfield is None:
            note = f"{'required' if dfield.required else 'optional'}: from the {SOURCE}, not in the sample"
            out = out.with_field(replace(dfield, note=note))
            continue
        merged = replace(sfield, node=_merge(sfield.node, dfield.node))
        if dfield.required and not sfield.required and not (root and dfield.name == "_id"):
            merged = replace(merged, required=True, note=f"required by the {SOURCE}; {sfield.note}")
        out = out.with_field(merged)
    return out.noted(*[n for n in declared.notes if not n.startswith(_OPEN)])
