"""Shard-key targeting: which shard-key fields a filter fixes, as mongos would see it.

A field is fixed by equality: a literal, ``$eq`` or ``$in`` of literals,
directly or inside ``$and``; a top-level ``$or`` targets when each branch does.
A dotted key field ``a.b`` is also fixed by an exact match of the whole
sub-document ``{a: {b: 1}}``. Hashed fields count only by equality. Under a
non-simple collation a string value does not fix a field. In prefix mode an
equality, or a range on a non-hashed field, on the first key field suffices.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeGuard

from bson.binary import Binary
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.timestamp import Timestamp


class PerDocument:
    """Stands for a value known only per input document ($lookup foreignField, $graphLookup)."""

    __slots__ = ()


PER_DOCUMENT: Final = PerDocument()

_SCALARS: Final[frozenset[type]] = frozenset(
    {
        PerDocument,
        str,
        int,
        float,
        bool,
        type(None),
        ObjectId,
        datetime.datetime,
        DatetimeMS,
        Int64,
        Decimal128,
        Binary,
        bytes,
        uuid.UUID,
        Timestamp,
        MinKey,
        MaxKey,
    }
)
_RANGE_OPS: Final = frozenset({"$gt", "$gte", "$lt", "$lte"})
_MAX_DEPTH: Final = 8
NONE, RANGE, EQ = 0, 1, 2
_ABSENT: Final = object()


def is_mapping(value: Any) -> TypeGuard[Mapping[str, Any]]:
    return value.__class__ is dict or isinstance(value, Mapping)


def is_array(value: Any) -> TypeGuard[Sequence[Any]]:
    return value.__class__ is list or isinstance(value, list | tuple)


def is_literal(value: Any) -> bool:
    """A value that matches by plain equality: a scalar, or a document without operators."""
    if value.__class__ in _SCALARS:
        return True
    if is_mapping(value):
        first = next(iter(value), None)
        return not (isinstance(first, str) and first.startswith("$"))
    return False


def _eq_ok(value: Any, nonsimple: bool) -> bool:
    return is_literal(value) and not (nonsimple and isinstance(value, str))


def constraint(value: Any, nonsimple: bool) -> int:
    """How a filter value constrains its field: EQ, RANGE or NONE."""
    if value.__class__ is str:
        return NONE if nonsimple else EQ
    if is_literal(value):
        return EQ if _eq_ok(value, nonsimple) else NONE
    if not is_mapping(value):
        return NONE
    best = NONE
    for op, arg in value.items():
        if op == "$eq" and _eq_ok(arg, nonsimple):
            return EQ
        if op == "$in" and is_array(arg) and all(_eq_ok(a, nonsimple) for a in arg):
            return EQ
        if op in _RANGE_OPS and not (nonsimple and isinstance(arg, str)):
            best = RANGE
    return best


def _sub_fixed(value: Any, rest: Sequence[str], nonsimple: bool) -> bool:
    """Whether an equality on a parent path fixes the sub-path ``rest`` of it."""
    if is_mapping(value) and not is_literal(value):
        if "$eq" in value:
            return _sub_fixed(value["$eq"], rest, nonsimple)
        arg = value.get("$in")
        return is_array(arg) and bool(arg) and all(_sub_fixed(a, rest, nonsimple) for a in arg)
    if not is_mapping(value):
        return False
    current: Any = value
    for part in rest:
        if not is_mapping(current) or part not in current:
            return is_mapping(current)  # an exact sub-document without the field fixes it to missing
        current = current[part]
    return _eq_ok(current, nonsimple)


def _single_value(value: Any, rest: Sequence[str]) -> tuple[bool, Any]:
    if is_mapping(value) and not is_literal(value):
        if "$eq" not in value:
            return False, None
        value = value["$eq"]
    for part in rest:
        if not is_mapping(value) or part not in value:
            return False, None
        value = value[part]
    if is_literal(value) and not is_mapping(value):
        return True, value
    return False, None


class ShardKey:
    """A compiled shard key: its paths in order, which are hashed, and their parent paths."""

    __slots__ = ("paths", "hashed", "path_set", "parents", "prefix_mode", "simple")

    def __init__(self, keys: Sequence[tuple[str, object]], prefix_mode: bool) -> None:
        self.paths: tuple[str, ...] = tuple(k for k, _ in keys)
        self.hashed: tuple[bool, ...] = tuple(d == "hashed" for _, d in keys)
        self.path_set = frozenset(self.paths)
        self.prefix_mode = prefix_mode
        parents: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
        for path in self.paths:
            parts = path.split(".")
            for i in range(1, len(parts)):
                parents.setdefault(".".join(parts[:i]), []).append((path, tuple(parts[i:])))
        self.parents = {k: tuple(v) for k, v in parents.items()}
        self.simple = not prefix_mode  # the fast path of missing() applies

    def missing(self, filt: Any, nonsimple: bool = False) -> list[str]:
        """The key fields the filter leaves unfixed, in key order; empty when targeted."""
        if filt.__class__ is dict and self.simple and not nonsimple:
            for path in self.paths:  # fast path: every key field given directly by a literal
                value = filt.get(path, _ABSENT)
                if value.__class__ is not str and constraint(value, False) != EQ:
                    break
            else:
                return []
        if not is_mapping(filt):
            return list(self.paths)
        fixed: set[str] = set()
        ranged: set[str] = set()
        ors: list[Sequence[Any]] = []
        self._scan(filt, nonsimple, fixed, ranged, ors, 0)
        return self._missing(fixed, ranged, ors, nonsimple, 0)

    def equality_value(self, filt: Any, path: str, depth: int = 0) -> tuple[bool, Any]:
        """The single literal a filter's conjunction gives ``path``, if it gives exactly one."""
        if not is_mapping(filt) or depth > _MAX_DEPTH:
            return False, None
        parts = path.split(".")
        for i in range(len(parts), 0, -1):
            head = ".".join(parts[:i])
            if head in filt:
                found, value = _single_value(filt[head], parts[i:])
                if found:
                    return True, value
        subs = filt.get("$and")
        if is_array(subs):
            for sub in subs:
                found, value = self.equality_value(sub, path, depth + 1)
                if found:
                    return True, value
        return False, None

    def _targeted(self, fixed: set[str], ranged: set[str]) -> bool:
        if self.prefix_mode:
            first = self.paths[0]
            return first in fixed or (first in ranged and not self.hashed[0])
        return self.path_set <= fixed

    def _scan(
        self, filt: Mapping[str, Any], nonsimple: bool, fixed: set[str], ranged: set[str], ors: list[Sequence[Any]], depth: int
    ) -> None:
        path_set, parents = self.path_set, self.parents
        for key, value in filt.items():
            if key.__class__ is str and key[:1] == "$":
                if key == "$and" and is_array(value) and depth < _MAX_DEPTH:
                    for sub in value:
                        if is_mapping(sub):
                            self._scan(sub, nonsimple, fixed, ranged, ors, depth + 1)
                elif key == "$or" and is_array(value):
                    ors.append(value)
                continue
            if key in path_set:
                how = constraint(value, nonsimple)
                if how == EQ:
                    fixed.add(key)
                elif how == RANGE:
                    ranged.add(key)
            if parents and key in parents:
                for path, rest in parents[key]:
                    if _sub_fixed(value, rest, nonsimple):
                        fixed.add(path)

    def _missing(
        self, fixed: set[str], ranged: set[str], ors: list[Sequence[Any]], nonsimple: bool, depth: int
    ) -> list[str]:
        if self._targeted(fixed, ranged):
            return []
        best = [p for p in self.paths if p not in fixed]
        if depth >= _MAX_DEPTH:
            return best
        for branches in ors:
            if not branches:
                continue
            union: set[str] = set()
            others = [o for o in ors if o is not branches]
            for branch in branches:
                if not is_mapping(branch):
                    union.update(self.paths)
                    continue
                b_fixed, b_ranged, b_ors = set(fixed), set(ranged), list(others)
                self._scan(branch, nonsimple, b_fixed, b_ranged, b_ors, depth + 1)
                union.update(self._missing(b_fixed, b_ranged, b_ors, nonsimple, depth + 1))
            if not union:
                return []
            if len(union) < len(best):
                best = [p for p in self.paths if p in union]
        return best


def touches(path: str, key_path: str) -> bool:
    """Whether writing ``path`` changes ``key_path``: the same field, a parent or a child of it."""
    if path == key_path:
        return True
    return key_path.startswith(path + ".") or path.startswith(key_path + ".")


def nonsimple_collation(collation: Any) -> bool:
    if collation is None:
        return False
    return is_mapping(collation) and collation.get("locale", "simple") != "simple"
