"""Cursors over a model's ``find``: they yield Document instances (sync and async).

:class:`AsyncDocumentCursor` is written in :mod:`scalymongo_client.asynchronous.cursor`;
:class:`DocumentCursor` is generated from it (:mod:`scalymongo_client.synchronous.cursor`);
what both share is :class:`~scalymongo_client.cursor_base.CursorBase`.
"""

from __future__ import annotations

from scalymongo_client.asynchronous.cursor import AsyncDocumentCursor
from scalymongo_client.cursor_base import CursorBase, Loadable
from scalymongo_client.synchronous.cursor import DocumentCursor

__all__ = ["AsyncDocumentCursor", "CursorBase", "DocumentCursor", "Loadable"]
