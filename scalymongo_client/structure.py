"""A Document's declarations (Python) -> the proxy config's YAML form, and back.

Pure: no I/O. The YAML form is the ``collections:`` entry of the proxy config
(issue 5, ``docs/config.md``); a structure written with MongoDB type names is
already in that form, so YAML -> Python is the identity and only Python types
need translating:

==========================================  =====================
Python                                      YAML
==========================================  =====================
``str``                                     ``string``
``int`` / ``bson.Int64``                    ``int`` / ``long``
``float`` / ``Decimal128``                  ``double`` / ``decimal``
``bool``, ``datetime.datetime``             ``bool``, ``date``
``ObjectId``, ``bytes`` / ``Binary``        ``objectId``, ``binData``
``dict`` / ``list`` (bare)                  ``object`` / ``array``
``None`` / ``type(None)``                   ``null``
``typing.Any`` / ``object``                 ``any``
``numbers.Number``                          ``number``
``str | None``, ``Optional[str]``           ``string?``
``int | float``                             ``int | double``
``{'a': int}``                              an embedded document
``[X]``, ``list[X]``                        an array of X
``list[X] | None``                          ``{$array: X, $nullable: true}``
a string such as ``'string?'``              itself
==========================================  =====================
"""

from __future__ import annotations

import datetime
import numbers
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

from bson.binary import Binary
from bson.code import Code
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

__all__ = ["collation_document", "collection_entry", "index_entry", "structure_to_yaml", "type_to_yaml"]

_TYPE_NAMES: dict[Any, str] = {
    str: "string",
    int: "int",
    Int64: "long",
    float: "double",
    Decimal128: "decimal",
    bool: "bool",
    datetime.datetime: "date",
    ObjectId: "objectId",
    bytes: "binData",
    Binary: "binData",
    dict: "object",
    list: "array",
    type(None): "null",
    None: "null",
    re.Pattern: "regex",
    Regex: "regex",
    Code: "javascript",
    Timestamp: "timestamp",
    MinKey: "minKey",
    MaxKey: "maxKey",
    typing.Any: "any",
    object: "any",
    numbers.Number: "number",
}

_INDEX_KEYS = ("fields", "shard_key", "unique", "sparse", "name", "hashed")


def _where(path: str) -> str:
    return f" at {path!r}" if path else ""


def type_to_yaml(spec: Any, path: str = "") -> Any:
    """One field's declaration -> its YAML form (a type name, a mapping or a one-element list)."""
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        return structure_to_yaml(spec, path) if spec else "object"
    if isinstance(spec, list):
        return _list_to_yaml(spec, path)
    if _is_union(spec):
        return _union_to_yaml(typing.get_args(spec), path)
    if typing.get_origin(spec) is list:
        return _generic_list(spec, path)
    try:
        return _TYPE_NAMES[spec]
    except (KeyError, TypeError):
        pass
    raise TypeError(
        f"cannot declare {spec!r}{_where(path)}: use a Python type (str, int, float, bool, "
        "datetime, ObjectId, bytes, ...), a MongoDB type name ('string', 'long', 'string?'), "
        "a dict for an embedded document or a one-element list for an array"
    )


def structure_to_yaml(structure: Mapping[str, Any], path: str = "") -> dict[str, Any]:
    """A structure mapping (embedded documents included) -> its YAML form."""
    out: dict[str, Any] = {}
    for name, spec in structure.items():
        if not isinstance(name, str):
            raise TypeError(f"field names must be strings, got {name!r}{_where(path)}")
        sub = f"{path}.{name}" if path else name
        out[name] = spec if name.startswith("$") else type_to_yaml(spec, sub)
    return out


def _list_to_yaml(spec: list[Any], path: str) -> Any:
    if not spec:
        return "array"
    if len(spec) != 1:
        raise TypeError(
            f"an array is declared by a one-element list [ELEMENT]{_where(path)}, got {len(spec)} elements"
        )
    return [type_to_yaml(spec[0], f"{path}.0")]


def _generic_list(spec: Any, path: str) -> Any:
    args = typing.get_args(spec)
    return [type_to_yaml(args[0], f"{path}.0")] if args else "array"


def _is_union(spec: Any) -> bool:
    return isinstance(spec, types.UnionType) or typing.get_origin(spec) is typing.Union


def _union_to_yaml(members: tuple[Any, ...], path: str) -> Any:
    nullable = any(m is type(None) or m is None for m in members)
    rest = [m for m in members if m is not type(None) and m is not None]
    compound = [m for m in rest if isinstance(type_to_yaml(m, path), list | dict)]
    if compound:
        if len(rest) != 1:
            raise TypeError(f"a union{_where(path)} may mix an array or embedded document only with None")
        return _nullable_compound(type_to_yaml(rest[0], path))
    names: list[str] = []
    for member in rest:
        name = type_to_yaml(member, path)
        if name not in names:
            names.append(name)
    text = " | ".join(names) if names else "null"
    return f"{text}?" if nullable and names else text


def _nullable_compound(value: Any) -> dict[str, Any]:
    if isinstance(value, list):
        return {"$array": value[0], "$nullable": True}
    return {**value, "$nullable": True}


def index_entry(index: Mapping[str, Any]) -> dict[str, Any]:
    """One ``indexes`` item (``fields`` as names, (name, direction) pairs or a mapping) -> YAML."""
    unknown = [k for k in index if k not in _INDEX_KEYS]
    if unknown:
        raise TypeError(f"unknown index option(s) {unknown} (allowed: {', '.join(_INDEX_KEYS)})")
    if "fields" not in index:
        raise TypeError(f"index {dict(index)!r} has no 'fields'")
    keys = _index_keys(index["fields"])
    if index.get("hashed"):
        if len(keys) != 1:
            raise TypeError("hashed: True needs exactly one field (or write fields: {name: 'hashed'})")
        keys = [(keys[0][0], "hashed")]
    out: dict[str, Any] = {"fields": _keys_to_yaml(keys)}
    for flag in ("shard_key", "unique", "sparse"):
        if index.get(flag):
            out[flag] = True
    if index.get("name"):
        out["name"] = str(index["name"])
    return out


def _index_keys(fields: Any) -> list[tuple[str, Any]]:
    if isinstance(fields, str):
        return [(fields, 1)]
    if isinstance(fields, Mapping):
        return [(str(k), v) for k, v in fields.items()]
    if isinstance(fields, Sequence):
        return [(f, 1) if isinstance(f, str) else (str(f[0]), f[1]) for f in fields]
    raise TypeError(f"index fields must be a list or a mapping, got {fields!r}")


def _keys_to_yaml(keys: list[tuple[str, Any]]) -> list[str] | dict[str, Any]:
    if all(direction == 1 for _, direction in keys):
        return [name for name, _ in keys]
    return dict(keys)


def collection_entry(
    structure: Mapping[str, Any],
    required: Sequence[str] = (),
    indexes: Sequence[Mapping[str, Any]] = (),
    additional_fields: bool = False,
    rules: Mapping[str, str] | None = None,
    collation: Any = None,
) -> dict[str, Any]:
    """The ``collections."db.coll"`` entry of the proxy config for these declarations."""
    entry: dict[str, Any] = {"structure": structure_to_yaml(structure)}
    if required:
        entry["required"] = [str(r) for r in required]
    entry["additional_fields"] = bool(additional_fields)
    if rules:
        entry["rules"] = dict(rules)
    if indexes:
        entry["indexes"] = [index_entry(ix) for ix in indexes]
    if collation is not None:
        entry["collation"] = collation_document(collation)
    return entry


def collation_document(collation: Any) -> dict[str, Any]:
    """A collation as a plain document: a mapping, or pymongo's ``Collation`` (its ``.document``)."""
    document = getattr(collation, "document", collation)
    if not isinstance(document, Mapping):
        raise TypeError(f"collation must be a mapping or a pymongo Collation, got {collation!r}")
    return dict(document)
