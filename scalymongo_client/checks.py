"""Client-side checks: the command pymongo would send, judged by the proxy's own engine.

Pure: no I/O. Each ``*_command`` function builds the OP_MSG body (and kind-1
sequences) that pymongo sends for one collection method, with the fields the
policy reads (filter, sort, collation, hint, comment, statements, documents);
:func:`enforce` asks :class:`scalyproxy.policy.Engine` for its verdict, raises
the library's exception for a refusal and issues a :class:`ScalyMongoWarning`
for each warning. The same engine runs inside the proxy, so a check passes here
exactly when it would pass there.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from scalymongo_client.errors import (
    CLIENT_CLASSES,
    ScalyMongoError,
    ScalyMongoWarning,
    SchemaViolation,
)
from scalymongo_client.spec import ModelSpec
from scalymongo_client.structure import collation_document
from scalyproxy.policy import Command, Finding, Verdict

__all__ = [
    "aggregate_command",
    "count_command",
    "delete_command",
    "distinct_command",
    "enforce",
    "find_and_modify_command",
    "find_command",
    "insert_command",
    "marked_comment",
    "refusal_error",
    "sort_document",
    "update_command",
]

_PACKAGE = __name__.rpartition(".")[0]

# -- the allow marker --------------------------------------------------------------


def marked_comment(comment: Any, marker: str) -> Any:
    """``comment`` carrying the allow marker, keeping what the caller wrote.

    * no comment: the marker itself;
    * a string: ``"<comment> <marker>"`` (unchanged if it already contains it);
    * a document: a copy with the marker under the key ``"scaly"`` (``"_scaly"``...
      if taken), unchanged if one of its string values already contains it. The
      proxy accepts a marker there; FerretDB accepts only string comments on
      most commands, a real mongos accepts documents.
    """
    if comment is None:
        return marker
    if isinstance(comment, str):
        return comment if marker in comment else f"{comment} {marker}".strip()
    if isinstance(comment, Mapping):
        if any(isinstance(v, str) and marker in v for v in comment.values()):
            return comment
        key = "scaly"
        while key in comment:
            key = "_" + key
        return {**comment, key: marker}
    raise TypeError(
        f"allow_global=True needs a string or document comment to add the marker to, got {comment!r}"
    )


def options_with_marker(options: Mapping[str, Any], allow_global: bool, marker: str) -> dict[str, Any]:
    """A copy of the pymongo keyword arguments, ``comment`` marked when ``allow_global``."""
    out = dict(options)
    if allow_global:
        out["comment"] = marked_comment(out.get("comment"), marker)
    return out


# -- command bodies, as pymongo builds them -------------------------------------------


def sort_document(sort: Any) -> dict[str, Any] | None:
    """pymongo's sort argument (a key, a list of (key, direction) pairs or a mapping) as a document."""
    if sort is None:
        return None
    if isinstance(sort, str):
        return {sort: 1}
    if isinstance(sort, Mapping):
        return dict(sort)
    return {str(k): d for k, d in sort}


def _projection_document(projection: Any) -> Any:
    if projection is None or isinstance(projection, Mapping):
        return projection
    return {str(name): 1 for name in projection}


def _hint(hint: Any) -> Any:
    return hint if hint is None or isinstance(hint, str) else sort_document(hint)


def _collation(options: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``collation`` option as the document pymongo sends (it also takes a ``Collation``)."""
    collation = options.get("collation")
    return None if collation is None else collation_document(collation)


def _body(name: str, spec: ModelSpec, fields: Mapping[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = {name: spec.collection}
    body.update((k, v) for k, v in fields.items() if v is not None)
    body["$db"] = spec.db
    return body


def _command(name: str, spec: ModelSpec, fields: Mapping[str, Any], **sequences: Sequence[Mapping[str, Any]]) -> Command:
    return Command(name=name, db=spec.db, body=_body(name, spec, fields), sequences=sequences)


def find_command(
    spec: ModelSpec,
    filter: Mapping[str, Any] | None,
    projection: Any = None,
    options: Mapping[str, Any] | None = None,
    *,
    single: bool = False,
) -> Command:
    """``find`` as ``Collection.find`` / ``find_one`` (``single``) sends it."""
    o = options or {}
    limit = 1 if single else o.get("limit") or None
    fields = {
        "filter": dict(filter or {}),
        "sort": sort_document(o.get("sort")),
        "projection": _projection_document(projection),
        "hint": _hint(o.get("hint")),
        "skip": o.get("skip") or None,
        "limit": abs(limit) if limit else None,
        "singleBatch": True if single else None,
        "comment": o.get("comment"),
        "collation": _collation(o),
        "let": o.get("let"),
    }
    return _command("find", spec, fields)


def count_command(spec: ModelSpec, filter: Mapping[str, Any] | None, options: Mapping[str, Any] | None = None) -> Command:
    """``Collection.count_documents``: an aggregate whose first stage is the filter's ``$match``."""
    o = options or {}
    pipeline: list[dict[str, Any]] = [{"$match": dict(filter or {})}]
    if o.get("skip"):
        pipeline.append({"$skip": o["skip"]})
    if o.get("limit"):
        pipeline.append({"$limit": o["limit"]})
    pipeline.append({"$group": {"_id": 1, "n": {"$sum": 1}}})
    fields = {"pipeline": pipeline, "cursor": {}, "hint": _hint(o.get("hint")), "comment": o.get("comment"), "collation": _collation(o)}
    return _command("aggregate", spec, fields)


def distinct_command(
    spec: ModelSpec, key: str, filter: Mapping[str, Any] | None, options: Mapping[str, Any] | None = None
) -> Command:
    """``Collection.distinct``."""
    o = options or {}
    fields = {"key": key, "query": None if filter is None else dict(filter), "collation": _collation(o), "hint": _hint(o.get("hint")), "comment": o.get("comment")}
    return _command("distinct", spec, fields)


def aggregate_command(
    spec: ModelSpec, pipeline: Sequence[Mapping[str, Any]], options: Mapping[str, Any] | None = None
) -> Command:
    """``Collection.aggregate``."""
    o = options or {}
    fields = {"pipeline": list(pipeline), "cursor": {}, "collation": _collation(o), "hint": _hint(o.get("hint")), "comment": o.get("comment"), "let": o.get("let")}
    return _command("aggregate", spec, fields)


def update_command(
    spec: ModelSpec,
    filter: Mapping[str, Any],
    update: Any,
    *,
    multi: bool,
    upsert: bool = False,
    options: Mapping[str, Any] | None = None,
) -> Command:
    """``update_one`` / ``update_many`` / ``replace_one``: one statement in the ``updates`` sequence."""
    o = options or {}
    statement: dict[str, Any] = {"q": dict(filter), "u": update, "multi": multi, "upsert": upsert}
    for key, option in (("collation", "collation"), ("arrayFilters", "array_filters"), ("hint", "hint")):
        if o.get(option) is not None:
            statement[key] = _hint(o[option]) if key == "hint" else _collation(o) if key == "collation" else o[option]
    fields = {"ordered": True, "comment": o.get("comment"), "let": o.get("let")}
    return _command("update", spec, fields, updates=[statement])


def delete_command(spec: ModelSpec, filter: Mapping[str, Any], *, many: bool, options: Mapping[str, Any] | None = None) -> Command:
    """``delete_one`` / ``delete_many``: one statement in the ``deletes`` sequence."""
    o = options or {}
    statement: dict[str, Any] = {"q": dict(filter), "limit": 0 if many else 1}
    if o.get("collation") is not None:
        statement["collation"] = _collation(o)
    if o.get("hint") is not None:
        statement["hint"] = _hint(o["hint"])
    fields = {"ordered": True, "comment": o.get("comment"), "let": o.get("let")}
    return _command("delete", spec, fields, deletes=[statement])


def find_and_modify_command(
    spec: ModelSpec, filter: Mapping[str, Any], update: Any, options: Mapping[str, Any] | None = None
) -> Command:
    """``find_one_and_update``."""
    o = options or {}
    fields = {
        "query": dict(filter),
        "new": bool(o.get("return_document", False)),
        "update": update,
        "fields": _projection_document(o.get("projection")),
        "sort": sort_document(o.get("sort")),
        "upsert": bool(o.get("upsert", False)),
        "arrayFilters": o.get("array_filters"),
        "hint": _hint(o.get("hint")),
        "collation": _collation(o),
        "comment": o.get("comment"),
        "let": o.get("let"),
    }
    return _command("findAndModify", spec, fields)


def insert_command(
    spec: ModelSpec, documents: Iterable[Mapping[str, Any]], options: Mapping[str, Any] | None = None
) -> Command:
    """``insert_one`` / ``insert_many``: the documents (with their ``_id``) in the ``documents`` sequence."""
    o = options or {}
    fields = {"ordered": o.get("ordered", True), "comment": o.get("comment")}
    return _command("insert", spec, fields, documents=[dict(d) for d in documents])


# -- the verdict -------------------------------------------------------------------------


def refusal_error(finding: Finding) -> ScalyMongoError:
    """The library's exception for a refusal the engine made client-side."""
    cls = CLIENT_CLASSES.get(finding.code_name, ScalyMongoError)
    if cls is SchemaViolation:
        return SchemaViolation(
            finding.message, code_name=finding.code_name, rule=finding.rule, namespace=finding.namespace
        )
    return cls(finding.message, code_name=finding.code_name, rule=finding.rule, namespace=finding.namespace)


def user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith(_PACKAGE):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def warn(finding: Finding) -> None:
    """Issue a :class:`ScalyMongoWarning` for what the proxy would only warn about."""
    message = ScalyMongoWarning(f"{finding.message} [{finding.rule}]")
    warnings.warn(message, stacklevel=user_stacklevel())


def enforce(spec: ModelSpec, command: Command) -> Verdict:
    """Judge ``command`` with the model's engine: warn for warnings, raise for a refusal."""
    verdict = spec.engine.decide(command)
    for finding in verdict.warnings:
        warn(finding)
    if verdict.refusal is not None:
        raise refusal_error(verdict.refusal)
    return verdict
