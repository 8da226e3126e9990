"""Compiled structures: whole-document validation and update operators by path.

Each :class:`Node` carries an ``ok`` closure (a fast yes/no, no allocation on
the happy path); only when it says no does :meth:`Node.errors` walk the value
again to name every bad path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

from scalyproxy.config.model import NUMERIC_TYPES, TypeSpec

try:
    from scalyproxy import _scan
except ImportError:  # pragma: no cover - built by `pip install` wherever there is a C compiler
    _scan = None  # type: ignore[assignment]
from scalyproxy.policy.bsontypes import (
    INT32_MAX,
    INT32_MIN,
    accepted_names,
    fast_classes,
    type_name,
)

Check = Callable[[Any], bool]

_NUMERIC_RANK: Final = {"int": 0, "long": 1, "double": 2, "decimal": 3}
_ARRAY_STEP_PREFIX: Final = "$["
MAX_MESSAGES: Final = 20


def _always(_value: Any) -> bool:
    return True


def _is_mapping(value: Any) -> bool:
    return value.__class__ is dict or isinstance(value, Mapping)


def _is_array(value: Any) -> bool:
    return value.__class__ is list or isinstance(value, list | tuple)


class Node:
    """One compiled node of a structure."""

    __slots__ = ("kind", "accepted", "nullable", "fields", "required", "additional", "items", "label", "ok", "root", "fast")

    def __init__(self, spec: TypeSpec, root: bool = False) -> None:
        self.root = root
        self.nullable = spec.nullable
        self.label = spec.label()
        self.fields: dict[str, Node] = {k: Node(v) for k, v in spec.fields.items()}
        self.required = spec.required
        self.additional = spec.additional_fields
        self.items = Node(spec.items) if spec.items is not None else None
        self.accepted: frozenset[str] = frozenset()
        if spec.kind == "scalar" and "any" in spec.types:
            self.kind = "any"
        elif spec.kind == "scalar":
            self.kind = "scalar"
            self.accepted = accepted_names(spec.types, spec.nullable)
        else:
            self.kind = spec.kind
        self.ok: Check = self._compile()
        #: Python classes whose instances this node accepts without calling ``ok``
        self.fast: frozenset[type] = fast_classes(self.accepted) if self.kind == "scalar" else frozenset()

    # -- fast check --------------------------------------------------------------

    def _compile(self) -> Check:
        if self.kind == "any":
            return _always
        if self.kind == "scalar":
            return self._scalar_check()
        if self.kind == "array":
            return self._array_check()
        return self._object_check()

    def _scalar_check(self) -> Check:
        accepted = self.accepted
        if accepted == frozenset({"string"}):
            return lambda v: v.__class__ is str or type_name(v) == "string"
        if accepted == frozenset({"int"}):
            return lambda v: (v.__class__ is int and INT32_MIN <= v <= INT32_MAX) or type_name(v) == "int"
        return lambda v: type_name(v) in accepted

    def _array_check(self) -> Check:
        assert self.items is not None
        item_ok, nullable = self.items.ok, self.nullable

        def ok(value: Any) -> bool:
            if _is_array(value):
                return all(map(item_ok, value))
            return nullable and value is None

        return ok

    def _object_check(self) -> Check:
        checks: dict[str, tuple[frozenset[type], Check]] = {k: (v.fast, v.ok) for k, v in self.fields.items()}
        if self.root and "_id" not in checks:
            checks["_id"] = (frozenset(), _always)
        required, additional, nullable = self.required, self.additional, self.nullable
        get = checks.get

        def ok(value: Any) -> bool:
            if value.__class__ is not dict and not isinstance(value, Mapping):
                return nullable and value is None
            for name in required:
                if name not in value:
                    return False
            for key, item in value.items():
                entry = get(key)
                if entry is None:
                    if additional:
                        continue
                    return False
                if item.__class__ not in entry[0] and not entry[1](item):
                    return False
            return True

        return ok

    # -- detailed errors ---------------------------------------------------------

    def errors(self, value: Any, path: str, out: list[str]) -> None:
        """Append one message per bad path under ``path`` (nothing if the value is fine)."""
        if len(out) >= MAX_MESSAGES or self.ok(value):
            return
        if self.kind == "scalar" or value is None or not self._container_matches(value):
            out.append(f"{path or '<document>'}: expected {self.label}, got {type_name(value)}")
        elif self.kind == "array":
            assert self.items is not None
            for i, item in enumerate(value):
                self.items.errors(item, f"{path}.{i}" if path else str(i), out)
        else:
            self._object_errors(value, path, out)

    def _container_matches(self, value: Any) -> bool:
        return _is_array(value) if self.kind == "array" else _is_mapping(value)

    def _object_errors(self, value: Mapping[str, Any], path: str, out: list[str]) -> None:
        prefix = f"{path}." if path else ""
        for name in self.required:
            if name not in value:
                out.append(f"{prefix}{name}: required field missing")
        for key, item in value.items():
            child = self.fields.get(key)
            if child is not None:
                child.errors(item, prefix + str(key), out)
            elif not self.additional and not (self.root and key == "_id"):
                out.append(f"{prefix}{key}: unknown field (not in the structure; additional_fields is false)")

    def same_shape(self, other: Node) -> bool:
        if self.kind != other.kind or self.accepted != other.accepted or self.nullable != other.nullable:
            return False
        if self.fields.keys() != other.fields.keys() or set(self.required) != set(other.required):
            return False
        if any(not c.same_shape(other.fields[k]) for k, c in self.fields.items()):
            return False
        if (self.items is None) != (other.items is None):
            return False
        return self.items is None or other.items is None or self.items.same_shape(other.items)

    @property
    def unstructured(self) -> bool:
        """Any value is fine below this node (any, or an object/array type without structure)."""
        return self.kind == "any" or (self.kind == "scalar" and not self.accepted.isdisjoint({"object", "array"}))


# -- update paths ----------------------------------------------------------------


class Resolved:
    """Where an update path lands: the node (None = anything goes), its parent and last step."""

    __slots__ = ("node", "parent", "step")

    def __init__(self, node: Node | None, parent: Node | None, step: str) -> None:
        self.node, self.parent, self.step = node, parent, step


def _is_array_step(step: str) -> bool:
    return step.isdigit() or step == "$" or step.startswith(_ARRAY_STEP_PREFIX)


def resolve(root: Node, path: str) -> Resolved | str:
    """Follow a dotted update path (``a.0.b``, ``a.$.b``, ``a.$[].b``, ``a.$[x].b``); a message if it leads nowhere."""
    node: Node | None = root
    parent: Node | None = None
    steps = path.split(".")
    for i, step in enumerate(steps):
        if node is None or node.unstructured:
            return Resolved(None, node, step)
        where = ".".join(steps[:i]) or "<document>"
        if node.kind == "array":
            if not _is_array_step(step):
                return f"{path}: {where} is an array (use {where}.$, {where}.$[] or an index)"
            parent, node = node, node.items
            continue
        if node.kind != "object":
            return f"{path}: {where} is {node.label}, it has no field {step!r}"
        if not step or step.startswith("$"):
            return f"{path}: bad path step {step!r}"
        child = node.fields.get(step)
        if child is None and not node.additional and not (node.root and step == "_id"):
            return f"{path}: unknown field (not in the structure; additional_fields is false)"
        parent, node = node, child
    return Resolved(node, parent, steps[-1])


class UpdateChecker:
    """Checks one update document's operators against a structure."""

    def __init__(self, root: Node) -> None:
        self.root = root
        self.ops: dict[str, Callable[[str, Any, list[str]], None]] = {
            "$set": self._set,
            "$setOnInsert": self._set,
            "$unset": self._unset,
            "$inc": self._arith,
            "$mul": self._arith,
            "$min": self._min_max,
            "$max": self._min_max,
            "$push": self._push,
            "$addToSet": self._push,
            "$pull": self._array_only,
            "$pullAll": self._array_only,
            "$pop": self._array_only,
            "$rename": self._rename,
            "$currentDate": self._current_date,
            "$bit": self._bit,
        }

    def check(self, update: Mapping[str, Any]) -> list[str]:
        out: list[str] = []
        for op, args in update.items():
            handler = self.ops.get(op)
            if handler is None:
                out.append(f"{op}: unknown update operator")
            elif not _is_mapping(args):
                out.append(f"{op}: expected a document of paths, got {type_name(args)}")
            else:
                for path, value in args.items():
                    handler(str(path), value, out)
            if len(out) >= MAX_MESSAGES:
                break
        return out

    def _resolve(self, path: str, out: list[str]) -> Resolved | None:
        found = resolve(self.root, path)
        if isinstance(found, str):
            out.append(found)
            return None
        return found

    def _set(self, path: str, value: Any, out: list[str]) -> None:
        found = self._resolve(path, out)
        if found is not None and found.node is not None:
            found.node.errors(value, path, out)

    def _unset(self, path: str, _value: Any, out: list[str]) -> None:
        found = self._resolve(path, out)
        if found is None:
            return
        parent = found.parent
        if parent is not None and parent.kind == "object" and found.step in parent.required:
            out.append(f"{path}: cannot $unset a required field")
        elif parent is not None and parent.kind == "array" and found.node is not None and not found.node.ok(None):
            out.append(f"{path}: $unset of an array element sets it to null; expected {found.node.label}")

    def _numeric_field(self, op: str, path: str, out: list[str], extra: frozenset[str] = frozenset()) -> Node | None:
        found = self._resolve(path, out)
        if found is None or found.node is None or found.node.kind == "any":
            return None
        node = found.node
        usable = (NUMERIC_TYPES | extra) & node.accepted
        if not usable:
            out.append(f"{path}: {op} needs a numeric field, the field is {node.label}")
            return None
        return node

    def _arith(self, path: str, value: Any, out: list[str]) -> None:
        node = self._numeric_field("$inc/$mul", path, out)
        got = type_name(value)
        if got not in _NUMERIC_RANK:
            out.append(f"{path}: $inc/$mul needs a number, got {got}")
            return
        if node is None:
            return
        field_types = [t for t in node.accepted if t in _NUMERIC_RANK]
        results = {got} | {max(t, got, key=_NUMERIC_RANK.__getitem__) for t in field_types}
        bad = sorted(results - node.accepted, key=_NUMERIC_RANK.__getitem__)
        if bad:
            out.append(f"{path}: expected {node.label}, got {bad[-1]} (the result of $inc/$mul by a {got})")

    def _min_max(self, path: str, value: Any, out: list[str]) -> None:
        node = self._numeric_field("$min/$max", path, out, frozenset({"date"}))
        if node is not None:
            node.errors(value, path, out)

    def _array_node(self, op: str, path: str, out: list[str]) -> Node | None:
        found = self._resolve(path, out)
        if found is None or found.node is None or found.node.unstructured:
            return None
        if found.node.kind != "array":
            out.append(f"{path}: {op} needs an array field, the field is {found.node.label}")
            return None
        return found.node

    def _push(self, path: str, value: Any, out: list[str]) -> None:
        node = self._array_node("$push/$addToSet", path, out)
        if node is None or node.items is None:
            return
        if _is_mapping(value) and "$each" in value:
            each = value["$each"]
            if not _is_array(each):
                out.append(f"{path}: $each needs an array, got {type_name(each)}")
                return
            for i, item in enumerate(each):
                node.items.errors(item, f"{path}.$each.{i}", out)
        else:
            node.items.errors(value, path + ".$", out)

    def _array_only(self, path: str, _value: Any, out: list[str]) -> None:
        self._array_node("$pull/$pullAll/$pop", path, out)

    def _rename(self, path: str, target: Any, out: list[str]) -> None:
        source = self._resolve(path, out)
        if not isinstance(target, str):
            out.append(f"{path}: $rename needs a string target, got {type_name(target)}")
            return
        dest = self._resolve(target, out)
        if source is None or dest is None:
            return
        parent = source.parent
        if parent is not None and parent.kind == "object" and source.step in parent.required:
            out.append(f"{path}: cannot $rename a required field")
        if dest.node is None or dest.node.kind == "any":
            return
        if source.node is None:
            out.append(f"{target}: $rename from {path}, whose type is not declared, into a field of type {dest.node.label}")
        elif not source.node.same_shape(dest.node) and not (
            source.node.kind == dest.node.kind == "scalar" and source.node.accepted <= dest.node.accepted
        ):
            out.append(f"{target}: expected {dest.node.label}, got {source.node.label} (renamed from {path})")

    def _current_date(self, path: str, value: Any, out: list[str]) -> None:
        found = self._resolve(path, out)
        if found is None or found.node is None or found.node.kind == "any":
            return
        wanted = "date"
        if _is_mapping(value) and value.get("$type") == "timestamp":
            wanted = "timestamp"
        if wanted not in found.node.accepted:
            out.append(f"{path}: expected {found.node.label}, got {wanted} ($currentDate)")

    def _bit(self, path: str, _value: Any, out: list[str]) -> None:
        found = self._resolve(path, out)
        if found is None or found.node is None or found.node.kind == "any":
            return
        if not found.node.accepted & {"int", "long"} or found.node.accepted - {"int", "long", "null"}:
            out.append(f"{path}: $bit needs an int or long field, the field is {found.node.label}")


#: The BSON type bytes of each ``$type`` alias, as pymongo decodes them (symbol
#: is a ``str``, undefined is ``None``, a DBPointer is a ``DBRef``, an object).
_TYPE_BYTES: Final[dict[str, bytes]] = {
    "double": b"\x01", "string": b"\x02\x0e", "object": b"\x03\x0c", "array": b"\x04",
    "binData": b"\x05", "null": b"\x0a\x06", "objectId": b"\x07", "bool": b"\x08",
    "date": b"\x09", "regex": b"\x0b", "javascript": b"\x0d\x0f", "int": b"\x10",
    "timestamp": b"\x11", "long": b"\x12", "decimal": b"\x13", "minKey": b"\xff",
    "maxKey": b"\x7f",
}  # fmt: skip
_MAX_COMPILED_REQUIRED: Final = 64


def describe(node: Node) -> tuple[Any, ...] | None:
    """The node as the C checker's description, or None if it cannot express it."""
    if node.kind == "any":
        return ("any",)
    if node.kind == "scalar":
        parts = [_TYPE_BYTES.get(name) for name in node.accepted]
        if any(p is None for p in parts):
            return None
        return ("scalar", b"".join(p for p in parts if p is not None))
    if node.kind == "array":
        assert node.items is not None
        item = describe(node.items)
        return None if item is None else ("array", node.nullable, item)
    if any(name not in node.fields for name in node.required):
        return None
    if len(node.required) > _MAX_COMPILED_REQUIRED:
        return None
    fields = []
    for name, child in node.fields.items():
        described = describe(child)
        if described is None:
            return None
        fields.append((name.encode("utf-8"), name in node.required, described))
    if node.root and "_id" not in node.fields:
        fields.append((b"_id", False, ("any",)))
    return ("object", node.nullable, node.additional, tuple(fields))


class Schema:
    """A collection's compiled structure."""

    __slots__ = ("root", "updates", "compiled")

    def __init__(self, spec: TypeSpec) -> None:
        self.root = Node(spec, root=True)
        self.updates = UpdateChecker(self.root)
        #: The same structure for the C checker (None without the extension, or
        #: for a structure it cannot express): see :meth:`unconfirmed`.
        self.compiled: object | None = None
        description = describe(self.root) if _scan is not None else None
        if description is not None:
            self.compiled = _scan.compile_schema(description)

    def unconfirmed(self, run: memoryview) -> list[int] | None:
        """Positions of the documents of a scanned kind-1 run that the C checker
        cannot confirm (the others certainly match); None without a C checker."""
        if self.compiled is None:
            return None
        return _scan.schema_unconfirmed(self.compiled, run)

    def document_errors(self, doc: Any) -> list[str]:
        """Messages for a whole (inserted or replacing) document; empty when valid."""
        if self.root.ok(doc):
            return []
        out: list[str] = []
        if not _is_mapping(doc):
            return [f"<document>: expected object, got {type_name(doc)}"]
        self.root.errors(doc, "", out)
        return out
