# Generated from scalymongo_client/asynchronous/cursor.py by tools/synchro.py; do not edit.
# Edit the asynchronous source, then run: python tools/synchro.py
"""``DocumentCursor``: a model's ``find``, yielding Document instances."""

from __future__ import annotations

from typing import TYPE_CHECKING

from scalymongo_client.cursor_base import CursorBase, D
from scalymongo_client.errors import mapped_server_errors

if TYPE_CHECKING:
    from typing import Self

__all__ = ["DocumentCursor"]


class DocumentCursor(CursorBase[D]):
    """A pymongo ``Cursor`` that yields instances: ``for doc in Model.find(...)``."""

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> D:
        with mapped_server_errors():
            raw = self._cursor.next()
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
