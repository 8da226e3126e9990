"""``listIndexes`` documents, the sharding catalogue and ``--shard-key`` -> ``indexes:``. Pure.

An index the config format can say (ascending, descending, hashed, 2d,
2dsphere, text, compound, unique, sparse, named) is kept; one it cannot
(wildcard, partial, hidden, another collation than the collection's, other
key types) is left out with a comment saying why. The shard key is the index
entry with ``shard_key: true``: the listed index with exactly its fields, or a
new entry when there is none.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from scalyproxy.admin.catalogue import describe
from scalyproxy.admin.initconfig.model import IndexPlan

_SPECIAL: Final = ("hashed", "2d", "2dsphere")
_TEXT_KEYS: Final = ("_fts", "_ftsx")
_FIELD: Final = re.compile(r"[^\s$.][^\s]*")


class ShardKeyError(ValueError):
    """A ``--shard-key`` that cannot be used; the message names it and the fix."""


@dataclass(frozen=True)
class ShardKeySpec:
    """``--shard-key NS=FIELD[:hashed],FIELD``."""

    namespace: str
    keys: tuple[tuple[str, object], ...]
    text: str

    @classmethod
    def parse(cls, text: str) -> ShardKeySpec:
        ns, sep, spec = text.partition("=")
        ns = ns.strip()
        db, dot, coll = ns.partition(".")
        if not sep or not dot or not db or not coll:
            raise ShardKeyError(f"--shard-key {text!r}: write DB.COLLECTION=FIELD[:hashed][,FIELD...], e.g. blog.posts=author,title")
        keys: list[tuple[str, object]] = []
        for part in spec.split(","):
            keys.append(_key(part.strip(), text))
        names = [k for k, _ in keys]
        if len(set(names)) != len(names):
            raise ShardKeyError(f"--shard-key {text!r}: a field appears twice")
        if sum(1 for _, d in keys if d == "hashed") > 1:
            raise ShardKeyError(f"--shard-key {text!r}: at most one field can be hashed")
        return cls(ns, tuple(keys), text)


def _key(part: str, text: str) -> tuple[str, object]:
    name, colon, kind = part.partition(":")
    if colon and kind != "hashed":
        raise ShardKeyError(f"--shard-key {text!r}: {part!r}: the only suffix is :hashed")
    dotted = name.split(".")
    if not name or not all(_FIELD.fullmatch(p) for p in dotted):
        raise ShardKeyError(f"--shard-key {text!r}: {name!r} is not a field name (dotted for sub-fields, no $, no spaces)")
    return name, ("hashed" if colon else 1)


def _direction(value: Any) -> object | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return 1 if value > 0 else -1 if value < 0 else None
    return value if value in _SPECIAL else None


def _text_keys(key: Sequence[tuple[str, Any]], weights: Any) -> list[tuple[str, Any]] | str:
    """A text index's key with ``_fts``/``_ftsx`` replaced by its weighted fields."""
    if not isinstance(weights, Mapping) or not weights:
        return "a text index without weights"
    if "$**" in weights:
        return "a wildcard text index ($**): the config format has no wildcard"
    out: list[tuple[str, Any]] = []
    for name, value in key:
        if name == "_fts":
            out.extend((str(field), "text") for field in weights)
        elif name != "_ftsx":
            out.append((name, value))
    return out


def index_plan(doc: Mapping[str, Any], collation: Mapping[str, Any] | None) -> IndexPlan | str | None:
    """One ``listIndexes`` document -> an index entry, why it is skipped (a str), or None for ``_id``."""
    key = list(doc.get("key", {}).items())
    name = str(doc.get("name", ""))
    if [k for k, _ in key] == ["_id"]:
        return None
    reason = _unsupported(doc, key, collation)
    if reason:
        return f"index {name}: {reason}"
    if any(k in _TEXT_KEYS for k, _ in key):
        text = _text_keys(key, doc.get("weights"))
        if isinstance(text, str):
            return f"index {name}: {text}"
        key = text
    keys: list[tuple[str, object]] = []
    for field, value in key:
        direction = "text" if value == "text" else _direction(value)
        if direction is None:
            return f"index {name}: key type {value!r} on {field} is not in the config format"
        keys.append((field, direction))
    notes = []
    if "expireAfterSeconds" in doc:
        notes.append(f"TTL index: documents expire after {doc['expireAfterSeconds']} s (not part of the config)")
    return IndexPlan(tuple(keys), unique=doc.get("unique") is True, sparse=doc.get("sparse") is True,
                     name=name or None, notes=tuple(notes))


def _unsupported(doc: Mapping[str, Any], key: Sequence[tuple[str, Any]], collation: Mapping[str, Any] | None) -> str:
    if any(k == "$**" or k.endswith(".$**") for k, _ in key):
        return "a wildcard index: the config format has no wildcard"
    if doc.get("hidden") is True:
        return "hidden: the query planner does not use it"
    partial = doc.get("partialFilterExpression")
    if isinstance(partial, Mapping):
        fields = ", ".join(sorted(str(k) for k in partial)) or "-"
        return f"a partial index (partialFilterExpression on {fields}): it serves only some documents"
    own = doc.get("collation")
    if isinstance(own, Mapping) and dict(own) != dict(collation or {}) and own.get("locale") != "simple":
        return (f"collation {own.get('locale')!r} differs from the collection's default: "
                "only queries asking for that collation can use it")
    return ""


def plan_indexes(
    docs: Sequence[Mapping[str, Any]],
    collation: Mapping[str, Any] | None,
    catalogue: Sequence[tuple[str, Any]] | None,
    catalogue_unique: bool,
    override: ShardKeySpec | None,
) -> tuple[tuple[IndexPlan, ...], tuple[str, ...]]:
    """The ``indexes:`` entries, shard key included, and one comment per skipped index."""
    plans: list[IndexPlan] = []
    skipped: list[str] = []
    for doc in docs:
        plan = index_plan(doc, collation)
        if isinstance(plan, str):
            skipped.append(plan)
        elif plan is not None:
            plans.append(plan)
    key, unique, source = _shard_key(catalogue, catalogue_unique, override)
    if key is None:
        return tuple(plans), tuple(skipped)
    return _with_shard_key(plans, key, unique, source), tuple(skipped)


def _shard_key(
    catalogue: Sequence[tuple[str, Any]] | None, unique: bool, override: ShardKeySpec | None
) -> tuple[tuple[tuple[str, object], ...] | None, bool, str]:
    if override is None:
        if catalogue is None:
            return None, False, ""
        keys = tuple((f, "hashed" if d == "hashed" else 1) for f, d in catalogue)
        return keys, unique, "shard key from config.collections"
    source = f"shard key from --shard-key {override.text}"
    if catalogue is not None:
        same = [f for f, _ in catalogue] == [f for f, _ in override.keys]
        source += "; config.collections has the same" if same else f" (overrides config.collections: {describe(catalogue)})"
    return override.keys, False, source


def _with_shard_key(
    plans: list[IndexPlan], key: tuple[tuple[str, object], ...], unique: bool, source: str
) -> tuple[IndexPlan, ...]:
    for i, plan in enumerate(plans):
        if plan.keys == key:
            plans[i] = replace(plan, shard_key=True, notes=(source, *plan.notes))
            return tuple(plans)
    fields = [f for f, _ in key]
    prefix = [p.name or describe(list(p.keys)) for p in plans if [f for f, _ in p.keys][: len(fields)] == fields]
    why = f"index {prefix[0]} starts with these fields" if prefix else "no index with these fields was listed"
    hashed = any(d == "hashed" for _, d in key)
    entry = IndexPlan(key, shard_key=True, unique=unique and not hashed,
                      notes=(f"{source}; added: {why}",))
    return (entry, *plans)
