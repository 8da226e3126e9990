"""``Document``: a dict declared by its structure, indexes and shard key.

A subclass declares ``structure`` (Python types or MongoDB type names, embedded
dicts, one-element lists), ``required_fields``, ``default_values``,
``indexes`` and its namespace (``__database__``, ``__collection__``). At class
creation the declaration is compiled into the proxy's config form and handed to
the proxy's policy engine, so every mistake the proxy would refuse is refused
here first, with the same message, before any round trip.

Database operations need a class bound to a connection: ``conn.models.<Name>``
(see :mod:`scalymongo_client.connection`). The methods of this class are the
synchronous ones; an :class:`~scalymongo_client.aio.AsyncConnection` binds the
same classes with ``async`` versions.

What a Document is, piece by piece: :class:`~scalymongo_client.declaration.Declaration`
(declaration, validation, the checks; pure), then the database methods of
:class:`~scalymongo_client.synchronous.methods.DatabaseMethods`, generated from
their asynchronous source by ``tools/synchro.py``.
"""

from __future__ import annotations

from typing import Any

from scalymongo_client.declaration import DocumentMeta
from scalymongo_client.synchronous.methods import DatabaseMethods

__all__ = ["Document", "DocumentMeta", "registered_models"]

_REGISTRY: dict[str, type[Document]] = {}


def registered_models() -> dict[str, type[Document]]:
    """Every registered Document subclass by class name (the latest definition of a name wins)."""
    return dict(_REGISTRY)


class Document(DatabaseMethods):
    """A MongoDB document declared by its structure; a ``dict`` in every other respect.

    Class attributes:

    * ``structure``: field name -> type (``str``, ``int``, ``'string?'``, a dict
      for an embedded document, ``[X]`` for an array of X; see
      :mod:`scalymongo_client.structure`);
    * ``required_fields``: names (dotted for embedded fields) that must be
      present; shard-key fields always are;
    * ``default_values``: field (dotted allowed) -> value, or a callable called
      for each new document; applied when the document is created in Python;
    * ``indexes``: ``{'fields': [...] | {name: 1 | -1 | 'hashed'}, 'shard_key':
      bool, 'unique': bool, 'sparse': bool, 'name': str, 'hashed': bool}``;
    * ``additional_fields``: allow fields absent from the structure (default False);
    * ``rules``: per-collection rule modes, e.g. ``{'unindexed_query': 'off'}``;
    * ``collation``: the collection's default collation (``{'locale': 'fr'}`` or a
      pymongo ``Collation``); a string shard-key value targets only under the
      simple collation, as mongos decides;
    * ``__database__``, ``__collection__``: where the documents live.
    """

    def __init_subclass__(cls, *, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if register:
            _REGISTRY[cls.__name__] = cls
