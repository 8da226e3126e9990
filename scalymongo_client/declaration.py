"""``Declaration``: everything a Document is without a database (pure, no I/O).

Class creation (the declaration compiled into the proxy's config form and
handed to the proxy's policy engine; see :mod:`scalymongo_client.document`),
default values, validation, the identity filter of a stored document, and the
checks made before each round trip. The database methods come on top of it:
the coroutines of :class:`~scalymongo_client.asynchronous.methods.AsyncDatabaseMethods`
(hand-written) and their synchronous twins in
:class:`~scalymongo_client.synchronous.methods.DatabaseMethods` (generated).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from bson.objectid import ObjectId
from pymongo import IndexModel

from scalymongo_client import checks
from scalymongo_client.cursor_base import Recheck
from scalymongo_client.errors import (
    DefinitionError,
    DocumentNotFound,
    NotBoundError,
    ScalyMongoWarning,
    SchemaViolation,
)
from scalymongo_client.spec import ModelSpec, compile_entry
from scalymongo_client.structure import collection_entry
from scalyproxy.config import ConfigError
from scalyproxy.policy import Command

if TYPE_CHECKING:
    from typing import Self

__all__ = ["BuildCommand", "Declaration", "DocumentMeta"]

_MISSING: Any = object()

BuildCommand = Callable[[ModelSpec, Mapping[str, Any]], Command]


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


class Declaration(dict[str, Any], metaclass=DocumentMeta):
    """A dict declared by its structure, indexes and shard key; the base of :class:`Document`.

    The class attributes are described on :class:`~scalymongo_client.document.Document`.
    """

    structure: ClassVar[Mapping[str, Any]] = {}
    required_fields: ClassVar[Sequence[str]] = ()
    default_values: ClassVar[Mapping[str, Any]] = {}
    indexes: ClassVar[Sequence[Mapping[str, Any]]] = ()
    additional_fields: ClassVar[bool] = False
    rules: ClassVar[Mapping[str, str]] = {}
    collation: ClassVar[Any] = None
    __database__: ClassVar[str | None] = None
    __collection__: ClassVar[str | None] = None

    _scaly_spec: ClassVar[ModelSpec | None] = None
    _scaly_collection: ClassVar[Any] = None
    _scaly_connection: ClassVar[Any] = None
    _scaly_model: ClassVar[type[Declaration] | None] = None
    _scaly_saved_key: dict[str, Any] | None

    # -- class creation ----------------------------------------------------------------

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "_scaly_spec" not in own and "_scaly_collection" not in own:
            cls._scaly_spec = cls._compile()

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
                cls.structure, cls.required_fields, cls.indexes, cls.additional_fields, cls.rules, cls.collation
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

    # -- the checks before a round trip (shared by the sync and the async API) -----------------

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

    @staticmethod
    def _remember_keys(documents: Iterable[Mapping[str, Any]]) -> None:
        """After an insert: each inserted Document remembers the shard key it was stored with."""
        for doc in documents:
            if isinstance(doc, Declaration):
                doc._remember_key()

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
        config = cls.model_spec().collection_config
        for index in config.indexes:
            options: dict[str, Any] = {"unique": True} if index.unique else {}
            if index.sparse:
                options["sparse"] = True
            if index.name:
                options["name"] = index.name
            if index.shard_key and not config.simple_collation:
                options["collation"] = {"locale": "simple"}  # a shard-key index compares binary
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
        if not spec.collection_config.simple_collation:
            shard["collation"] = {"locale": "simple"}  # required when the default collation is not simple
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

    @classmethod
    def _find_rechecker(cls, filter: Mapping[str, Any] | None, projection: Any) -> Recheck:
        """What a cursor calls to check its ``find`` again when ``sort`` changes it."""

        def recheck(options: Mapping[str, Any]) -> None:
            checks.enforce(cls.model_spec(), checks.find_command(cls.model_spec(), filter, projection, options))

        return recheck

