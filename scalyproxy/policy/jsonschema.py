"""A collection's structure as the equivalent ``$jsonSchema`` validator (for ``collMod``),
and the ``create`` command that also sets its declared default collation.

``long`` maps to ``["int", "long"]`` and ``number`` to all four numeric types,
matching what the proxy accepts; ``any`` maps to ``{}``.
"""

from __future__ import annotations

from typing import Any

from scalyproxy.config.model import CollectionConfig, TypeSpec

_EXPANDS: dict[str, list[str]] = {
    "number": ["int", "long", "double", "decimal"],
    "long": ["int", "long"],
    "regex": ["regex"],
}


def _bson_types(names: list[str], nullable: bool) -> str | list[str]:
    out: list[str] = []
    for name in names:
        for t in _EXPANDS.get(name, [name]):
            if t not in out:
                out.append(t)
    if nullable and "null" not in out:
        out.append("null")
    return out[0] if len(out) == 1 else out


def node_schema(spec: TypeSpec, root: bool = False) -> dict[str, Any]:
    if spec.kind == "scalar":
        if "any" in spec.types:
            return {}
        return {"bsonType": _bson_types(list(spec.types), spec.nullable)}
    if spec.kind == "array":
        assert spec.items is not None
        return {"bsonType": _bson_types(["array"], spec.nullable), "items": node_schema(spec.items)}
    properties = {name: node_schema(child) for name, child in spec.fields.items()}
    if root and "_id" not in properties:
        properties = {"_id": {}, **properties}
    out: dict[str, Any] = {"bsonType": _bson_types(["object"], spec.nullable)}
    if spec.required:
        out["required"] = list(spec.required)
    out["properties"] = properties
    if not spec.additional_fields:
        out["additionalProperties"] = False
    return out


def validator(coll: CollectionConfig) -> dict[str, Any] | None:
    """The ``$jsonSchema`` validator of a collection, or None without a structure."""
    if coll.structure is None:
        return None
    return {"$jsonSchema": node_schema(coll.structure, root=True)}


def coll_mod(coll: CollectionConfig) -> dict[str, Any] | None:
    """The ``collMod`` command that installs the validator (run it in the collection's database)."""
    schema = validator(coll)
    if schema is None:
        return None
    return {"collMod": coll.name, "validator": schema, "validationLevel": "strict", "validationAction": "error"}


def create(coll: CollectionConfig) -> dict[str, Any] | None:
    """The ``create`` command for a new collection: its validator and its declared default collation.

    A collation is set only when a collection is created (``collMod`` cannot
    change it); None when the collection declares neither.
    """
    schema = validator(coll)
    if schema is None and coll.collation is None:
        return None
    cmd: dict[str, Any] = {"create": coll.name}
    if coll.collation is not None:
        cmd["collation"] = dict(coll.collation)
    if schema is not None:
        cmd.update(validator=schema, validationLevel="strict", validationAction="error")
    return cmd
