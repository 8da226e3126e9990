# Generated from scalymongo_client/asynchronous/methods.py by tools/synchro.py; do not edit.
# Edit the asynchronous source, then run: python tools/synchro.py
"""The database methods of a bound model: ``Model.find_one(...)``, ``doc.save()``.

Each method checks its command client-side first (pure, no I/O: the checks of
:class:`~scalymongo_client.declaration.Declaration`), then makes its round trip
through pymongo's ``Collection`` and maps the proxy's refusals onto the
library's exceptions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pymongo import ReturnDocument
from pymongo.results import DeleteResult, InsertManyResult, UpdateResult

from scalymongo_client import checks
from scalymongo_client.declaration import BuildCommand, Declaration
from scalymongo_client.errors import mapped_server_errors

from .cursor import DocumentCursor

if TYPE_CHECKING:
    from typing import Self

__all__ = ["DatabaseMethods"]


class DatabaseMethods(Declaration):
    """The database methods of a model bound to a ``Connection``.

    Class methods query and write the collection; instance methods act on one
    stored document, targeted by ``_id`` and shard key. Each takes pymongo's
    keyword arguments and ``allow_global=True``. On a class that is not bound to
    a connection they check the command, then raise ``NotBoundError``.
    """

    # -- class methods: the collection ---------------------------------------------------------

    @classmethod
    def find(
        cls, filter: Mapping[str, Any] | None = None, projection: Any = None, *, allow_global: bool = False, **kwargs: Any
    ) -> DocumentCursor[Self]:
        """Documents matching ``filter``, as instances: ``for doc in Model.find(...)``."""
        coll, opts = cls._checked(allow_global, kwargs, lambda s, o: checks.find_command(s, filter, projection, o))
        with mapped_server_errors():
            cursor = coll.find(filter, projection, **opts)
        return DocumentCursor(cls, cursor, opts, cls._find_rechecker(filter, projection))

    @classmethod
    def find_one(
        cls, filter: Mapping[str, Any] | None = None, projection: Any = None, *, allow_global: bool = False, **kwargs: Any
    ) -> Self | None:
        """The first document matching ``filter`` as an instance, or None."""
        coll, opts = cls._checked(
            allow_global, kwargs, lambda s, o: checks.find_command(s, filter, projection, o, single=True)
        )
        with mapped_server_errors():
            raw = coll.find_one(filter, projection, **opts)
        return None if raw is None else cls._from_db(raw)

    @classmethod
    def count(cls, filter: Mapping[str, Any] | None = None, *, allow_global: bool = False, **kwargs: Any) -> int:
        """How many documents match ``filter`` (pymongo's ``count_documents``)."""
        coll, opts = cls._checked(allow_global, kwargs, lambda s, o: checks.count_command(s, filter, o))
        with mapped_server_errors():
            return int(coll.count_documents(dict(filter or {}), **opts))

    @classmethod
    def distinct(
        cls, key: str, filter: Mapping[str, Any] | None = None, *, allow_global: bool = False, **kwargs: Any
    ) -> list[Any]:
        """The distinct values of ``key`` among the documents matching ``filter``."""
        coll, opts = cls._checked(allow_global, kwargs, lambda s, o: checks.distinct_command(s, key, filter, o))
        with mapped_server_errors():
            return list(coll.distinct(key, filter, **opts))

    @classmethod
    def aggregate(cls, pipeline: Sequence[Mapping[str, Any]], *, allow_global: bool = False, **kwargs: Any) -> Any:
        """Run an aggregation; returns pymongo's ``CommandCursor`` of plain dicts."""
        coll, opts = cls._checked(allow_global, kwargs, lambda s, o: checks.aggregate_command(s, pipeline, o))
        with mapped_server_errors():
            return coll.aggregate(list(pipeline), **opts)

    @classmethod
    def update_one(
        cls, filter: Mapping[str, Any], update: Any, upsert: bool = False, *, allow_global: bool = False, **kwargs: Any
    ) -> UpdateResult:
        """Update the first document matching ``filter``."""
        build: BuildCommand = lambda s, o: checks.update_command(s, filter, update, multi=False, upsert=upsert, options=o)  # noqa: E731
        coll, opts = cls._checked(allow_global, kwargs, build)
        with mapped_server_errors():
            return coll.update_one(filter, update, upsert, **opts)  # type: ignore[no-any-return]

    @classmethod
    def update_many(
        cls, filter: Mapping[str, Any], update: Any, upsert: bool = False, *, allow_global: bool = False, **kwargs: Any
    ) -> UpdateResult:
        """Update every document matching ``filter``."""
        build: BuildCommand = lambda s, o: checks.update_command(s, filter, update, multi=True, upsert=upsert, options=o)  # noqa: E731
        coll, opts = cls._checked(allow_global, kwargs, build)
        with mapped_server_errors():
            return coll.update_many(filter, update, upsert, **opts)  # type: ignore[no-any-return]

    @classmethod
    def delete_one(cls, filter: Mapping[str, Any], *, allow_global: bool = False, **kwargs: Any) -> DeleteResult:
        """Delete the first document matching ``filter``."""
        coll, opts = cls._checked(allow_global, kwargs, lambda s, o: checks.delete_command(s, filter, many=False, options=o))
        with mapped_server_errors():
            return coll.delete_one(filter, **opts)  # type: ignore[no-any-return]

    @classmethod
    def delete_many(cls, filter: Mapping[str, Any], *, allow_global: bool = False, **kwargs: Any) -> DeleteResult:
        """Delete every document matching ``filter``."""
        coll, opts = cls._checked(allow_global, kwargs, lambda s, o: checks.delete_command(s, filter, many=True, options=o))
        with mapped_server_errors():
            return coll.delete_many(filter, **opts)  # type: ignore[no-any-return]

    @classmethod
    def find_one_and_update(
        cls,
        filter: Mapping[str, Any],
        update: Any,
        projection: Any = None,
        *,
        allow_global: bool = False,
        **kwargs: Any,
    ) -> Self | None:
        """Update one document and return it (before, or after with ``return_document=ReturnDocument.AFTER``)."""
        options = {**kwargs, "projection": projection} if projection is not None else kwargs
        coll, opts = cls._checked(allow_global, options, lambda s, o: checks.find_and_modify_command(s, filter, update, o))
        with mapped_server_errors():
            raw = coll.find_one_and_update(filter, update, **opts)
        return None if raw is None else cls._from_db(raw)

    @classmethod
    def insert_many(
        cls, documents: Iterable[Mapping[str, Any]], *, allow_global: bool = False, **kwargs: Any
    ) -> InsertManyResult:
        """Insert documents (all checked first: one bad document and nothing is sent)."""
        coll, docs, opts = cls._checked_insert(documents, allow_global, kwargs)
        with mapped_server_errors():
            result = coll.insert_many(docs, **opts)
        cls._remember_keys(docs)
        return result  # type: ignore[no-any-return]

    @classmethod
    def ensure_indexes(cls) -> list[str]:
        """Create the declared indexes; on a mongos also shard the collection on the declared key.

        Elsewhere (a replica set, FerretDB) nothing is sharded and a
        :class:`ScalyMongoWarning` says so. Returns the index names.
        """
        coll = cls.collection
        models = cls.index_models()
        with mapped_server_errors():
            names: list[str] = coll.create_indexes(models) if models else []
            admin = coll.database.client.admin
            commands = cls.shard_commands()
            hello = admin.command("hello") if commands else {}
            if hello.get("msg") == "isdbgrid":
                for command in commands:
                    admin.command(command)
            elif commands:
                cls._not_sharded_warning()
        return names

    # -- instance methods: this document ---------------------------------------------------------

    def save(self) -> None:
        """Insert this document (giving it an ``_id``), or replace it by ``_id`` and shard key."""
        coll, target = self._checked_save()
        with self._undo_new_id(target), mapped_server_errors():
            if target is None:
                coll.insert_one(self)
            else:
                coll.replace_one(target, self, upsert=True)
        self._remember_key()

    def reload(self) -> None:
        """Replace the local copy with the stored document (by ``_id`` and shard key)."""
        coll, target = self._checked_identity(lambda s, t: checks.find_command(s, t, single=True))
        with mapped_server_errors():
            raw = coll.find_one(target)
        self._refresh(raw)

    def delete(self) -> DeleteResult:
        """Delete the stored document (by ``_id`` and shard key)."""
        coll, target = self._checked_identity(lambda s, t: checks.delete_command(s, t, many=False))
        with mapped_server_errors():
            return coll.delete_one(target)  # type: ignore[no-any-return]

    def modify(self, update: Mapping[str, Any] | Sequence[Mapping[str, Any]], **kwargs: Any) -> None:
        """Apply ``update`` atomically to the stored document and refresh the local copy from it."""
        options = {**kwargs, "return_document": ReturnDocument.AFTER}
        coll, target = self._checked_identity(lambda s, t: checks.find_and_modify_command(s, t, update, options))
        with mapped_server_errors():
            raw = coll.find_one_and_update(target, update, **options)
        self._refresh(raw)
