"""Cursors over a model's ``find``: they yield Document instances (sync and async)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from scalymongo_client.errors import mapped_server_errors

if TYPE_CHECKING:
    from typing import Self

    from scalymongo_client.document import Document

D = TypeVar("D", bound="Document")

__all__ = ["AsyncDocumentCursor", "DocumentCursor"]

Recheck = Callable[[Mapping[str, Any]], None]


class _CursorBase(Generic[D]):
    """What both cursors share: the model, the find options, and chaining that re-checks a sort."""

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


class DocumentCursor(_CursorBase[D]):
    """A pymongo ``Cursor`` that yields instances of the model; iterate it or call :meth:`to_list`."""

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> D:
        with mapped_server_errors():
            raw = next(self._cursor)
        return self._wrap(raw)

    def to_list(self, length: int | None = None) -> list[D]:
        """All (or the next ``length``) documents as a list."""
        out: list[D] = []
        for doc in self:
            out.append(doc)
            if length is not None and len(out) >= length:
                break
        return out

    def close(self) -> None:
        """Close the server cursor."""
        self._cursor.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncDocumentCursor(_CursorBase[D]):
    """A pymongo ``AsyncCursor`` that yields instances: ``async for doc in Model.find(...)``."""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> D:
        with mapped_server_errors():
            raw = await self._cursor.next()
        return self._wrap(raw)

    async def to_list(self, length: int | None = None) -> list[D]:
        """All (or the next ``length``) documents as a list."""
        out: list[D] = []
        async for doc in self:
            out.append(doc)
            if length is not None and len(out) >= length:
                break
        return out

    async def close(self) -> None:
        """Close the server cursor."""
        await self._cursor.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
