"""Index bounds of one shard-key field, as mongos computes them for routing.

A field's bound is one of:

- ``None``: every value (the query does not constrain the field);
- a ``dict`` of points (canonical key -> value); an empty dict is the empty
  set (a contradiction such as ``{$gt: 4, $lt: 4}``);
- an :class:`Interval`: one range of values (``$gt`` and friends, with
  MongoDB's type bracketing: ``{$gt: 5}`` spans the numbers above 5), or
  :data:`SOME_RANGE` when the range cannot be computed here (``$ne``, a regex,
  a union of points and ranges, types without an order here).

Values compare in BSON order: by canonical type, then within the type. Pure.
"""

from __future__ import annotations

import datetime
import re
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

from bson.binary import Binary
from bson.datetime_ms import DatetimeMS
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

# canonical type ranks (bsontypes.h canonicalizeBSONType)
MINKEY, NULL, NUMBER, STRING, OBJECT, ARRAY, BINARY, OID, BOOL, DATE, TIMESTAMP, REGEX, MAXKEY = (
    -1, 5, 10, 15, 20, 25, 30, 35, 40, 45, 47, 50, 127,
)
_BOTTOM, _VALUE, _TOP = 0, 1, 2
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


class PerDocument:
    """Stands for a value known only per input document ($lookup foreignField, let variables)."""

    __slots__ = ()


PER_DOCUMENT: Final = PerDocument()


class Interval:
    """One range ``[lo, hi]``; each end is ``(rank, order, value)`` and may exclude itself."""

    __slots__ = ("lo", "lo_in", "hi", "hi_in")

    def __init__(self, lo: tuple[Any, ...], lo_in: bool, hi: tuple[Any, ...], hi_in: bool) -> None:
        self.lo, self.lo_in, self.hi, self.hi_in = lo, lo_in, hi, hi_in


SOME_RANGE: Final = Interval((), False, (), False)  # a range whose ends are not known here
Bound = dict[Any, Any] | Interval | None


def rank(value: Any) -> int | None:
    """The canonical BSON type rank of a decoded value, or None for a type not ordered here."""
    cls = value.__class__
    if cls is bool:
        return BOOL
    if cls in (int, float, Int64, Decimal128):
        return NUMBER
    if cls is str:
        return STRING
    if value is None:
        return NULL
    if cls is ObjectId:
        return OID
    if cls in (datetime.datetime, DatetimeMS):
        return DATE
    if cls is Timestamp:
        return TIMESTAMP
    return None


def _number(value: Any) -> Any:
    if value.__class__ is Decimal128:
        return value.to_decimal()
    return value


def _ordinal(value: Any, kind: int) -> Any:
    """The within-type sort value of a value of rank ``kind``."""
    if kind == NUMBER:
        return _number(value)
    if kind == OID:
        return value.binary
    if kind == DATE:
        if value.__class__ is DatetimeMS:
            return int(value)
        moment = value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)
        return (moment - _EPOCH) // datetime.timedelta(milliseconds=1)
    if kind == TIMESTAMP:
        return (value.time, value.inc)
    return value  # str, bool


def _is_nan(value: Any) -> bool:
    number = _number(value)
    if isinstance(number, Decimal):
        return number.is_nan()  # quiet or signaling, without signaling
    return isinstance(number, float) and number != number


def canon(value: Any) -> Any:
    """A hashable identity for a value: two values get the same one when BSON compares them equal."""
    kind = rank(value)
    if kind is not None:
        if kind == NUMBER and _is_nan(value):
            return (NUMBER, "NaN")
        return (kind, _ordinal(value, kind))
    if isinstance(value, Mapping):
        return (OBJECT, tuple((k, canon(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return (ARRAY, tuple(canon(v) for v in value))
    if isinstance(value, Binary):
        return (BINARY, int(value.subtype), bytes(value))
    if isinstance(value, bytes):
        return (BINARY, 0, value)
    if isinstance(value, uuid.UUID):
        return (BINARY, 4, value.bytes)
    if isinstance(value, Regex):
        return (REGEX, value.pattern, value.flags)
    if isinstance(value, re.Pattern):
        return (REGEX, value.pattern, value.flags)
    if isinstance(value, MinKey):
        return (MINKEY,)
    if isinstance(value, MaxKey):
        return (MAXKEY,)
    return ("?", id(value))  # PER_DOCUMENT and anything else: one value, equal only to itself


def points(*values: Any) -> dict[Any, Any]:
    return {canon(v): v for v in values}


def comparison(op: str, value: Any) -> Bound:
    """The bound of ``{$gt|$gte|$lt|$lte: value}`` with type bracketing."""
    if value is None and op in ("$gte", "$lte"):
        return points(None)  # {$gte: null} and {$lte: null} mean {$eq: null}
    kind = rank(value)
    if kind is None or kind == NULL or (kind == NUMBER and _is_nan(value)):
        return SOME_RANGE
    at = (kind, _VALUE, _ordinal(value, kind))
    if op in ("$gt", "$gte"):
        return Interval(at, op == "$gte", (kind, _TOP, None), True)
    return Interval((kind, _BOTTOM, None), True, at, op == "$lte")


def intersect(a: Bound, b: Bound) -> Bound:
    """The values both bounds allow."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: v for k, v in a.items() if k in b}
    if isinstance(a, dict):
        assert isinstance(b, Interval)
        return {k: v for k, v in a.items() if _inside(v, b)}
    if isinstance(b, dict):
        return intersect(b, a)
    assert isinstance(a, Interval) and isinstance(b, Interval)
    if a is SOME_RANGE or b is SOME_RANGE:
        return SOME_RANGE
    return _overlap(a, b)


def _overlap(a: Interval, b: Interval) -> Bound:
    lo, lo_in = (a.lo, a.lo_in) if a.lo > b.lo else (b.lo, b.lo_in) if b.lo > a.lo else (a.lo, a.lo_in and b.lo_in)
    hi, hi_in = (a.hi, a.hi_in) if a.hi < b.hi else (b.hi, b.hi_in) if b.hi < a.hi else (a.hi, a.hi_in and b.hi_in)
    if lo > hi or (lo == hi and not (lo_in and hi_in)):
        return {}
    if lo == hi and lo[1] == _VALUE:
        return {(lo[0], lo[2]): lo[2]}
    return Interval(lo, lo_in, hi, hi_in)


def _inside(value: Any, interval: Interval) -> bool:
    """Whether a point lies in the range (True when that cannot be told here)."""
    kind = rank(value)
    if interval is SOME_RANGE or kind is None or (kind == NUMBER and _is_nan(value)) or kind == NULL:
        return True
    at = (kind, _VALUE, _ordinal(value, kind))
    above = at > interval.lo or (at == interval.lo and interval.lo_in)
    below = at < interval.hi or (at == interval.hi and interval.hi_in)
    return above and below


def union(bounds: Sequence[Bound]) -> Bound:
    """The values any of the bounds allows (``$or`` branches, ``$in`` elements)."""
    out: dict[Any, Any] = {}
    ranged = False
    for bound in bounds:
        if bound is None:
            return None
        if isinstance(bound, dict):
            out.update(bound)
        else:
            ranged = True
    return SOME_RANGE if ranged else out
