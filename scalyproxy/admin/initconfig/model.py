"""What ``init-config`` infers, before it is written: a structure tree whose every
choice carries the reason the YAML comment gives.

Frozen dataclasses; :meth:`Node.to_spec` gives the :class:`TypeSpec` the config
loader should read back from the rendered YAML (the round-trip tests compare them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from scalyproxy.config.model import TYPE_NAMES, TypeSpec

Kind = Literal["scalar", "object", "array"]

#: Canonical order of type names in a union (the config's own order of ``$type`` aliases).
_ORDER = {name: i for i, name in enumerate(TYPE_NAMES)}
NUMERIC = ("int", "long", "double", "decimal")


def canonical(names: Iterable[str]) -> tuple[str, ...]:
    """A union's names, deduplicated, in canonical order; ``any`` and ``number`` absorb what they cover."""
    found = {n for n in names if n != "null"}
    if "any" in found:
        return ("any",)
    if "number" in found:
        found -= set(NUMERIC)
    return tuple(sorted(found, key=lambda n: _ORDER.get(n, len(_ORDER))))


@dataclass(frozen=True)
class Node:
    """One place in a document: a scalar union, an embedded document or an array.

    ``types`` never holds ``null`` (that is ``nullable``); an object's ``additional``
    is its own openness (the renderer writes ``$additional_fields`` where it
    differs from the collection's). ``notes`` explain the node (YAML comments).
    """

    kind: Kind
    types: tuple[str, ...] = ()
    nullable: bool = False
    fields: tuple[Field, ...] = ()
    additional: bool = False
    items: Node | None = None
    notes: tuple[str, ...] = ()

    def field(self, name: str) -> Field | None:
        for f in self.fields:
            if f.name == name:
                return f
        return None

    def with_field(self, new: Field) -> Node:
        """This object with ``new`` replacing the field of that name (or appended)."""
        if self.field(new.name) is None:
            return replace(self, fields=(*self.fields, new))
        return replace(self, fields=tuple(new if f.name == new.name else f for f in self.fields))

    def noted(self, *notes: str) -> Node:
        return replace(self, notes=(*self.notes, *[n for n in notes if n and n not in self.notes]))

    def to_spec(self) -> TypeSpec:
        """The TypeSpec the loader builds from this node's YAML (lines left out)."""
        if self.kind == "scalar":
            types = self.types or ("null",)
            return TypeSpec("scalar", types=types, nullable=self.nullable or types == ("null",))
        if self.kind == "array":
            assert self.items is not None
            return TypeSpec("array", nullable=self.nullable, items=self.items.to_spec())
        return TypeSpec(
            "object",
            nullable=self.nullable,
            fields={f.name: f.node.to_spec() for f in self.fields},
            required=tuple(f.name for f in self.fields if f.required),
            additional_fields=self.additional,
        )


@dataclass(frozen=True)
class Field:
    """A field of an embedded document (or of the collection's documents)."""

    name: str
    node: Node
    required: bool = False
    note: str = ""  # presence: "optional: in 812 of 1,000 sampled documents"


@dataclass(frozen=True)
class IndexPlan:
    """One ``indexes:`` entry, and why it is there."""

    keys: tuple[tuple[str, object], ...]
    shard_key: bool = False
    unique: bool = False
    sparse: bool = False
    name: str | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class CollectionPlan:
    """Everything written for one collection."""

    namespace: str
    structure: Node | None  # kind "object", or None: no documents to learn from
    indexes: tuple[IndexPlan, ...] = ()
    notes: tuple[str, ...] = ()  # the collection's header comments
    structure_notes: tuple[str, ...] = ()  # why the structure is (not) there
    skipped_indexes: tuple[str, ...] = ()  # one comment line each
    collation: str | None = None  # the default collation, as the ``collation:`` value (JSON flow)


@dataclass(frozen=True)
class ConfigPlan:
    upstream: str
    collections: tuple[CollectionPlan, ...]
    header: tuple[str, ...] = ()
    upstream_notes: tuple[str, ...] = ()
    skipped: tuple[str, ...] = ()  # namespaces left out, with why ("blog.recent: a view")


Shape = tuple[object, ...]


def normalized(spec: TypeSpec) -> Shape:
    """What a TypeSpec accepts, without its spelling: ``int?`` and ``int | null`` are equal."""
    if spec.kind == "scalar":
        names = set(spec.types) | ({"null"} if spec.nullable else set())
        return ("scalar", frozenset({"any"} if "any" in names else names))
    if spec.kind == "array":
        assert spec.items is not None
        return ("array", spec.nullable, normalized(spec.items))
    fields = tuple(sorted((name, normalized(child)) for name, child in spec.fields.items()))
    return ("object", spec.nullable, spec.additional_fields, frozenset(spec.required), fields)
