"""``AsyncDocumentCursor``: a model's ``find``, yielding Document instances."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scalymongo_client.cursor_base import CursorBase, D
from scalymongo_client.errors import mapped_server_errors

if TYPE_CHECKING:
    from typing import Self

__all__ = ["AsyncDocumentCursor"]


class AsyncDocumentCursor(CursorBase[D]):
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
