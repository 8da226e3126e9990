"""scalymongo_client: the Document / Connection library in front of the scalyproxy guard.

>>> from scalymongo_client import Document, Connection
>>> class BlogPost(Document):
...     structure = {'author': str, 'title': str}
...     indexes = [{'fields': ['author', 'title'], 'shard_key': True, 'unique': True}]
...     __database__ = 'blog'
...     __collection__ = 'blog_posts'
>>> conn = Connection("localhost", 27017)       # the proxy  # doctest: +SKIP
>>> conn.models.BlogPost.find_one({'author': 'Allan', 'title': 'My first post'})  # doctest: +SKIP

Queries and documents are checked client-side by the proxy's own policy engine
before any round trip; the proxy's refusals map onto the same exceptions
(:mod:`scalymongo_client.errors`). See docs/client.md.
"""

from __future__ import annotations

from scalymongo_client.aio import AsyncConnection, AsyncModel
from scalymongo_client.config_io import documents_from_config, export_config, module_documents
from scalymongo_client.connection import Connection, Models
from scalymongo_client.cursor import AsyncDocumentCursor, DocumentCursor
from scalymongo_client.document import Document, registered_models
from scalymongo_client.errors import (
    CommandDenied,
    DefinitionError,
    DocumentNotFound,
    GlobalQueryException,
    NotBoundError,
    ScalyMongoError,
    ScalyMongoWarning,
    SchemaViolation,
    ServerRefusal,
    ShardKeyViolation,
    ValidationError,
)

__all__ = [
    "AsyncConnection",
    "AsyncDocumentCursor",
    "AsyncModel",
    "CommandDenied",
    "Connection",
    "DefinitionError",
    "Document",
    "DocumentCursor",
    "DocumentNotFound",
    "GlobalQueryException",
    "Models",
    "NotBoundError",
    "ScalyMongoError",
    "ScalyMongoWarning",
    "SchemaViolation",
    "ServerRefusal",
    "ShardKeyViolation",
    "ValidationError",
    "documents_from_config",
    "export_config",
    "module_documents",
    "registered_models",
]
