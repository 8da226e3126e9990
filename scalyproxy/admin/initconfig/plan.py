"""One collection's listing, sample, indexes and catalogue entry -> its :class:`CollectionPlan`. Pure.

After the structure is inferred (and merged with the validator), the indexes
are made to fit it the way the loader checks them: every index field is
declared when the document is strict (a field the sample never showed is
declared ``any``); shard-key fields are declared outside arrays, not arrays,
and required at every level (the loader makes them so; the plan says it).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from fnmatch import fnmatchcase
from typing import Any

from scalyproxy.admin.catalogue import shard_key
from scalyproxy.admin.initconfig.indexes import ShardKeyError, ShardKeySpec, plan_indexes
from scalyproxy.admin.initconfig.infer import DocStats, count, infer
from scalyproxy.admin.initconfig.model import CollectionPlan, Field, IndexPlan, Node, canonical
from scalyproxy.admin.initconfig.validator import from_validator, merge
from scalyproxy.config.model import COLLATION_FIELDS

SYSTEM_DATABASES = frozenset({"admin", "config", "local"})  # never sampled


def selected(namespaces: Iterable[str], include: Iterable[str], exclude: Iterable[str]) -> list[str]:
    """Namespaces matching an ``--include`` glob (all when none) and no ``--exclude`` glob, case-sensitive."""
    inc = list(include) or ["*"]
    exc = list(exclude)
    return [ns for ns in namespaces
            if any(fnmatchcase(ns, p) for p in inc) and not any(fnmatchcase(ns, p) for p in exc)]


@dataclass(frozen=True)
class CollectionInput:
    """What was read from the server for one collection."""

    namespace: str
    options: Mapping[str, Any]  # listCollections "options"
    stats: DocStats | None  # None: the sample could not be read
    sample_note: str  # "1,000 of ~52,311 documents sampled with $sample"
    indexes: Sequence[Mapping[str, Any]] = ()
    catalogue: Mapping[str, Any] | None = None  # its config.collections document
    override: ShardKeySpec | None = None
    kind: str = "collection"


def plan_collection(data: CollectionInput) -> CollectionPlan:
    """Raises ShardKeyError when the shard key cannot be declared on this structure."""
    structure, structure_notes = _structure(data)
    collation = data.options.get("collation")
    collation = collation if isinstance(collation, Mapping) else None
    catalogue = data.catalogue or {}
    plans, skipped = plan_indexes(data.indexes, collation, shard_key(data.catalogue), catalogue.get("unique") is True,
                                  data.override)
    if structure is not None:
        structure, plans, unfit = _fit_indexes(structure, plans, data.namespace)
        skipped = (*skipped, *unfit)
    notes = [data.sample_note]
    if data.kind != "collection":
        notes.append(f"a {data.kind} collection")
    return CollectionPlan(
        namespace=data.namespace,
        structure=structure,
        indexes=plans,
        notes=tuple(notes),
        structure_notes=structure_notes,
        skipped_indexes=skipped,
        collation=_collation_text(collation),
    )


def _structure(data: CollectionInput) -> tuple[Node | None, tuple[str, ...]]:
    sampled = infer(data.stats) if data.stats is not None and data.stats.docs else None
    declared, notes = from_validator(data.options.get("validator"))
    if declared is not None:
        level = data.options.get("validationLevel", "strict")
        action = data.options.get("validationAction", "error")
        if level == "off":
            declared, notes = None, (*notes, "the $jsonSchema validator is off (validationLevel: off): not used")
        else:
            notes = (*notes, f"$jsonSchema validator (validationLevel {level}, validationAction {action}) merged in")
    structure = merge(sampled, declared)
    if structure is None:
        notes = (*notes, "no documents sampled and no $jsonSchema validator: no structure (nothing for the schema rule to check)")
    return structure, notes


def _collation_text(collation: Mapping[str, Any] | None) -> str | None:
    """The collation as the config's ``collation:`` value (JSON is YAML), without the ICU ``version``."""
    if not collation or collation.get("locale") == "simple":
        return None
    fields = {k: v for k, v in collation.items() if k in COLLATION_FIELDS}
    return json.dumps(fields, default=str, separators=(", ", ": "))


# -- fitting the indexes into the structure ----------------------------------------------


class _Undeclarable(Exception):
    """An index field the structure cannot declare: the index is left out."""


def _fit_indexes(
    root: Node, plans: Sequence[IndexPlan], ns: str
) -> tuple[Node, tuple[IndexPlan, ...], tuple[str, ...]]:
    """The structure with every index field declared; indexes it cannot declare are skipped."""
    kept: list[IndexPlan] = []
    skipped: list[str] = []
    for plan in plans:
        label = "the shard key" if plan.shard_key else f"index {plan.name or '(unnamed)'}"
        try:
            fitted = root
            for name, _ in plan.keys:
                if plan.shard_key:
                    fitted = _shard_field(fitted, name.split("."), name, ns)
                elif not root.additional:
                    fitted = _declare(fitted, name.split("."), label)
        except _Undeclarable as exc:
            skipped.append(f"{label}: {exc}")
            continue
        root = fitted
        kept.append(plan)
    return root, tuple(kept), tuple(skipped)


def _declare(node: Node, parts: list[str], label: str) -> Node:
    """``node`` (an object) with the dotted path declared, as the loader's index check wants it."""
    name, rest = parts[0], parts[1:]
    f = node.field(name)
    if f is None:
        added = Node("scalar", types=("any",))
        return node.with_field(Field(name, added, False, f"optional: not in the sample; declared for {label}"))
    if not rest:
        return node
    child = f.node
    if child.kind == "array" and child.items is not None:  # the loader looks through one array
        return node.with_field(replace(f, node=replace(child, items=_declare_in(child.items, rest, label))))
    return node.with_field(replace(f, node=_declare_in(child, rest, label)))


def _declare_in(child: Node, rest: list[str], label: str) -> Node:
    if child.kind == "object":
        return _declare(child, rest, label)
    if child.kind == "scalar" and {"object", "any"} & set(child.types):
        return child
    if child.kind == "array":
        raise _Undeclarable("its path goes through an array of arrays, which a structure cannot name")
    return replace(child, types=canonical((*child.types, "object"))).noted(f"object added: {label} is on a sub-field")


def _shard_field(node: Node, parts: list[str], dotted: str, ns: str) -> Node:
    """The path declared outside arrays, not an array, each step required."""
    name, rest = parts[0], parts[1:]
    f = node.field(name)
    if f is None:
        child = Node("scalar", types=("any",)) if not rest else Node("object", additional=True)
        f = Field(name, child, True, "not in the sample")
    child = f.node
    if rest:
        child = _shard_parent(child, dotted, name, ns)
        child = _shard_field(child, rest, dotted, ns)
    else:
        child = _shard_leaf(child, dotted, ns)
    return node.with_field(Field(name, child, True, _shard_note(f.note)))


def _shard_note(note: str) -> str:
    prefix = "required: shard key field; "
    if note.startswith(prefix):
        return note
    presence = note.partition(": ")[2] if note.startswith(("required: ", "optional: ")) else note
    return prefix + presence


def _shard_parent(child: Node, dotted: str, name: str, ns: str) -> Node:
    if child.kind == "object":
        return child
    if child.kind == "scalar" and child.types in (("object",), ("any",)):
        return Node("object", nullable=child.nullable, additional=True, notes=child.notes)
    shown = "arrays" if child.kind == "array" else " | ".join(child.types)
    raise ShardKeyError(f"{ns}: shard key field {dotted!r}: {name!r} holds {shown} in the sample, "
                        "not only embedded documents (a shard key cannot go through an array)")


def _shard_leaf(child: Node, dotted: str, ns: str) -> Node:
    if child.kind == "object" or (child.kind == "scalar" and "array" not in child.types):
        return child
    if child.kind == "scalar" and child.types != ("array",):
        left = tuple(t for t in child.types if t != "array")
        return replace(child, types=left).noted("array left out: a shard key field cannot be an array")
    raise ShardKeyError(f"{ns}: shard key field {dotted!r} holds arrays in the sample (a shard key cannot be an array)")


def sample_note(sampled: int, estimated: int | None, method: str) -> str:
    total = f" of ~{count(estimated)}" if estimated is not None else ""
    return f"{count(sampled)}{total} documents sampled with {method}"
