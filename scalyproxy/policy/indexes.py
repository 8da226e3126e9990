"""Whether a declared index (or ``_id``) serves a filter or a sort by prefix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from scalyproxy.policy.targeting import EQ, constraint, is_array, is_mapping

_NEGATIONS: Final = frozenset({"$ne", "$nin", "$not", "$exists", "$type", "$size", "$mod", "$all", "$elemMatch"})
_MAX_DEPTH: Final = 8


def _usable(value: Any) -> bool:
    """An index on the field can narrow the scan (not a pure negation or shape test)."""
    if not is_mapping(value):
        return True
    ops = [k for k in value if isinstance(k, str) and k.startswith("$")]
    if not ops:
        return True
    if ops == ["$exists"]:
        return value["$exists"] is True
    return any(op not in _NEGATIONS for op in ops)


class IndexSet:
    """The indexes of one collection, compiled for prefix questions."""

    __slots__ = ("first", "orders", "has_text")

    def __init__(self, indexes: Sequence[Sequence[tuple[str, object]]]) -> None:
        keys = [list(ix) for ix in indexes] + [[("_id", 1)]]
        self.first: dict[str, bool] = {}  # first field -> serves ranges too (not hashed)
        for ix in keys:
            name, direction = ix[0]
            if direction in ("text", "2d", "2dsphere"):
                continue
            self.first[name] = self.first.get(name, False) or direction != "hashed"
        self.orders = [ix for ix in keys if all(d in (1, -1) for _, d in ix)]
        self.has_text = any(d == "text" for ix in keys for _, d in ix)

    def filter_fields(self, filt: Mapping[str, Any]) -> tuple[dict[str, int], list[Sequence[Any]]]:
        """Top-level conjunction fields: name -> EQ/RANGE (usable constraints only), and the $or lists."""
        fields: dict[str, int] = {}
        ors: list[Sequence[Any]] = []
        self._collect(filt, fields, ors, 0)
        return fields, ors

    def _collect(self, filt: Mapping[str, Any], fields: dict[str, int], ors: list[Sequence[Any]], depth: int) -> None:
        for key, value in filt.items():
            if not isinstance(key, str):
                continue
            if key == "$and" and is_array(value) and depth < _MAX_DEPTH:
                for sub in value:
                    if is_mapping(sub):
                        self._collect(sub, fields, ors, depth + 1)
            elif key == "$or" and is_array(value):
                ors.append(value)
            elif key == "$text" and self.has_text:
                fields["$text"] = EQ
            elif not key.startswith("$") and _usable(value):
                fields[key] = max(fields.get(key, 0), constraint(value, False) or 1)

    def serves_filter(self, filt: Any) -> bool:
        """Some index's first field is constrained, in the conjunction or in every ``$or`` branch."""
        if not is_mapping(filt) or not filt:
            return True
        fields, ors = self.filter_fields(filt)
        return self._served(fields, ors, 0)

    def _served(self, fields: dict[str, int], ors: list[Sequence[Any]], depth: int) -> bool:
        if "$text" in fields or any(self._first_serves(f, how) for f, how in fields.items()):
            return True
        for branches in ors:
            if branches and depth < _MAX_DEPTH and all(self._branch_served(b, fields, depth) for b in branches):
                return True
        return False

    def _branch_served(self, branch: Any, base: dict[str, int], depth: int) -> bool:
        if not is_mapping(branch):
            return False
        fields, ors = dict(base), list[Sequence[Any]]()
        self._collect(branch, fields, ors, depth + 1)
        return self._served(fields, ors, depth + 1)

    def _first_serves(self, field: str, how: int) -> bool:
        ranges = self.first.get(field)
        return ranges is not None and (ranges or how == EQ)

    def serves_sort(self, sort: Any, filt: Any) -> bool:
        """The sort keys (after fields fixed by equality) are a prefix of some index, one direction."""
        if not is_mapping(sort) or not sort:
            return True
        wanted = [(k, v) for k, v in sort.items() if not is_mapping(v)]
        if not wanted or wanted[0][0] == "$natural":
            return True
        equal = {f for f, how in self.filter_fields(filt)[0].items() if how == EQ} if is_mapping(filt) else set()
        return any(self._order_serves(ix, wanted, equal) for ix in self.orders)

    @staticmethod
    def _order_serves(ix: list[tuple[str, object]], wanted: list[tuple[str, Any]], equal: set[str]) -> bool:
        sort_fields = {k for k, _ in wanted}
        rest = list(ix)
        while rest and rest[0][0] in equal and rest[0][0] not in sort_fields:
            rest.pop(0)
        if len(rest) < len(wanted):
            return False
        signs = set()
        for (field, direction), (index_field, index_direction) in zip(wanted, rest, strict=False):
            if field != index_field or direction not in (1, -1):
                return False
            signs.add(direction == index_direction)
        return len(signs) == 1
