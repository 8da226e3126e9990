"""Sampled documents -> an inferred structure, every choice with its reason. Pure.

:class:`DocStats` counts, per field, how many sampled documents have it and
the BSON types of its values (embedded documents and array elements merged
per path); :func:`infer` turns the counts into a :class:`Node` tree:

- a union of the types seen (``int | long``); ``null`` seen makes it nullable;
- a field is required when every document sampled at its level has it,
  optional otherwise (``_id`` is never required: drivers add it on insert);
- an array's element type is the union over all its elements; only empty
  arrays seen: any array;
- a level (the document, or an embedded document) is *open*
  (``additional_fields: true``) when the sample disagrees with itself too
  much to be strict: at least :data:`MIN_DOCUMENTS_TO_OPEN` documents were
  seen there and more than :data:`MAX_RARE_FIELDS` of its field names are
  *rare* (each in fewer than :data:`RARE_PERCENT` % of them, or in only
  one): map-like documents keyed by ids, or a long tail of one-off fields
  that a strict structure would refuse next week. Rare fields are left out;
  an embedded document left with no field is declared ``object`` (any
  document). Field names a structure cannot declare (a dot, a leading ``$``)
  also open their level.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Final

from bson.dbref import DBRef

from scalyproxy.admin.initconfig.model import Field, Node, canonical
from scalyproxy.policy.bsontypes import type_name

RARE_PERCENT: Final = 5
MAX_RARE_FIELDS: Final = 10
MIN_DOCUMENTS_TO_OPEN: Final = 20
MAX_TRACKED_FIELDS: Final = 1000  # distinct names kept per level; beyond that the level is open


def declarable(name: str) -> bool:
    """Whether a structure can declare this field name."""
    return bool(name) and "." not in name and not name.startswith("$")


class ValueStats:
    """The values seen at one path: their types, and merged documents / array elements."""

    __slots__ = ("count", "types", "doc", "items", "arrays", "empty_arrays", "dbrefs")

    def __init__(self) -> None:
        self.count = 0
        self.types: Counter[str] = Counter()
        self.doc: DocStats | None = None
        self.items: ValueStats | None = None
        self.arrays = 0
        self.empty_arrays = 0
        self.dbrefs = 0

    def add(self, value: Any) -> None:
        self.count += 1
        if isinstance(value, DBRef):
            self.types["object"] += 1
            self.dbrefs += 1
            return
        name = type_name(value)
        self.types[name] += 1
        if name == "object":
            if self.doc is None:
                self.doc = DocStats()
            self.doc.add(value)
        elif name == "array":
            self._add_array(value)

    def _add_array(self, value: Any) -> None:
        self.arrays += 1
        if not value:
            self.empty_arrays += 1
            return
        if self.items is None:
            self.items = ValueStats()
        for element in value:
            self.items.add(element)


class DocStats:
    """Documents seen at one level: how many, and per field name the values."""

    __slots__ = ("docs", "fields", "undeclarable", "untracked")

    def __init__(self) -> None:
        self.docs = 0
        self.fields: dict[str, ValueStats] = {}
        self.undeclarable: set[str] = set()
        self.untracked = 0  # values of names beyond MAX_TRACKED_FIELDS

    def add(self, doc: Mapping[str, Any]) -> None:
        self.docs += 1
        for key, value in doc.items():
            stats = self.fields.get(key)
            if stats is None:
                if not declarable(key):
                    self._undeclarable(key)
                    continue
                if len(self.fields) >= MAX_TRACKED_FIELDS:
                    self.untracked += 1
                    continue
                stats = self.fields[key] = ValueStats()
            stats.add(value)

    def _undeclarable(self, key: str) -> None:
        if len(self.undeclarable) < MAX_TRACKED_FIELDS:
            self.undeclarable.add(key)


def sample_stats(documents: Any) -> DocStats:
    """Count an iterable of documents (as pymongo decodes them)."""
    stats = DocStats()
    for doc in documents:
        stats.add(doc)
    return stats


def count(n: int) -> str:
    return f"{n:,}"


def infer(stats: DocStats) -> Node:
    """The structure of a collection's documents (kind ``object``)."""
    return _document(stats, "", "sampled documents", root=True)


def _is_rare(seen: int, docs: int) -> bool:
    return seen * 100 < RARE_PERCENT * docs or seen == 1


def _document(stats: DocStats, path: str, where: str, root: bool = False) -> Node:
    docs = stats.docs
    rare = {n for n, v in stats.fields.items() if _is_rare(v.count, docs)}
    too_many = docs >= MIN_DOCUMENTS_TO_OPEN and (len(rare) > MAX_RARE_FIELDS or stats.untracked > 0)
    reasons = []
    if too_many:
        beyond = f", and more than {count(MAX_TRACKED_FIELDS)} distinct names" if stats.untracked else ""
        reasons.append(f"{count(len(rare))} field names are rare (each in fewer than {RARE_PERCENT}% of the "
                       f"{count(docs)} {where}, or in only one){beyond}")
    if stats.undeclarable:
        reasons.append(f"{count(len(stats.undeclarable))} field name(s) cannot be declared (a dot or a leading $)")
    kept = [n for n in stats.fields if not (too_many and n in rare)]
    fields = tuple(_field(name, stats.fields[name], docs, path, where, root) for name in kept)
    if not fields and not root:
        why = f"map-like: {'; '.join(reasons)}" if reasons else f"only empty documents in the {count(docs)} seen"
        return Node("scalar", types=("object",), notes=(f"{why}: any embedded document",))
    notes = tuple(f"open: {r}; {'they are left out and ' if too_many and i == 0 else ''}any field is accepted"
                  for i, r in enumerate(reasons))
    return Node("object", fields=fields, additional=bool(reasons), notes=notes)


def _field(name: str, stats: ValueStats, docs: int, parent: str, where: str, root: bool) -> Field:
    path = f"{parent}.{name}" if parent else name
    node = _value(stats, path)
    if root and name == "_id":
        seen = f"in all {count(docs)}" if stats.count == docs else f"in {count(stats.count)} of {count(docs)}"
        return Field(name, node, False, f"{seen} {where}; never required (drivers add it on insert)")
    required = stats.count == docs
    if required:
        note = f"required: in all {count(docs)} {where}"
    else:
        note = f"optional: in {count(stats.count)} of {count(docs)} {where}"
    return Field(name, node, required, note)


def _type_counts(stats: ValueStats) -> str:
    if len(stats.types) < 2:
        return ""
    parts = [f"{name} {count(n)}" for name, n in sorted(stats.types.items(), key=lambda kv: (-kv[1], kv[0]))]
    return "types seen: " + ", ".join(parts)


def _value(stats: ValueStats, path: str, where: str = "") -> Node:
    """A field's (or an array element's) node; ``where`` names its documents in notes."""
    names = set(stats.types) - {"null"}
    nullable = "null" in stats.types
    notes = [n for n in (_type_counts(stats),) if n]
    if names == {"object"} and stats.doc is not None and not stats.dbrefs:
        node = _document(stats.doc, path, where or f"{path} documents")
        return replace(node, nullable=nullable).noted(*notes)
    if names == {"array"}:
        return _array(stats, path, nullable, notes)
    if stats.dbrefs:
        notes.append(f"{count(stats.dbrefs)} DBRef value(s): declared as any embedded document")
    elif "object" in names and len(names) > 1:
        notes.append("embedded documents here are not described further: the field also holds " + _others(names, "object"))
    if "array" in names and len(names) > 1:
        notes.append("arrays here are not described further: the field also holds " + _others(names, "array"))
    return Node("scalar", types=canonical(names), nullable=nullable or not names, notes=tuple(notes))


def _others(names: set[str], but: str) -> str:
    return " | ".join(canonical(names - {but}))


def _array(stats: ValueStats, path: str, nullable: bool, notes: list[str]) -> Node:
    if stats.items is None:
        notes.append(f"only empty arrays seen ({count(stats.arrays)}): any array")
        return Node("scalar", types=("array",), nullable=nullable, notes=tuple(notes))
    summary = f"{count(stats.items.count)} elements in {count(stats.arrays)} arrays"
    if stats.empty_arrays:
        summary += f" ({count(stats.empty_arrays)} empty)"
    notes.append(summary)
    element = _value(stats.items, f"{path}[]", f"elements of {path}")
    return Node("array", nullable=nullable, items=element, notes=tuple(notes))
