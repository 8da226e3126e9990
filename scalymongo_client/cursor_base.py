"""What the sync and the async cursor share: the model, the find options, chaining.

The cursors know a model only as :class:`Loadable`: a class that builds its
instances from the raw documents pymongo returns. They do not import the
Document classes, which import them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from typing import Self

__all__ = ["CursorBase", "Loadable", "Recheck"]

Recheck = Callable[[Mapping[str, Any]], None]
"""Checks a ``find`` again with changed options (a cursor's new ``sort``)."""


class Loadable(Protocol):
    """A model whose class builds instances from raw documents (every Document class is one)."""

    @classmethod
    def _from_db(cls, raw: Mapping[str, Any]) -> Self: ...


D = TypeVar("D", bound=Loadable)


class CursorBase(Generic[D]):
    """The model, the find options, and chaining that re-checks a sort."""

    def __init__(self, model: type[D], cursor: Any, options: dict[str, Any], recheck: Recheck) -> None:
        self._model = model
        self._cursor = cursor
        self._options = options
        self._recheck = recheck

    @property
    def cursor(self) -> Any:
        """The underlying pymongo ``Cursor`` / ``AsyncCursor`` (it yields plain dicts)."""
        return self._cursor

    @property
    def model(self) -> type[D]:
        """The bound Document class whose instances this cursor yields."""
        return self._model

    def sort(self, key_or_list: Any, direction: Any = None) -> Self:
        """Sort as pymongo's ``Cursor.sort``; the new sort is checked (unindexed-sort warnings)."""
        sort = key_or_list if direction is None else [(key_or_list, direction)]
        self._recheck({**self._options, "sort": sort})
        self._options["sort"] = sort
        self._cursor.sort(key_or_list, direction)
        return self

    def limit(self, limit: int) -> Self:
        """At most ``limit`` documents (pymongo's ``Cursor.limit``)."""
        self._cursor.limit(limit)
        self._options["limit"] = limit
        return self

    def skip(self, skip: int) -> Self:
        """Skip the first ``skip`` documents (pymongo's ``Cursor.skip``)."""
        self._cursor.skip(skip)
        self._options["skip"] = skip
        return self

    def batch_size(self, batch_size: int) -> Self:
        """Documents per batch (pymongo's ``Cursor.batch_size``)."""
        self._cursor.batch_size(batch_size)
        return self

    def _wrap(self, raw: Mapping[str, Any]) -> D:
        return self._model._from_db(raw)
