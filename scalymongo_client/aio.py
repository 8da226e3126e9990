"""``AsyncConnection``: the same model API over pymongo's ``AsyncMongoClient``.

``await conn.models.BlogPost.find_one(...)``, ``async for post in
conn.models.BlogPost.find(...)``, ``await post.save()``. The checks are the
synchronous ones (pure, no I/O); only the round trips are awaited.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.results import DeleteResult, InsertManyResult, UpdateResult

from scalymongo_client import checks
from scalymongo_client.connection import Models, load_config_models, make_bound_class
from scalymongo_client.cursor import AsyncDocumentCursor
from scalymongo_client.document import BuildCommand, Document
from scalymongo_client.errors import mapped_server_errors

if TYPE_CHECKING:
    from typing import Self

__all__ = ["AsyncConnection", "AsyncModel"]

D = TypeVar("D", bound=Document)


class AsyncModel(Document, register=False):
    """Mixed into classes bound to an :class:`AsyncConnection`: the database methods are coroutines.

    A bound class is ``class Bound(YourModel, AsyncModel)``, so methods you
    override in your model still run first and ``super()`` reaches these.
    """

    @classmethod
    def find(  # type: ignore[override]
        cls, filter: Mapping[str, Any] | None = None, projection: Any = None, *, allow_global: bool = False, **kwargs: Any
    ) -> AsyncDocumentCursor[Self]:
        """Documents matching ``filter``, as instances: ``async for doc in Model.find(...)``."""
        coll, opts = cls._checked(allow_global, kwargs, lambda s, o: checks.find_command(s, filter, projection, o))
        with mapped_server_errors():
            cursor = coll.find(filter, projection, **opts)
        return AsyncDocumentCursor(cls, cursor, opts, cls._find_rechecker(filter, projection))

    @classmethod
    async def find_one(  # type: ignore[override]
        cls, filter: Mapping[str, Any] | None = None, projection: Any = None, *, allow_global: bool = False, **kwargs: Any
    ) -> Self | None:
        """The first document matching ``filter`` as an instance, or None."""
        coll, opts = cls._checked(
            allow_global, kwargs, lambda s, o: checks.find_command(s, filter, projection, o, single=True)
        )
        with mapped_server_errors():
            raw = await coll.find_one(filter, projection, **opts)
        return None if raw is None else cls._from_db(raw)

    @classmethod
    async def count(  # type: ignore[override]
        cls, filter: Mapping[str, Any] | None = None, *, allow_global: bool = False, **kwargs: Any
    ) -> int:
        """How many documents match ``filter``."""
        coll, opts = cls._checked(allow_global, kwargs, lambda s, o: checks.count_command(s, filter, o))
        with mapped_server_errors():
            return int(await coll.count_documents(dict(filter or {}), **opts))

    @classmethod
    async def distinct(  # type: ignore[override]
        cls, key: str, filter: Mapping[str, Any] | None = None, *, allow_global: bool = False, **kwargs: Any
    ) -> list[Any]:
        """The distinct values of ``key`` among the documents matching ``filter``."""
        coll, opts = cls._checked(allow_global, kwargs, lambda s, o: checks.distinct_command(s, key, filter, o))
        with mapped_server_errors():
            return list(await coll.distinct(key, filter, **opts))

    @classmethod
    async def aggregate(
        cls, pipeline: Sequence[Mapping[str, Any]], *, allow_global: bool = False, **kwargs: Any
    ) -> Any:
        """Run an aggregation; returns pymongo's ``AsyncCommandCursor`` of plain dicts."""
        coll, opts = cls._checked(allow_global, kwargs, lambda s, o: checks.aggregate_command(s, pipeline, o))
        with mapped_server_errors():
            return await coll.aggregate(list(pipeline), **opts)

    @classmethod
    async def update_one(  # type: ignore[override]
        cls, filter: Mapping[str, Any], update: Any, upsert: bool = False, *, allow_global: bool = False, **kwargs: Any
    ) -> UpdateResult:
        """Update the first document matching ``filter``."""
        build: BuildCommand = lambda s, o: checks.update_command(s, filter, update, multi=False, upsert=upsert, options=o)  # noqa: E731
        coll, opts = cls._checked(allow_global, kwargs, build)
        with mapped_server_errors():
            return await coll.update_one(filter, update, upsert, **opts)  # type: ignore[no-any-return]

    @classmethod
    async def update_many(  # type: ignore[override]
        cls, filter: Mapping[str, Any], update: Any, upsert: bool = False, *, allow_global: bool = False, **kwargs: Any
    ) -> UpdateResult:
        """Update every document matching ``filter``."""
        build: BuildCommand = lambda s, o: checks.update_command(s, filter, update, multi=True, upsert=upsert, options=o)  # noqa: E731
        coll, opts = cls._checked(allow_global, kwargs, build)
        with mapped_server_errors():
            return await coll.update_many(filter, update, upsert, **opts)  # type: ignore[no-any-return]

    @classmethod
    async def delete_one(  # type: ignore[override]
        cls, filter: Mapping[str, Any], *, allow_global: bool = False, **kwargs: Any
    ) -> DeleteResult:
        """Delete the first document matching ``filter``."""
        coll, opts = cls._checked(allow_global, kwargs, lambda s, o: checks.delete_command(s, filter, many=False, options=o))
        with mapped_server_errors():
            return await coll.delete_one(filter, **opts)  # type: ignore[no-any-return]

    @classmethod
    async def delete_many(  # type: ignore[override]
        cls, filter: Mapping[str, Any], *, allow_global: bool = False, **kwargs: Any
    ) -> DeleteResult:
        """Delete every document matching ``filter``."""
        coll, opts = cls._checked(allow_global, kwargs, lambda s, o: checks.delete_command(s, filter, many=True, options=o))
        with mapped_server_errors():
            return await coll.delete_many(filter, **opts)  # type: ignore[no-any-return]

    @classmethod
    async def find_one_and_update(  # type: ignore[override]
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
            raw = await coll.find_one_and_update(filter, update, **opts)
        return None if raw is None else cls._from_db(raw)

    @classmethod
    async def insert_many(  # type: ignore[override]
        cls, documents: Iterable[Mapping[str, Any]], *, allow_global: bool = False, **kwargs: Any
    ) -> InsertManyResult:
        """Insert documents (all checked first: one bad document and nothing is sent)."""
        coll, docs, opts = cls._checked_insert(documents, allow_global, kwargs)
        with mapped_server_errors():
            result = await coll.insert_many(docs, **opts)
        for doc in docs:
            if isinstance(doc, Document):
                doc._remember_key()
        return result  # type: ignore[no-any-return]

    @classmethod
    async def ensure_indexes(cls) -> list[str]:  # type: ignore[override]
        """Create the declared indexes; on a mongos also shard the collection (else warn)."""
        coll = cls.collection
        models = cls.index_models()
        with mapped_server_errors():
            names: list[str] = await coll.create_indexes(models) if models else []
            admin = coll.database.client.admin
            commands = cls.shard_commands()
            if commands and (await admin.command("hello")).get("msg") == "isdbgrid":
                for command in commands:
                    await admin.command(command)
            elif commands:
                cls._not_sharded_warning()
        return names

    async def save(self) -> None:  # type: ignore[override]
        """Insert this document (giving it an ``_id``), or replace it by ``_id`` and shard key."""
        coll, target = self._checked_save()
        with self._undo_new_id(target), mapped_server_errors():
            if target is None:
                await coll.insert_one(self)
            else:
                await coll.replace_one(target, self, upsert=True)
        self._remember_key()

    async def reload(self) -> None:  # type: ignore[override]
        """Replace the local copy with the stored document (by ``_id`` and shard key)."""
        coll, target = self._checked_identity(lambda s, t: checks.find_command(s, t, single=True))
        with mapped_server_errors():
            raw = await coll.find_one(target)
        self._refresh(raw)

    async def delete(self) -> DeleteResult:  # type: ignore[override]
        """Delete the stored document (by ``_id`` and shard key)."""
        coll, target = self._checked_identity(lambda s, t: checks.delete_command(s, t, many=False))
        with mapped_server_errors():
            return await coll.delete_one(target)  # type: ignore[no-any-return]

    async def modify(self, update: Mapping[str, Any] | Sequence[Mapping[str, Any]], **kwargs: Any) -> None:  # type: ignore[override]
        """Apply ``update`` atomically to the stored document and refresh the local copy."""
        options = {**kwargs, "return_document": ReturnDocument.AFTER}
        coll, target = self._checked_identity(lambda s, t: checks.find_and_modify_command(s, t, update, options))
        with mapped_server_errors():
            raw = await coll.find_one_and_update(target, update, **options)
        self._refresh(raw)


class AsyncConnection:
    """An ``AsyncMongoClient`` (normally to the proxy) with ``conn.models.<Name>`` async models.

    Same arguments as :class:`~scalymongo_client.Connection`. Close it with
    ``await conn.close()`` or use ``async with AsyncConnection(...) as conn``.
    """

    def __init__(
        self,
        host: str | Sequence[str] | None = None,
        port: int | None = None,
        *,
        config: str | os.PathLike[str] | None = None,
        **pymongo_options: Any,
    ) -> None:
        self.config_models = load_config_models(config)
        self.client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(host, port, **pymongo_options)
        self.models: Models[AsyncConnection] = Models(self, self.config_models, self._bind)

    def _bind(self, model: type[D]) -> type[D]:
        spec = model.model_spec()
        collection = self.client[spec.db][spec.collection]
        return make_bound_class(model, self, collection, (AsyncModel,))

    def model(self, cls: type[D]) -> type[D]:
        """``cls`` bound to this connection; its database methods are coroutines."""
        return self.models.bind(cls)

    async def close(self) -> None:
        """Close the pymongo client."""
        await self.client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncConnection({self.client!r})"
