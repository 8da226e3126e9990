"""``AsyncConnection``: the same model API over pymongo's ``AsyncMongoClient``.

``await conn.models.BlogPost.find_one(...)``, ``async for post in
conn.models.BlogPost.find(...)``, ``await post.save()``. The checks are the
synchronous ones (pure, no I/O); only the round trips are awaited. The
coroutines are written in :mod:`scalymongo_client.asynchronous`, the source
the synchronous API is generated from.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from pymongo import AsyncMongoClient

from scalymongo_client.asynchronous.methods import AsyncDatabaseMethods
from scalymongo_client.connection import Models, load_config_models, make_bound_class
from scalymongo_client.document import Document

if TYPE_CHECKING:
    from typing import Self

__all__ = ["AsyncConnection", "AsyncModel"]

D = TypeVar("D", bound=Document)


class AsyncModel(AsyncDatabaseMethods, Document, register=False):
    """Mixed into classes bound to an :class:`AsyncConnection`: the database methods are coroutines.

    A bound class is ``class Bound(YourModel, AsyncModel)``, so methods you
    override in your model still run first and ``super()`` reaches these: the
    coroutines of :class:`~scalymongo_client.asynchronous.methods.AsyncDatabaseMethods`,
    which override the synchronous methods of :class:`Document`.
    """


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
