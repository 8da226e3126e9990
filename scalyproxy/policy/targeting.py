"""Shard-key targeting: whether mongos sends a filter to one shard, as mongos decides it.

mongos routes a query in two steps (``getShardIdsForQuery``); the query is
*targeted* when either step pins it to one shard or to a finite set of points:

1. **Extraction** (``extractShardKeyFromQuery``): the equalities of the
   top-level conjunction (``$and`` flattened, a one-branch ``$or`` opened;
   a literal, ``$eq``, a one-value ``$in``, a one-element ``$all``) give every
   key field a value that can be stored (no array, regex or ``$``-field on the
   way); a key field ``a.b`` may come from an equality on its parent ``a``
   that holds ``b``. Two equalities on related paths (``a`` and ``a.b``, ``a``
   twice) spoil it. Under a non-simple collation a string, document or array
   value, and a hashed field, spoil it.
2. **Bounds** (``getIndexBoundsForQuery`` then ``flattenBounds``): each key
   field's bounds from predicates on exactly that path (equalities and ``$in``
   give points, ``$gt``/``$gte``/``$lt``/``$lte`` ranges with type bracketing,
   ``$expr`` ``$eq`` of a field and a constant a point); a ``$or`` unions its
   branches (each branch with the predicates beside the ``$or``), unless one
   branch leaves the first key field free. Targeted when some field's bounds
   are empty, or every field is points and at most one has several points
   (mongos turns every field after the first multi-point one into a range).
   A hashed field takes points only. Under a non-simple collation predicates
   on strings, documents and arrays give no bounds.

``targeting: prefix`` (a rule of ours) also accepts any bounds on the first
key field. Pure.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, TypeGuard

from bson.binary import Binary
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from scalyproxy.config.model import is_simple_collation
from scalyproxy.policy.bounds import (
    PER_DOCUMENT,
    SOME_RANGE,
    Bound,
    PerDocument,
    comparison,
    intersect,
    points,
    union,
)

__all__ = ["PER_DOCUMENT", "PerDocument", "ShardKey", "exact_id", "let_variables", "nonsimple_collation"]

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
SINGLE, MULTI, SCATTER = 0, 1, 2  # ShardKey.routing: one shard, some shards, every shard
_ABSENT: Final = object()
_UNDEFINED: Final = object()  # the index key of an empty array
Variables = Mapping[str, Any]
_NO_VARIABLES: Final[Variables] = {}


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


def _is_regex(value: Any) -> bool:
    return isinstance(value, Regex | re.Pattern)


def _collatable(value: Any) -> bool:
    """A value a collation compares differently (CollationIndexKey::isCollatableType)."""
    return isinstance(value, str) or is_mapping(value) or is_array(value)


def _eq_ok(value: Any, nonsimple: bool) -> bool:
    return is_literal(value) and not (nonsimple and isinstance(value, str))


def constraint(value: Any, nonsimple: bool) -> int:
    """How a filter value constrains its field for index selection: EQ, RANGE or NONE."""
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


# -- predicates -> bounds ------------------------------------------------------------


def _eq_bound(value: Any, hashed: bool, nonsimple: bool, literal: bool) -> Bound:
    """Bounds of an equality to ``value`` (``literal``: written bare, where a regex means a match)."""
    if value is PER_DOCUMENT:
        return None if nonsimple else points(value)
    if literal and _is_regex(value):
        return None if hashed else SOME_RANGE
    if nonsimple and _collatable(value):
        return None
    if is_array(value):  # indexed by the array itself and by its first element (undefined when empty)
        return None if hashed else points(value[0] if value else _UNDEFINED, value)
    return points(value)


def _in_bound(args: Any, hashed: bool, nonsimple: bool) -> Bound:
    if not is_array(args) or not args:
        return None
    parts = [(None if hashed else SOME_RANGE) if _is_regex(a) else _eq_bound(a, hashed, nonsimple, False) for a in args]
    return union(parts)


def _all_bound(args: Any, hashed: bool, nonsimple: bool) -> Bound:
    if not is_array(args) or not args:
        return None
    out: Bound = None
    for arg in args:
        if not (is_mapping(arg) and "$elemMatch" in arg):
            out = intersect(out, _eq_bound(arg, hashed, nonsimple, True))
    return out


def _op_bound(op: str, arg: Any, hashed: bool, nonsimple: bool) -> Bound:
    if op == "$eq":
        return _eq_bound(arg, hashed, nonsimple, False)
    if op == "$in":
        return _in_bound(arg, hashed, nonsimple)
    if op == "$all":
        return _all_bound(arg, hashed, nonsimple)
    if op in _RANGE_OPS and not hashed and arg is not PER_DOCUMENT and not (nonsimple and _collatable(arg)):
        return comparison(op, arg)
    return None  # negations, type and shape tests give no points; unknown operators fail in the server


def predicate_bound(value: Any, hashed: bool, nonsimple: bool) -> Bound:
    """The bounds ``{path: value}`` puts on its own path."""
    if not is_mapping(value) or is_literal(value):
        return _eq_bound(value, hashed, nonsimple, True)
    out: Bound = None
    for op, arg in value.items():
        out = intersect(out, _op_bound(op, arg, hashed, nonsimple))
    return out


def _equalities(value: Any) -> Iterator[Any]:
    """The values of the equality match expressions ``{path: value}`` parses into."""
    if not is_mapping(value) or is_literal(value):
        if not _is_regex(value):
            yield value
        return
    for op, arg in value.items():
        if op == "$eq":
            yield arg
        elif op == "$in" and is_array(arg) and len(points(*arg)) == 1 and not _is_regex(arg[0]):
            yield arg[0]  # a one-value $in is an equality
        elif op == "$all" and is_array(arg):
            yield from (a for a in arg if not _is_regex(a) and not (is_mapping(a) and "$elemMatch" in a))


# -- $expr and let -------------------------------------------------------------------


def _constant(value: Any, variables: Variables) -> tuple[bool, Any]:
    """An aggregation expression that is a scalar constant: a literal, ``{$literal: x}`` or a let variable."""
    if isinstance(value, str):
        if value.startswith("$$"):
            name = value[2:]
            return (True, variables[name]) if name in variables else (False, None)
        return (not value.startswith("$"), value)
    if is_mapping(value):
        if len(value) == 1 and "$literal" in value:
            inner = value["$literal"]
            return (not (is_mapping(inner) or is_array(inner)), inner)
        return False, None
    if is_array(value) or _is_regex(value):
        return False, None
    return True, value


def let_variables(let: Any) -> dict[str, Any]:
    """The command's ``let`` variables that are constants (``let: {value: 100}``)."""
    if not is_mapping(let):
        return {}
    out: dict[str, Any] = {}
    for name, expr in let.items():
        found, value = _constant(expr, _NO_VARIABLES)
        if found:
            out[name] = value
    return out


def _expr_equalities(expr: Any, variables: Variables, depth: int) -> Iterator[tuple[str, Any]]:
    """``{$eq: ["$field", constant]}``, alone or inside ``$and``: mongos rewrites it to an equality."""
    if not is_mapping(expr) or len(expr) != 1 or depth > _MAX_DEPTH:
        return
    op, args = next(iter(expr.items()))
    if op == "$and" and is_array(args):
        for arg in args:
            yield from _expr_equalities(arg, variables, depth + 1)
    elif op == "$eq" and is_array(args) and len(args) == 2:
        for field, other in ((args[0], args[1]), (args[1], args[0])):
            if isinstance(field, str) and field.startswith("$") and not field.startswith("$$") and len(field) > 1:
                found, value = _constant(other, variables)
                if found:
                    yield field[1:], value
                    return


# -- extraction ----------------------------------------------------------------------


def _storable(value: Any) -> bool:
    """A value a shard key may hold (isValidShardKeyElementForStorage)."""
    if value is _ABSENT or is_array(value) or _is_regex(value):
        return False
    if is_mapping(value):
        keys = [k for k in value if isinstance(k, str)]
        dbref = keys[:2] == ["$ref", "$id"]
        for i, key in enumerate(keys):
            if key.startswith("$") and not (dbref and (i < 2 or (i == 2 and key == "$db"))):
                return False
        return all(_storable_inside(v) for v in value.values())
    return True


def _storable_inside(value: Any) -> bool:
    if is_array(value):
        return all(_storable_inside(v) for v in value)
    return not is_mapping(value) or _storable(value)


def _related(a: str, b: str) -> bool:
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _walk(value: Any, rest: str) -> Any:
    """The sub-field ``rest`` of a document; an array on the way is returned as is (and refused)."""
    for part in rest.split("."):
        if is_array(value):
            return value
        if not is_mapping(value) or part not in value:
            return _ABSENT
        value = value[part]
    return value


class _Conjunction:
    """One conjunction of a filter: its equalities, its bounds per key field, its ``$or`` lists."""

    __slots__ = ("eqs", "bounds", "ors")

    def __init__(self) -> None:
        self.eqs: list[tuple[str, Any]] = []
        self.bounds: dict[str, Bound] = {}
        self.ors: list[Sequence[Any]] = []


class ShardKey:
    """A compiled shard key: its paths in order, which are hashed, and their parent paths."""

    __slots__ = ("paths", "hashed", "path_set", "parents", "prefix_mode", "lead", "hashed_by_path")

    def __init__(self, keys: Sequence[tuple[str, object]], prefix_mode: bool) -> None:
        self.paths: tuple[str, ...] = tuple(k for k, _ in keys)
        self.hashed: tuple[bool, ...] = tuple(d == "hashed" for _, d in keys)
        self.hashed_by_path = dict(zip(self.paths, self.hashed, strict=True))
        self.path_set = frozenset(self.paths)
        self.prefix_mode = prefix_mode
        self.lead = self.paths[0]
        parents: set[str] = set()
        for path in self.paths:
            parts = path.split(".")
            parents.update(".".join(parts[:i]) for i in range(1, len(parts)))
        self.parents = frozenset(parents)

    # -- the verdict ------------------------------------------------------------------

    def missing(self, filt: Any, nonsimple: bool = False, variables: Variables | None = None) -> list[str]:
        """The key fields that keep ``filt`` from being targeted, in key order; empty when targeted."""
        if filt.__class__ is dict and not nonsimple:
            for path in self.paths:  # fast path: every key field given directly by a scalar literal
                if filt.get(path, _ABSENT).__class__ not in _SCALARS:
                    break
            else:
                return []
        if not is_mapping(filt):
            return list(self.paths)
        context = (nonsimple, variables or _NO_VARIABLES)
        conj = _Conjunction()
        self._scan(filt, context, conj, 0)
        fixed, extracted = self._extract(conj, nonsimple)
        if extracted:
            return []
        bounds = self._resolve(conj.bounds, conj.ors, context, 0)
        if bounds.get(self.lead) is not None and (self.prefix_mode or self._points_only(bounds)):
            return []
        return self._unfixed(bounds, fixed)

    def routing(self, filt: Any, nonsimple: bool = False, variables: Variables | None = None) -> int:
        """Where mongos sends ``filt`` under this key (the steps of :meth:`missing`):
        SINGLE when extraction gives the full key or the bounds are one point (or none);
        MULTI when they are several points, or a range or points on a prefix of the key
        (the chunks that hold it); SCATTER otherwise (also a range whose ends are not
        known here: ``$ne``, a regex, points and ranges mixed)."""
        if not is_mapping(filt):
            return SCATTER
        context = (nonsimple, variables or _NO_VARIABLES)
        conj = _Conjunction()
        self._scan(filt, context, conj, 0)
        _, extracted = self._extract(conj, nonsimple)
        if extracted:
            return SINGLE
        bounds = self._resolve(conj.bounds, conj.ors, context, 0)
        lead = bounds.get(self.lead)
        if lead is None or lead is SOME_RANGE:
            return SCATTER
        if self._points_only(bounds):
            fields = [bounds.get(p) for p in self.paths]
            if any(b == {} for b in fields) or all(isinstance(b, dict) and len(b) == 1 for b in fields):
                return SINGLE
        return MULTI

    def extracts(self, filt: Any) -> tuple[bool, dict[str, Any]]:
        """Whether extraction alone gives the full key (simple collation), and the values it takes."""
        if not is_mapping(filt):
            return False, {}
        conj = _Conjunction()
        self._scan(filt, (False, _NO_VARIABLES), conj, 0)
        fixed, ok = self._extract(conj, False)
        return ok, {p: self._equality_of(conj.eqs, p) for p in fixed}

    # -- scanning ---------------------------------------------------------------------

    def _related_path(self, path: str) -> bool:
        if path in self.path_set or path in self.parents:
            return True
        return any(path.startswith(k + ".") for k in self.paths)

    def _scan(self, filt: Mapping[str, Any], context: tuple[bool, Variables], conj: _Conjunction, depth: int) -> None:
        for name, value in filt.items():
            if name.__class__ is not str:
                continue
            if name[:1] == "$":
                self._scan_operator(name, value, context, conj, depth)
            elif self._related_path(name):
                conj.eqs.extend((name, v) for v in _equalities(value))
                if name in self.path_set:
                    self._narrow(conj, name, predicate_bound(value, self.hashed_by_path[name], context[0]))

    def _scan_operator(self, name: str, value: Any, context: tuple[bool, Variables], conj: _Conjunction, depth: int) -> None:
        if name == "$and" and is_array(value) and depth < _MAX_DEPTH:
            for sub in value:
                if is_mapping(sub):
                    self._scan(sub, context, conj, depth + 1)
        elif name == "$or" and is_array(value):
            if len(value) == 1 and is_mapping(value[0]) and depth < _MAX_DEPTH:
                self._scan(value[0], context, conj, depth + 1)  # a one-branch $or is its branch
            else:
                conj.ors.append(value)
        elif name == "$expr":
            for path, constant in _expr_equalities(value, context[1], 0):
                if path in self.path_set:
                    hashed = self.hashed_by_path[path]
                    self._narrow(conj, path, _eq_bound(constant, hashed, context[0], False))

    @staticmethod
    def _narrow(conj: _Conjunction, path: str, bound: Bound) -> None:
        conj.bounds[path] = intersect(conj.bounds.get(path), bound)

    # -- extraction -------------------------------------------------------------------

    @staticmethod
    def _equality_of(eqs: Sequence[tuple[str, Any]], path: str) -> Any:
        for eq_path, value in eqs:
            if eq_path == path:
                return value
            if path.startswith(eq_path + "."):
                return _walk(value, path[len(eq_path) + 1 :])
        return _ABSENT

    def _extract(self, conj: _Conjunction, nonsimple: bool) -> tuple[set[str], bool]:
        """The key fields extraction gives a usable value, and whether it gives the whole key."""
        fixed: set[str] = set()
        for path, hashed in zip(self.paths, self.hashed, strict=True):
            value = self._equality_of(conj.eqs, path)
            if _storable(value) and not (nonsimple and (hashed or value is PER_DOCUMENT or _collatable(value))):
                fixed.add(path)
        if len(fixed) < len(self.paths):
            return fixed, False
        eq_paths = [p for p, _ in conj.eqs]
        if any(p.startswith(k + ".") for p in eq_paths for k in self.paths):
            return fixed, False  # an equality below a key field: mongos gives up extracting
        for i, path in enumerate(eq_paths):
            if any(_related(path, other) for other in eq_paths[i + 1 :]):
                return fixed, False  # conflicting equalities
        return fixed, True

    # -- bounds -----------------------------------------------------------------------

    def _resolve(
        self, base: Mapping[str, Bound], ors: Sequence[Sequence[Any]], context: tuple[bool, Variables], depth: int
    ) -> dict[str, Bound]:
        """The bounds of a conjunction with its ``$or`` lists, each branch joined with what is beside it."""
        current = dict(base)
        for branches in ors:
            if not branches or depth >= _MAX_DEPTH:
                continue
            results = [self._branch(b, current, context, depth) for b in branches]
            if all(r is not None for r in results):
                current = {p: union([r[p] if p in r else None for r in results if r is not None]) for p in self.paths}
        return current

    def _branch(
        self, branch: Any, outer: Mapping[str, Bound], context: tuple[bool, Variables], depth: int
    ) -> dict[str, Bound] | None:
        """One ``$or`` branch's bounds, or None when the shard-key index cannot serve it."""
        if not is_mapping(branch):
            return None
        sub = _Conjunction()
        self._scan(branch, context, sub, depth + 1)
        merged = {p: intersect(outer.get(p), sub.bounds.get(p)) for p in self.paths}
        merged = self._resolve(merged, sub.ors, context, depth + 1)
        return merged if merged.get(self.lead) is not None else None

    def _points_only(self, bounds: Mapping[str, Bound]) -> bool:
        """flattenBounds yields no range: a field is empty, or all are points with at most one multi-point."""
        if any(isinstance(bounds.get(p), dict) and not bounds.get(p) for p in self.paths):
            return True
        multi = False
        for path in self.paths:
            bound = bounds.get(path)
            if not isinstance(bound, dict):
                return False
            if len(bound) > 1:
                if multi:
                    return False
                multi = True
        return True

    def _unfixed(self, bounds: Mapping[str, Bound], fixed: set[str]) -> list[str]:
        """What a refusal names: the fields neither extracted nor given by points, else those made a range."""
        missing = [p for p in self.paths if p not in fixed and not isinstance(bounds.get(p), dict)]
        if missing:
            return missing
        seen_multi = False
        widened = []
        for path in self.paths:
            bound = bounds.get(path)
            if isinstance(bound, dict) and len(bound) > 1:
                if seen_multi:
                    widened.append(path)
                seen_multi = True
        return widened or list(self.paths)

    # -- shard_key_write --------------------------------------------------------------

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


def touches(path: str, key_path: str) -> bool:
    """Whether writing ``path`` changes ``key_path``: the same field, a parent or a child of it."""
    if path == key_path:
        return True
    return key_path.startswith(path + ".") or path.startswith(key_path + ".")


def nonsimple_collation(collation: Any, default: Any = None) -> bool:
    """Whether the effective collation is not simple: the command's when it gives one, else the default."""
    if is_mapping(collation) and collation:
        return bool(collation.get("locale", "simple") != "simple")
    return not is_simple_collation(default)


def _collations_match(collation: Mapping[str, Any], default: Any) -> bool:
    if is_simple_collation(collation) or is_simple_collation(default):
        return is_simple_collation(collation) and is_simple_collation(default)
    return dict(collation) == dict(default)


_ID_KEY: Final = ShardKey((("_id", 1),), False)


def exact_id(query: Any, collation: Any, default: Any) -> bool:
    """mongos' isExactIdQuery: an ``_id`` equality it can extract; a string, document or array
    ``_id`` only under the collection's default collation (or no collation given)."""
    ok, values = _ID_KEY.extracts(query)
    if not ok:
        return False
    if _collatable(values["_id"]) and is_mapping(collation) and collation:
        return _collations_match(collation, default)
    return True
