"""The command the engine reads, and the verdict it gives: small frozen values."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

RuleName = Literal[
    "global_query",
    "shard_key_write",
    "schema",
    "unindexed_query",
    "deny_commands",
    "unknown_namespace",
    "read_only",
    "pipeline_update",
    "malformed",
    "ambiguous",
]


class CommandLike(Protocol):
    """What the engine reads. The wire codec's CommandView satisfies it.

    ``sequences`` holds the OP_MSG kind-1 sections by identifier; it may be
    lazy, and the engine reads it only when a rule needs the documents.
    """

    @property
    def name(self) -> str: ...

    @property
    def db(self) -> str: ...

    @property
    def body(self) -> Mapping[str, Any]: ...

    @property
    def sequences(self) -> Mapping[str, Sequence[Mapping[str, Any]]]: ...


_EMPTY: Mapping[str, Sequence[Mapping[str, Any]]] = {}


class WithSequences(Mapping[str, Any]):
    """A command body with some kind-1 sequences read as fields of it (what a server
    that takes a sequence does with it: an array field of the command). The wire
    codec has refused a sequence that names a body field, so nothing is shadowed;
    a sequence is decoded only when its field is read."""

    __slots__ = ("_body", "_sequences", "_names")

    def __init__(self, body: Mapping[str, Any], sequences: Mapping[str, Sequence[Mapping[str, Any]]], names: Sequence[str]) -> None:
        self._body = body
        self._sequences = sequences
        self._names = tuple(names)

    def __getitem__(self, key: str) -> Any:
        if key in self._names and key not in self._body:
            return self._sequences[key]
        return self._body[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._body
        yield from (n for n in self._names if n not in self._body)

    def __len__(self) -> int:
        return len(self._body) + sum(1 for n in self._names if n not in self._body)

    def __contains__(self, key: object) -> bool:
        return key in self._names or key in self._body


@dataclass(frozen=True)
class Command:
    """A plain command, for offline use (explain CLI, client library, tests)."""

    name: str
    db: str
    body: Mapping[str, Any]
    sequences: Mapping[str, Sequence[Mapping[str, Any]]] = field(default_factory=lambda: _EMPTY)

    @classmethod
    def from_body(cls, body: Mapping[str, Any], db: str | None = None) -> Command:
        """The command named by the body's first key; ``db`` from ``$db`` when not given."""
        if not body:
            raise ValueError("empty command document")
        name = next(iter(body))
        if db is None:
            db = body.get("$db")
            if not isinstance(db, str) or not db:
                raise ValueError("the command has no $db (give db= or add a $db field)")
        return cls(name, db, body)


@dataclass(frozen=True, slots=True)
class Finding:
    """One violation: a refusal (enforce) or a warning (warn, unindexed queries)."""

    rule: RuleName
    code: int
    code_name: str
    message: str  # the errmsg
    namespace: str | None
    command: str  # canonical command name
    shape: str | None  # the query with values replaced by their type names


@dataclass(frozen=True, slots=True)
class Verdict:
    refusal: Finding | None
    warnings: tuple[Finding, ...]
    namespaces: tuple[str, ...]
    command: str
    marker_used: bool

    @property
    def allowed(self) -> bool:
        return self.refusal is None
