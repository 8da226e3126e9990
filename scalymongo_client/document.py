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
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from bson.objectid import ObjectId
from pymongo import IndexModel, ReturnDocument
from pymongo.results import DeleteResult, InsertManyResult, UpdateResult

from scalymongo_client import checks
from scalymongo_client.cursor import DocumentCursor
from scalymongo_client.errors import (
    DefinitionError,
    DocumentNotFound,
    NotBoundError,
    ScalyMongoWarning,
    SchemaViolation,
    mapped_server_errors,
)
from scalymongo_client.spec import ModelSpec, compile_entry
from scalymongo_client.structure import collection_entry
from scalyproxy.config import ConfigError
from scalyproxy.policy import Command

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Document", "DocumentMeta", "registered_models"]

_REGISTRY: dict[str, type[Document]] = {}
_MISSING: Any = object()

BuildCommand = Callable[[ModelSpec, Mapping[str, Any]], Command]


def registered_models() -> dict[str, type[Document]]:
    """Every registered Document subclass by class name (the latest definition of a name wins)."""
    return dict(_REGISTRY)


class DocumentMeta(type):
    """The metaclass of :class:`Document`: gives bound classes their ``collection``."""

    @property
    def collection(cls) -> Any:
        """The raw pymongo ``Collection`` (``AsyncCollection``) of a bound class."""
        coll = getattr(cls, "_scaly_collection", None)
        if coll is None:
            raise NotBoundError(_not_bound_message(cls))
        return coll


def _not_bound_message(cls: type) -> str:
    return f"{cls.__name__} is not bound to a connection (use conn.models.{cls.__name__})"


def _get_path(doc: Mapping[str, Any], dotted: str) -> Any:
    value: Any = doc
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _default_value(value: Any) -> Any:
    return value() if callable(value) else copy.deepcopy(value)


def _set_default(doc: MutableMapping[str, Any], parts: list[str], value: Any) -> None:
    head, rest = parts[0], parts[1:]
    if not rest:
        if head not in doc:
            doc[head] = _default_value(value)
        return
    child = doc.setdefault(head, {})
    if isinstance(child, MutableMapping):
        _set_default(child, rest, value)


class Document(dict[str, Any], metaclass=DocumentMeta):
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
    * ``__database__``, ``__collection__``: where the documents live.
    """

    structure: ClassVar[Mapping[str, Any]] = {}
    required_fields: ClassVar[Sequence[str]] = ()
    default_values: ClassVar[Mapping[str, Any]] = {}
    indexes: ClassVar[Sequence[Mapping[str, Any]]] = ()
    additional_fields: ClassVar[bool] = False
    rules: ClassVar[Mapping[str, str]] = {}
    __database__: ClassVar[str | None] = None
    __collection__: ClassVar[str | None] = None

    _scaly_spec: ClassVar[ModelSpec | None] = None
    _scaly_collection: ClassVar[Any] = None
    _scaly_connection: ClassVar[Any] = None
    _scaly_model: ClassVar[type[Document] | None] = None
    _scaly_saved_key: dict[str, Any] | None

    # -- class creation ----------------------------------------------------------------

    def __init_subclass__(cls, *, register: bool = True, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "_scaly_spec" not in own and "_scaly_collection" not in own:
            cls._scaly_spec = cls._compile()
        if register:
            _REGISTRY[cls.__name__] = cls

    @classmethod
    def namespace(cls) -> str | None:
        """``"database.collection"``, or None when the class declares no namespace."""
        if cls.__database__ and cls.__collection__:
            return f"{cls.__database__}.{cls.__collection__}"
        return None

    @classmethod
    def config_entry(cls) -> dict[str, Any]:
        """This class as the ``collections."db.coll"`` entry of a proxy config (YAML form)."""
        try:
            return collection_entry(
                cls.structure, cls.required_fields, cls.indexes, cls.additional_fields, cls.rules
            )
        except TypeError as exc:
            raise DefinitionError(f"{cls.__qualname__}: {exc}") from None

    @classmethod
    def _compile(cls) -> ModelSpec | None:
        entry = cls.config_entry()
        ns = cls.namespace()
        if ns is None:
            return None
        try:
            return compile_entry(ns, entry, f"<class {cls.__qualname__}>")
        except ConfigError as exc:
            prefix = f"collections.{ns}."
            problems = "\n".join(f"  {i.path.removeprefix(prefix)}: {i.message}" for i in exc.issues)
            raise DefinitionError(f"{cls.__qualname__} is not a valid declaration:\n{problems}") from None

    @classmethod
    def model_spec(cls) -> ModelSpec:
        """The compiled declaration (namespace, proxy config, engine); raises if none."""
        spec = cls._scaly_spec
        if spec is None:
            raise DefinitionError(f"{cls.__name__} declares no __database__ and __collection__")
        return spec

    # -- instances -------------------------------------------------------------------------

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """A new document: ``dict(*args, **kwargs)``, then ``default_values`` for what is missing."""
        super().__init__(*args, **kwargs)
        self._scaly_saved_key = None
        for path, value in self.default_values.items():
            _set_default(self, path.split("."), value)

    @classmethod
    def _from_db(cls, raw: Mapping[str, Any]) -> Self:
        doc = cls.__new__(cls)
        dict.update(doc, raw)
        doc._remember_key()
        return doc

    def validate(self) -> None:
        """Check this document against the structure, as the proxy's schema rule does.

        Raises :class:`SchemaViolation` (alias ``ValidationError``) whose message
        lists every problem (``comments.0.rank: expected int, got string``),
        ``; ``-separated, and whose ``errors`` holds them one by one.
        """
        spec = type(self).model_spec()
        errors = spec.validate(self)
        if errors:
            raise SchemaViolation(
                "; ".join(errors), rule="schema", namespace=spec.namespace, errors=tuple(errors)
            )

    def _shard_key_values(self, source: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in type(self).model_spec().shard_key:
            value = _get_path(source, name)
            if value is not _MISSING:
                out[name] = value
        return out

    def _remember_key(self) -> None:
        self._scaly_saved_key = self._shard_key_values(self) if self._scaly_spec else None

    def identity_filter(self) -> dict[str, Any]:
        """``{_id, shard key...}``: targets this document (shard key as last loaded or saved)."""
        if "_id" not in self:
            raise DocumentNotFound(f"this {type(self).__name__} has no _id (save it first)")
        saved = getattr(self, "_scaly_saved_key", None)
        key = saved if saved is not None else self._shard_key_values(self)
        return {"_id": self["_id"], **key}

    def _refresh(self, raw: Mapping[str, Any] | None) -> None:
        if raw is None:
            raise DocumentNotFound(f"no {type(self).__name__} matches {self.identity_filter()!r}")
        self.clear()
        dict.update(self, raw)
        self._remember_key()

    # -- planning (shared by the sync and the async API) ---------------------------------------

    @classmethod
    def _checked(cls, allow_global: bool, options: Mapping[str, Any], build: BuildCommand) -> tuple[Any, dict[str, Any]]:
        """Check the command ``build`` makes; return the collection and pymongo's keyword arguments."""
        spec = cls.model_spec()
        opts = checks.options_with_marker(options, allow_global, spec.marker)
        checks.enforce(spec, build(spec, opts))
        return cls.collection, opts

    @classmethod
    def _checked_insert(
        cls, documents: Iterable[Mapping[str, Any]], allow_global: bool, options: Mapping[str, Any]
    ) -> tuple[Any, list[Mapping[str, Any]], dict[str, Any]]:
        """Give each document an ``_id`` (as pymongo would), check them all, then keep the ids."""
        docs = list(documents)
        staged = [d if "_id" in d else {"_id": ObjectId(), **d} for d in docs]
        coll, opts = cls._checked(allow_global, options, lambda s, o: checks.insert_command(s, staged, o))
        out: list[Mapping[str, Any]] = []
        for doc, ready in zip(docs, staged, strict=True):
            if ready is not doc and isinstance(doc, MutableMapping):
                doc["_id"] = ready["_id"]
                ready = doc
            out.append(ready)
        return coll, out, opts

    def _checked_save(self) -> tuple[Any, dict[str, Any] | None]:
        """Check a save: an insert (returns no filter, sets ``_id``) or a replacement by identity."""
        cls = type(self)
        if "_id" in self:
            target = self.identity_filter()
            build: BuildCommand = lambda s, o: checks.update_command(s, target, dict(self), multi=False, upsert=True)  # noqa: E731
            coll, _ = cls._checked(False, {}, build)
            return coll, target
        new_id = ObjectId()
        coll, _ = cls._checked(False, {}, lambda s, o: checks.insert_command(s, [{"_id": new_id, **self}]))
        fields = dict(self)
        self.clear()
        dict.update(self, {"_id": new_id, **fields})  # _id first, as the server stores it
        return coll, None

    @contextmanager
    def _undo_new_id(self, target: dict[str, Any] | None) -> Iterator[None]:
        """If the insert of a new document fails, take back the ``_id`` given to it."""
        try:
            yield
        except BaseException:
            if target is None:
                self.pop("_id", None)
            raise

    def _checked_identity(self, build: Callable[[ModelSpec, dict[str, Any]], Command]) -> tuple[Any, dict[str, Any]]:
        target = self.identity_filter()
        coll, _ = type(self)._checked(False, {}, lambda s, o: build(s, target))
        return coll, target

    @classmethod
    def index_models(cls) -> list[IndexModel]:
        """The declared indexes as pymongo ``IndexModel`` objects."""
        models = []
        for index in cls.model_spec().collection_config.indexes:
            options: dict[str, Any] = {"unique": True} if index.unique else {}
            if index.sparse:
                options["sparse"] = True
            if index.name:
                options["name"] = index.name
            models.append(IndexModel(list(index.keys), **options))
        return models

    @classmethod
    def shard_commands(cls) -> list[dict[str, Any]]:
        """The admin commands that shard this collection on its declared key (none without one)."""
        spec = cls.model_spec()
        index = spec.collection_config.shard_key
        if index is None:
            return []
        shard: dict[str, Any] = {"shardCollection": spec.namespace, "key": dict(index.keys)}
        if index.unique:
            shard["unique"] = True
        return [{"enableSharding": spec.db}, shard]

    @classmethod
    def _not_sharded_warning(cls) -> None:
        warnings.warn(
            ScalyMongoWarning(
                f"{cls.model_spec().namespace}: the server is not a mongos (hello.msg is not "
                "'isdbgrid'): indexes created, the collection was not sharded"
            ),
            stacklevel=checks.user_stacklevel(),
        )

    # -- synchronous API: class methods --------------------------------------------------------

    @classmethod
    def find(
        cls, filter: Mapping[str, Any] | None = None, projection: Any = None, *, allow_global: bool = False, **kwargs: Any
    ) -> DocumentCursor[Self]:
        """Documents matching ``filter``, as instances (pymongo's ``find`` keyword arguments)."""
        coll, opts = cls._checked(allow_global, kwargs, lambda s, o: checks.find_command(s, filter, projection, o))
        with mapped_server_errors():
            cursor = coll.find(filter, projection, **opts)
        return DocumentCursor(cls, cursor, opts, cls._find_rechecker(filter, projection))

    @classmethod
    def _find_rechecker(cls, filter: Mapping[str, Any] | None, projection: Any) -> Callable[[Mapping[str, Any]], None]:
        def recheck(options: Mapping[str, Any]) -> None:
            checks.enforce(cls.model_spec(), checks.find_command(cls.model_spec(), filter, projection, options))

        return recheck

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
        for doc in docs:
            if isinstance(doc, Document):
                doc._remember_key()
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
            if commands and admin.command("hello").get("msg") == "isdbgrid":
                for command in commands:
                    admin.command(command)
            elif commands:
                cls._not_sharded_warning()
        return names

    # -- synchronous API: this document -------------------------------------------------------

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
