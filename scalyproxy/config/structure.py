"""The ``structure:`` of a collection: YAML nodes -> a tree of :class:`TypeSpec`.

Syntax (see docs/config.md):

- ``field: string``            a type name (MongoDB ``$type`` alias, ``number``, ``any``)
- ``field: string?``           the same or null (nullable)
- ``field: int | long``        any of several types
- ``field: [string]`` or a one-element YAML list: an array of that element type
- ``field: {a: int, ...}``     an embedded document with its own structure
- inside an embedded document: ``$nullable: true``, ``$additional_fields: true|false``,
  ``$required: [name, ...]`` (fields of that document that must be present whenever it is)
- ``field: {$array: ELEMENT, $nullable: true}``: a nullable array (long form)
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field

import yaml

from scalyproxy.config.model import TYPE_NAMES, TypeSpec
from scalyproxy.config.nodes import (
    INVALID,
    Issues,
    join,
    kind_of,
    line_of,
    mapping,
    read_bool,
    read_sequence,
    read_str,
    scalar_value,
)

_OBJECT_META = ("$nullable", "$additional_fields", "$required")
_ARRAY_META = ("$array", "$nullable")


@dataclass
class _Node:
    """Mutable while required paths and the shard key are applied; frozen at the end."""

    kind: str
    types: tuple[str, ...] = ()
    nullable: bool = False
    fields: dict[str, _Node] = field(default_factory=dict)
    required: list[str] = field(default_factory=list)
    additional: bool = False
    items: _Node | None = None
    line: int | None = None

    def freeze(self) -> TypeSpec:
        return TypeSpec(
            kind=self.kind,  # type: ignore[arg-type]
            types=self.types,
            nullable=self.nullable,
            fields={k: v.freeze() for k, v in self.fields.items()},
            required=tuple(self.required),
            additional_fields=self.additional,
            items=self.items.freeze() if self.items is not None else None,
            line=self.line,
        )


class StructureBuilder:
    """Parses one collection's structure, then applies ``required`` and the shard key."""

    def __init__(self, issues: Issues, additional: bool) -> None:
        self.issues = issues
        self.additional = additional
        self.root: _Node | None = None
        self.invalid: set[str] = set()  # dotted fields whose declaration was already reported

    def parse_root(self, node: yaml.Node, path: str) -> None:
        entries = mapping(node, path, self.issues, "a mapping of field names to types")
        root = _Node("object", additional=self.additional, line=line_of(node))
        if entries is not None:
            self._fields(root, entries, path)
        self.root = root

    # -- types -------------------------------------------------------------

    def _spec(self, node: yaml.Node, path: str) -> _Node | None:
        if isinstance(node, yaml.MappingNode):
            return self._mapping_spec(node, path)
        if isinstance(node, yaml.SequenceNode):
            if len(node.value) != 1:
                self.issues.add(
                    node, path, "an array type is a one-element list: [ELEMENT] (use 'array' for any array)"
                )
                return None
            items = self._spec(node.value[0], join(path, 0))
            return None if items is None else _Node("array", items=items, line=line_of(node))
        return self._type_name(node, path)

    def _type_name(self, node: yaml.Node, path: str) -> _Node | None:
        assert isinstance(node, yaml.ScalarNode)
        value = scalar_value(node)
        if value is None and node.value == "null":
            value = "null"
        if not isinstance(value, str) or not value.strip():
            self.issues.add(node, path, f"expected a type name, got {kind_of(node)} (e.g. string, int, string?)")
            return None
        text = value.strip()
        nullable = text.endswith("?")
        names: list[str] = []
        for part in text.rstrip("?").split("|"):
            name = part.strip()
            if name.endswith("?"):
                nullable, name = True, name[:-1].strip()
            if name not in TYPE_NAMES:
                self.issues.add(node, path, f"unknown type {name!r} ({_suggest(name)})")
                return None
            if name not in names:
                names.append(name)
        if names == ["null"]:
            nullable = True
        return _Node("scalar", types=tuple(names), nullable=nullable, line=line_of(node))

    def _mapping_spec(self, node: yaml.Node, path: str) -> _Node | None:
        entries = mapping(node, path, self.issues)
        if entries is None:
            return None
        if "$array" in entries:
            return self._long_array(entries, path)
        obj = _Node("object", additional=self.additional, line=line_of(node))
        for meta in ("$nullable", "$additional_fields"):
            if meta in entries:
                value = read_bool(entries[meta][1], join(path, meta), self.issues)
                if value is not INVALID:
                    setattr(obj, "nullable" if meta == "$nullable" else "additional", value)
        self._fields(obj, {k: v for k, v in entries.items() if k not in _OBJECT_META}, path)
        if "$required" in entries:
            self._local_required(obj, entries["$required"][1], join(path, "$required"), path)
        return obj

    def _local_required(self, obj: _Node, node: yaml.Node, path: str, parent: str) -> None:
        """``$required``: names of this embedded document's own fields (no dots)."""
        items = read_sequence(node, path, self.issues, "a list of this document's field names")
        for i, item in enumerate(items or ()):
            name = read_str(item, join(path, i), self.issues, "a field name")
            if not isinstance(name, str) or join(parent, name) in self.invalid:
                continue
            if "." in name:
                self.issues.add(item, join(path, i), "a $required name is a field of this document, without dots (dotted paths go in the collection's required: list)")
            elif name not in obj.fields:
                self.issues.add(item, join(path, i), f"required field {name!r} is not declared in this document (declare it, or remove it)")
            elif name not in obj.required:
                obj.required.append(name)

    def _long_array(self, entries: dict[str, tuple[yaml.Node, yaml.Node]], path: str) -> _Node | None:
        for key, (key_node, _) in entries.items():
            if key not in _ARRAY_META:
                self.issues.add(key_node, join(path, key), "unknown key in an $array spec (allowed: $array, $nullable)")
        key_node, items_node = entries["$array"]
        items = self._spec(items_node, join(path, "$array"))
        if items is None:
            return None
        arr = _Node("array", items=items, line=line_of(key_node))
        if "$nullable" in entries:
            value = read_bool(entries["$nullable"][1], join(path, "$nullable"), self.issues)
            arr.nullable = value is True
        return arr

    def _fields(self, obj: _Node, entries: dict[str, tuple[yaml.Node, yaml.Node]], path: str) -> None:
        for name, (key_node, value_node) in entries.items():
            sub = join(path, name)
            if not name or "." in name or name.startswith("$"):
                self.issues.add(
                    key_node, sub, "bad field name (no dots, not starting with $; nest a mapping for sub-fields)"
                )
                continue
            spec = self._spec(value_node, sub)
            if spec is not None:
                obj.fields[name] = spec
            else:
                self.invalid.add(sub)

    # -- required fields and the shard key -------------------------------------

    def require(self, dotted: str, node: yaml.Node, path: str) -> None:
        """Make a dotted path required; through an array of documents it binds each element."""
        target = self._walk(dotted, node, path, through_arrays=True, what="required field")
        if target is not None:
            parent, name = target
            if name not in parent.required:
                parent.required.append(name)

    def shard_key_field(self, dotted: str, node: yaml.Node, path: str) -> None:
        """A shard-key field: present in the structure, outside arrays, required at every level."""
        target = self._walk(dotted, node, path, through_arrays=False, what="shard-key field")
        if target is None:
            return
        parent, name = target
        leaf = parent.fields[name]
        if leaf.kind == "array" or "array" in leaf.types:
            self.issues.add(node, path, f"shard-key field {dotted!r} cannot be an array (change its type)")
        self._require_chain(dotted)

    def _require_chain(self, dotted: str) -> None:
        assert self.root is not None
        current = self.root
        for part in dotted.split("."):
            if part not in current.required:
                current.required.append(part)
            current = current.fields[part]

    def _walk(
        self, dotted: str, node: yaml.Node, path: str, *, through_arrays: bool, what: str
    ) -> tuple[_Node, str] | None:
        if self.root is None:
            return None
        current = self.root
        parts = dotted.split(".")
        for i, part in enumerate(parts):
            child = current.fields.get(part)
            if child is None and any(bad.endswith("structure." + ".".join(parts[: i + 1])) for bad in self.invalid):
                return None  # its declaration was already reported
            if child is None:
                self.issues.add(
                    node, path, f"{what} {dotted!r} is missing from the structure (declare {'.'.join(parts[: i + 1])!r})"
                )
                return None
            if i == len(parts) - 1:
                return current, part
            if child.kind == "array" and through_arrays and child.items is not None:
                child = child.items
            elif child.kind == "array":
                self.issues.add(node, path, f"{what} {dotted!r} cannot be inside an array")
                return None
            if child.kind != "object":
                self.issues.add(node, path, f"{what} {dotted!r}: {part!r} is not an embedded document")
                return None
            if through_arrays and current.fields[part].kind == "object" and part not in current.required:
                current.required.append(part)
            current = child
        return None

    def freeze(self) -> TypeSpec | None:
        return None if self.root is None else self.root.freeze()


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name, TYPE_NAMES, n=1)
    if close:
        return f"did you mean {close[0]!r}?"
    return "known types: " + ", ".join(TYPE_NAMES)
