"""The exceptions and the warning category of scalymongo_client.

One family, two origins, one set of types:

* the client checks every query and document itself before any round trip and
  raises :class:`GlobalQueryException`, :class:`ShardKeyViolation`,
  :class:`SchemaViolation` (also spelled :class:`ValidationError`) or
  :class:`CommandDenied`;
* when the proxy refuses a command the client could not judge (a rule in the
  proxy's YAML that the Python class does not declare), pymongo raises an
  ``OperationFailure`` whose ``codeName`` is one of the proxy's; the library
  turns it into the *same* type, in a subclass that is also a
  :class:`pymongo.errors.OperationFailure` (``ServerGlobalQueryException``,
  ...), chained to pymongo's exception.

So ``except GlobalQueryException`` catches both, ``except OperationFailure``
catches only what came from the server, and ``except ScalyMongoError`` catches
every refusal.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pymongo.errors import OperationFailure

from scalyproxy.codes import CODE_NAMES, CODES_BY_NAME

__all__ = [
    "CommandDenied",
    "DefinitionError",
    "DocumentNotFound",
    "GlobalQueryException",
    "NotBoundError",
    "ScalyMongoError",
    "ScalyMongoWarning",
    "SchemaViolation",
    "ServerCommandDenied",
    "ServerGlobalQueryException",
    "ServerRefusal",
    "ServerSchemaViolation",
    "ServerShardKeyViolation",
    "ShardKeyViolation",
    "ValidationError",
    "from_operation_failure",
    "mapped_server_errors",
]


class ScalyMongoWarning(UserWarning):
    """What the proxy would only warn about (an unindexed query, a rule in ``warn`` mode)."""


class ScalyMongoError(Exception):
    """Base of every refusal, whether the client or the proxy made it.

    Attributes: ``message`` (the proxy's text, word for word), ``code`` (the
    proxy's error code, e.g. 29001), ``code_name`` (e.g. ``"ScalyGlobalQuery"``),
    ``details`` (the error document, as the proxy would send it), ``rule`` (the
    policy rule, when known), ``namespace`` (``"db.coll"``, when known) and
    ``from_server`` (False for a client-side check).
    """

    default_code_name = ""
    from_server = False

    def __init__(
        self,
        message: str,
        *,
        code_name: str | None = None,
        rule: str | None = None,
        namespace: str | None = None,
    ) -> None:
        Exception.__init__(self, message)
        self._set_scaly_fields(message, code_name or self.default_code_name, rule, namespace)

    def _set_scaly_fields(
        self, message: str, code_name: str, rule: str | None, namespace: str | None
    ) -> None:
        self._scaly_message = message
        self._scaly_code_name = code_name
        self._scaly_code = CODES_BY_NAME.get(code_name)
        self._scaly_rule = rule
        self._scaly_namespace = namespace

    @property
    def message(self) -> str:
        """The refusal's text (the proxy's ``errmsg``)."""
        return self._scaly_message

    @property
    def code(self) -> int | None:
        """The proxy's error code for this refusal (29001 ... 29006)."""
        return self._scaly_code

    @property
    def code_name(self) -> str:
        """The proxy's ``codeName`` for this refusal."""
        return self._scaly_code_name

    @property
    def rule(self) -> str | None:
        """The policy rule that refused (``global_query``, ``schema``, ...), when known."""
        return self._scaly_rule

    @property
    def namespace(self) -> str | None:
        """The ``"database.collection"`` concerned, when known."""
        return self._scaly_namespace

    @property
    def details(self) -> Mapping[str, Any] | None:
        """The error document, ``{ok: 0, errmsg, code, codeName}``."""
        return {"ok": 0.0, "errmsg": self.message, "code": self.code, "codeName": self.code_name}

    def __str__(self) -> str:
        return self._scaly_message


class GlobalQueryException(ScalyMongoError):
    """A query that does not fix the whole shard key (it would go to every shard).

    Pass ``allow_global=True`` to send it anyway, on purpose.
    """

    default_code_name = "ScalyGlobalQuery"


class ShardKeyViolation(ScalyMongoError):
    """A write that lacks or changes shard-key fields, or an upsert without the full key."""

    default_code_name = "ScalyShardKeyViolation"


class SchemaViolation(ScalyMongoError):
    """A document or update that does not match the declared structure."""

    default_code_name = "ScalySchemaViolation"

    def __init__(
        self,
        message: str,
        *,
        code_name: str | None = None,
        rule: str | None = None,
        namespace: str | None = None,
        errors: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message, code_name=code_name, rule=rule, namespace=namespace)
        self.errors: tuple[str, ...] = errors or (message,)
        """Every problem found, one message each (``comments.0.rank: expected int, got string``)."""


ValidationError = SchemaViolation
"""The MongoKit-era name of :class:`SchemaViolation`; the same class."""


class CommandDenied(ScalyMongoError):
    """A command listed in the config's ``policy.deny_commands``."""

    default_code_name = "ScalyCommandDenied"


class DefinitionError(ScalyMongoError, TypeError):
    """A Document class whose declaration the proxy's config loader would reject.

    Raised when the class is created, naming the class, the key and the fix.
    """


class NotBoundError(ScalyMongoError, TypeError):
    """A database operation on a Document class that is not bound to a connection.

    Use ``conn.models.<Name>`` (or ``conn.model(cls)``) to get the bound class.
    """


class DocumentNotFound(ScalyMongoError, LookupError):
    """``reload()`` or ``modify()`` found no document with this ``_id`` and shard key."""


class ServerRefusal(ScalyMongoError, OperationFailure):
    """A refusal that came from the proxy: also a :class:`pymongo.errors.OperationFailure`."""

    from_server = True

    def __init__(self, failure: OperationFailure) -> None:
        details = dict(failure.details or {})
        message = str(details.get("errmsg", failure.args[0] if failure.args else ""))
        code_name = str(details.get("codeName") or CODE_NAMES.get(failure.code or 0, ""))
        OperationFailure.__init__(self, message, failure.code, details)
        self._set_scaly_fields(message, code_name, None, None)
        self._scaly_code = failure.code
        self._server_details = details

    @property
    def details(self) -> Mapping[str, Any] | None:
        """The proxy's whole error document."""
        return self._server_details

    def __reduce__(self) -> tuple[Any, ...]:
        failure = OperationFailure(self.message, self.code, self._server_details)
        return (type(self), (failure,))


class ServerGlobalQueryException(ServerRefusal, GlobalQueryException):
    """:class:`GlobalQueryException` refused by the proxy."""


class ServerShardKeyViolation(ServerRefusal, ShardKeyViolation):
    """:class:`ShardKeyViolation` refused by the proxy."""


class ServerSchemaViolation(ServerRefusal, SchemaViolation):
    """:class:`SchemaViolation` refused by the proxy."""

    def __init__(self, failure: OperationFailure) -> None:
        super().__init__(failure)
        self.errors = (self.message,)


class ServerCommandDenied(ServerRefusal, CommandDenied):
    """:class:`CommandDenied` refused by the proxy."""


CLIENT_CLASSES: dict[str, type[ScalyMongoError]] = {
    "ScalyGlobalQuery": GlobalQueryException,
    "ScalyShardKeyViolation": ShardKeyViolation,
    "ScalySchemaViolation": SchemaViolation,
    "ScalyCommandDenied": CommandDenied,
}
"""codeName → the class a client-side check raises."""

SERVER_CLASSES: dict[str, type[ServerRefusal]] = {
    "ScalyGlobalQuery": ServerGlobalQueryException,
    "ScalyShardKeyViolation": ServerShardKeyViolation,
    "ScalySchemaViolation": ServerSchemaViolation,
    "ScalyCommandDenied": ServerCommandDenied,
}
"""codeName → the class a refusal from the proxy becomes (other Scaly codes: ServerRefusal)."""


def _code_name_of(failure: OperationFailure) -> str | None:
    details = failure.details or {}
    name = details.get("codeName")
    if isinstance(name, str) and name in CODES_BY_NAME:
        return name
    return CODE_NAMES.get(failure.code or 0)


def from_operation_failure(failure: OperationFailure) -> OperationFailure:
    """The library's exception for a proxy refusal, or ``failure`` itself if it is not one."""
    if isinstance(failure, ServerRefusal):
        return failure
    name = _code_name_of(failure)
    if name is None:
        return failure
    return SERVER_CLASSES.get(name, ServerRefusal)(failure)


@contextmanager
def mapped_server_errors() -> Iterator[None]:
    """Re-raise the proxy's refusals (by ``codeName``) as the library's exceptions."""
    try:
        yield
    except OperationFailure as exc:
        mapped = from_operation_failure(exc)
        if mapped is exc:
            raise
        raise mapped from exc
