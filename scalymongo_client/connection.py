"""``Connection``: a pymongo ``MongoClient`` (normally to the proxy) and its bound models."""

from __future__ import annotations

import os
import types
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pymongo import MongoClient

from scalymongo_client.config_io import documents_from_config
from scalymongo_client.document import Document, registered_models

if TYPE_CHECKING:
    from typing import Self

__all__ = ["Connection", "Models"]

D = TypeVar("D", bound=Document)
C = TypeVar("C")


class Models(Generic[C]):
    """``conn.models``: every Document class by name, bound to one connection.

    ``conn.models.BlogPost`` is a subclass of ``BlogPost`` whose database
    methods use the connection; ``conn.models["blog.blog_posts"]`` finds a
    model by namespace. Classes from the connection's ``config=`` come first,
    then every registered Document subclass (the latest class of a name wins).
    """

    def __init__(self, connection: C, config_models: dict[str, type[Document]], bind: Any) -> None:
        self._connection = connection
        self._config_models = config_models
        self._bind = bind
        self._bound: dict[type[Document], type[Document]] = {}

    def _available(self) -> dict[str, type[Document]]:
        return {**registered_models(), **self._config_models}

    def bind(self, model: type[D]) -> type[D]:
        """The bound subclass of ``model`` for this connection (created once, then cached)."""
        bound = self._bound.get(model)
        if bound is None:
            bound = self._bind(model)
            self._bound[model] = bound
        return bound  # type: ignore[return-value]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        model = self._available().get(name)
        if model is None:
            raise AttributeError(
                f"no Document class named {name!r} (define a Document subclass, or give config=)"
            )
        return self.bind(model)

    def __getitem__(self, key: str) -> Any:
        """A model by class name or by ``"database.collection"``."""
        available = self._available()
        if key in available:
            return self.bind(available[key])
        for model in available.values():
            if model.namespace() == key:
                return self.bind(model)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._available()))

    def __dir__(self) -> list[str]:
        return sorted(self._available())


def make_bound_class(model: type[D], connection: Any, collection: Any, extra_bases: tuple[type, ...] = ()) -> type[D]:
    """A subclass of ``model`` bound to ``connection`` (``extra_bases`` give the async API)."""
    attrs = {
        "_scaly_collection": collection,
        "_scaly_connection": connection,
        "_scaly_model": model,
        "__module__": model.__module__,
        "__qualname__": model.__qualname__,
        "__doc__": model.__doc__,
    }
    bases = (model, *extra_bases)
    return types.new_class(model.__name__, bases, {"register": False}, lambda ns: ns.update(attrs))


def load_config_models(config: str | os.PathLike[str] | None) -> dict[str, type[Document]]:
    return documents_from_config(config) if config is not None else {}


class Connection:
    """A connection (normally to the proxy) with ``conn.models.<Name>`` bound Document classes.

    ``Connection("localhost", 27017, **pymongo_options)`` or
    ``Connection("mongodb://127.0.0.1:27017/?appname=blog")``; with
    ``config="config/app.yaml"`` the models of that proxy config are created
    too (``conn.models.<Name>``, checked with that config's policy).
    ``conn.client`` is the pymongo ``MongoClient``.
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
        self.client: MongoClient[dict[str, Any]] = MongoClient(host, port, **pymongo_options)
        self.models: Models[Connection] = Models(self, self.config_models, self._bind)

    def _bind(self, model: type[D]) -> type[D]:
        spec = model.model_spec()
        collection = self.client[spec.db][spec.collection]
        return make_bound_class(model, self, collection)

    def model(self, cls: type[D]) -> type[D]:
        """``cls`` bound to this connection (typed: ``conn.model(BlogPost).find_one(...)``)."""
        return self.models.bind(cls)

    def close(self) -> None:
        """Close the pymongo client."""
        self.client.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Connection({self.client!r})"
