"""One function per command the guard inspects: find its queries and writes, check each.

Every handler has the signature ``(checks, decision, db, body, source)``;
``source`` is the command, whose (maybe lazy) ``sequences`` are read only when needed;
statements come from the body or, when absent there, the kind-1 sequence of
the same name. Commands without a handler get only the generic checks
(namespace, unknown_namespaces).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, Final

from scalyproxy.policy.commands import METADATA_STAGES, canonical
from scalyproxy.policy.decision import Checks, Decision, Source, Statement
from scalyproxy.policy.targeting import (
    PER_DOCUMENT,
    Variables,
    is_array,
    is_mapping,
    let_variables,
    nonsimple_collation,
)
from scalyproxy.wire.ambiguous import name_field

Handler = Callable[[Checks, Decision, str, Mapping[str, Any], Source], None]

_MAX_PIPELINE_DEPTH: Final = 16
_EXPLAINABLE: Final = frozenset({"find", "count", "distinct", "aggregate", "findAndModify", "update", "delete", "mapReduce"})


def _first_key(body: Mapping[str, Any]) -> str:
    return next(iter(body), "")


def _collection(c: Checks, d: Decision, db: str, body: Mapping[str, Any]) -> Any:
    """The compiled collection the command addresses (None: undeclared or unknown)."""
    ns = c.namespace(d, db, body, _first_key(body))
    return None if ns is None else d.touch(ns)


# -- reads ---------------------------------------------------------------------------


def find(c: Checks, d: Decision, db: str, body: Mapping[str, Any], _src: Source) -> None:
    cc = _collection(c, d, db, body)
    if cc is not None:
        c.read(d, cc, body.get("filter"), body.get("collation"), body.get("sort"), body.get("let"))


def count_or_distinct(c: Checks, d: Decision, db: str, body: Mapping[str, Any], _src: Source) -> None:
    cc = _collection(c, d, db, body)
    if cc is not None:
        c.read(d, cc, body.get("query"), body.get("collation"))


def map_reduce(c: Checks, d: Decision, db: str, body: Mapping[str, Any], _src: Source) -> None:
    cc = _collection(c, d, db, body)
    if cc is not None:
        c.read(d, cc, body.get("query"), body.get("collation"), body.get("sort"))


def aggregate(c: Checks, d: Decision, db: str, body: Mapping[str, Any], _src: Source) -> None:
    target = name_field(body, _first_key(body))
    cc = None
    if isinstance(target, str):
        cc = d.touch(f"{db}.{target}")
    elif target != 1:
        c.namespace(d, db, body, _first_key(body))
    pipeline = body.get("pipeline")
    if not is_array(pipeline):
        # no pipeline to walk: nothing can reach another namespace, the server refuses it
        d.malformed_unless_ungoverned("aggregate needs a pipeline array", cc.namespace if cc else None)
    collation, let = body.get("collation"), body.get("let")
    if cc is not None:
        _first_stage(c, d, cc, pipeline, collation, let)
    if not (is_mapping(collation) and collation) and cc is not None:
        collation = cc.config.collation  # the pipeline runs under the collection's default collation
    _sub_pipelines(c, d, db, pipeline, Scope(collation, let_variables(let)), 0)
    _output_targets(d, db, pipeline)


class Scope:
    """What a sub-pipeline's queries are judged under: the pipeline's collation and the variables in scope."""

    __slots__ = ("collation", "variables")

    def __init__(self, collation: Any, variables: Variables) -> None:
        self.collation = collation
        self.variables = variables

    def with_variables(self, names: Any) -> Scope:
        """A ``$lookup``'s ``let`` names: each holds one value per input document."""
        if not is_mapping(names) or not names:
            return self
        return Scope(self.collation, {**self.variables, **dict.fromkeys(names, PER_DOCUMENT)})


def _first_stage(c: Checks, d: Decision, cc: Any, pipeline: Sequence[Any], collation: Any, let: Any) -> None:
    first = pipeline[0] if pipeline else {}
    if not is_mapping(first):
        d.malformed("each pipeline stage must be a document", cc.namespace)
    name = _first_key(first)
    if name in METADATA_STAGES:
        return
    sort = None
    query: Any = {}
    if name == "$match":
        query = first["$match"]
        second = pipeline[1] if len(pipeline) > 1 else None
        sort = second.get("$sort") if is_mapping(second) else None
    elif name == "$geoNear" and is_mapping(first["$geoNear"]):
        query = first["$geoNear"].get("query", {})
    c.read(d, cc, query, collation, sort, let)


def _foreign_ns(db: str, value: Any) -> str | None:
    if isinstance(value, str) and value:
        return f"{db}.{value}"
    if is_mapping(value):
        other_db, coll = name_field(value, "db"), name_field(value, "coll")
        if isinstance(other_db, str) and isinstance(coll, str):
            return f"{other_db}.{coll}"
    return None


def _first_match(pipeline: Any) -> Any:
    if is_array(pipeline) and pipeline and is_mapping(pipeline[0]) and "$match" in pipeline[0]:
        return pipeline[0]["$match"]
    return {}


def _conjunction(*filters: Any) -> dict[str, Any]:
    parts = [f for f in filters if is_mapping(f) and f]
    return {"$and": parts} if parts else {}


def _per_document(field: Any) -> dict[str, Any]:
    """A join field fixed once per input document (``foreignField``, ``connectToField``)."""
    return {field: PER_DOCUMENT} if isinstance(field, str) else {}


def _lookup_query(spec: Mapping[str, Any], sub: Any) -> dict[str, Any]:
    return _conjunction(_per_document(spec.get("foreignField")), _first_match(sub))


def _graph_query(spec: Mapping[str, Any]) -> dict[str, Any]:
    return _conjunction(_per_document(spec.get("connectToField")), spec.get("restrictSearchWithMatch"))


def _union_query(sub: Any) -> dict[str, Any]:
    return _conjunction(_first_match(sub))


def _sub_query(d: Decision, ns: str, read: Callable[[], dict[str, Any]], scope: Scope) -> None:
    """The query a sub-pipeline runs on ``ns``, read (``read()``) only when ``ns`` is declared."""
    cc = d.touch(ns)
    if cc is not None and cc.global_query != "off":
        assert cc.shard_key is not None
        query = read()
        missing = cc.shard_key.missing(query, nonsimple_collation(scope.collation), scope.variables)
        if missing:
            d.global_query(cc, missing, query)


def _sub_pipelines(c: Checks, d: Decision, db: str, pipeline: Sequence[Any], scope: Scope, depth: int) -> None:
    if depth > _MAX_PIPELINE_DEPTH:
        d.malformed("the pipeline is nested too deeply for the proxy to check")
    for stage in pipeline:
        if not is_mapping(stage):
            continue
        for name, spec in stage.items():
            if name == "$lookup" and is_mapping(spec):
                _lookup(c, d, db, spec, scope, depth)
            elif name == "$graphLookup" and is_mapping(spec):
                ns = _foreign_ns(db, name_field(spec, "from"))
                if ns is not None:
                    _sub_query(d, ns, partial(_graph_query, spec), scope)
            elif name == "$unionWith":
                _union_with(c, d, db, spec, scope, depth)
            elif name == "$facet" and is_mapping(spec):
                for sub in spec.values():
                    if is_array(sub):
                        _sub_pipelines(c, d, db, sub, scope, depth + 1)


def _lookup(c: Checks, d: Decision, db: str, spec: Mapping[str, Any], scope: Scope, depth: int) -> None:
    ns = _foreign_ns(db, name_field(spec, "from"))
    sub = spec.get("pipeline")
    inner = scope.with_variables(spec.get("let"))
    if ns is not None:
        _sub_query(d, ns, partial(_lookup_query, spec, sub), inner)
    if is_array(sub):
        _sub_pipelines(c, d, ns.partition(".")[0] if ns else db, sub, inner, depth + 1)


def _union_with(c: Checks, d: Decision, db: str, spec: Any, scope: Scope, depth: int) -> None:
    coll, sub = (spec, None) if isinstance(spec, str) else (name_field(spec, "coll"), spec.get("pipeline")) if is_mapping(spec) else (None, None)
    ns = _foreign_ns(db, coll)
    if ns is not None:
        _sub_query(d, ns, partial(_union_query, sub), scope)
    if is_array(sub):
        _sub_pipelines(c, d, ns.partition(".")[0] if ns else db, sub, scope, depth + 1)


def _output_targets(d: Decision, db: str, pipeline: Sequence[Any]) -> None:
    for stage in pipeline:
        if not is_mapping(stage):
            continue
        target = name_field(stage, "$out")
        merge = name_field(stage, "$merge")
        if merge is not None:
            target = name_field(merge, "into") if is_mapping(merge) else merge
        ns = _foreign_ns(db, target)
        if ns is not None:
            d.touch(ns)


# -- writes --------------------------------------------------------------------------


def insert(c: Checks, d: Decision, db: str, body: Mapping[str, Any], src: Source) -> None:
    cc = _collection(c, d, db, body)
    if cc is None or not cc.needs_documents:
        return  # the documents (maybe a lazy kind-1 sequence) are never read
    docs = c.statements(d, body, src, "documents", cc.namespace)
    doubtful: set[int] | None = None  # positions the C checker could not confirm; None: it did not look
    raw = getattr(docs, "raw", None)  # a scanned kind-1 run (wire.command.DocumentRun): its bytes
    if cc.schema is not None and cc.schema_mode != "off" and isinstance(raw, memoryview):
        unsure = cc.schema.unconfirmed(raw)
        doubtful = None if unsure is None else set(unsure)
    for i, doc in enumerate(docs):
        c.insert_doc(d, cc, doc, "documents", i, doubtful is not None and i not in doubtful)


def update(c: Checks, d: Decision, db: str, body: Mapping[str, Any], src: Source) -> None:
    cc = _collection(c, d, db, body)
    if cc is None:
        return
    for i, st in enumerate(c.statements(d, body, src, "updates", cc.namespace)):
        if not is_mapping(st):
            d.malformed(f"updates.{i} must be a document", cc.namespace)
        one = st.get("multi") is not True
        statement = Statement(st.get("q"), st.get("u"), st.get("upsert"), st.get("collation"), None, body.get("let"), one)
        c.write_statement(d, cc, statement, f"updates.{i}")


def delete(c: Checks, d: Decision, db: str, body: Mapping[str, Any], src: Source) -> None:
    cc = _collection(c, d, db, body)
    if cc is None:
        return
    for i, st in enumerate(c.statements(d, body, src, "deletes", cc.namespace)):
        if not is_mapping(st):
            d.malformed(f"deletes.{i} must be a document", cc.namespace)
        statement = Statement(st.get("q"), None, False, st.get("collation"), None, body.get("let"))
        c.write_statement(d, cc, statement, f"deletes.{i}")


def find_and_modify(c: Checks, d: Decision, db: str, body: Mapping[str, Any], _src: Source) -> None:
    cc = _collection(c, d, db, body)
    if cc is None:
        return
    remove = body.get("remove") is True
    update_doc = None if remove else body.get("update")
    statement = Statement(
        body.get("query"), update_doc, body.get("upsert"), body.get("collation"), body.get("sort"), body.get("let")
    )
    c.write_statement(d, cc, statement, "findAndModify")


def bulk_write(c: Checks, d: Decision, db: str, body: Mapping[str, Any], src: Source) -> None:
    """The 8.0 bulkWrite: each op checked against its nsInfo namespace."""
    namespaces: list[str] = []
    for j, entry in enumerate(c.statements(d, body, src, "nsInfo", None)):
        ns = name_field(entry, "ns") if is_mapping(entry) else None
        if not isinstance(ns, str) or "." not in ns:  # the namespaces themselves: always strict
            d.malformed(f"nsInfo.{j} must be a document with a \"db.collection\" ns")
        namespaces.append(ns)
    colls = [d.touch(ns) for ns in namespaces]
    if not c.governs(d):
        return  # every nsInfo namespace is undeclared: no op can reach a declared one
    for i, op in enumerate(c.statements(d, body, src, "ops", None)):
        kind = _first_key(op) if is_mapping(op) else ""
        index = op.get(kind) if kind else None
        if kind not in ("insert", "update", "delete"):
            d.malformed(f"ops.{i}: unknown bulkWrite operation {kind!r} (insert, update or delete)")
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(namespaces):
            d.malformed(f"ops.{i}: {kind} must be an index into nsInfo (0..{len(namespaces) - 1})")
        cc = colls[index]
        if cc is not None:
            _bulk_op(c, d, cc, kind, op, i, body.get("let"))


def _bulk_op(c: Checks, d: Decision, cc: Any, kind: str, op: Mapping[str, Any], i: int, let: Any) -> None:
    if kind == "insert":
        if cc.needs_documents:
            c.insert_doc(d, cc, op.get("document"), "ops", i)
        return
    update_doc = op.get("updateMods") if kind == "update" else None
    one = kind == "update" and op.get("multi") is not True
    statement = Statement(op.get("filter"), update_doc, op.get("upsert"), op.get("collation"), op.get("sort"), let, one)
    c.write_statement(d, cc, statement, f"ops.{i}")


# -- explain -------------------------------------------------------------------------


def explain(c: Checks, d: Decision, db: str, body: Mapping[str, Any], _src: Source) -> None:
    """Checked like the inner command (whose database is the explain's $db)."""
    inner = body.get("explain")
    if not is_mapping(inner) or not inner:
        return  # the server answers a malformed explain itself
    inner_name = canonical(_first_key(inner))
    d.commented.append(inner)
    handler = HANDLERS.get(inner_name) if inner_name in _EXPLAINABLE else None
    if handler is None:
        c.generic(d, inner_name, db, inner)
        return
    outer, d.command = d.command, inner_name
    try:
        handler(c, d, db, inner, None)  # an explain carries everything in its body
    finally:
        d.command = outer


HANDLERS: Final[dict[str, Handler]] = {
    "find": find,
    "count": count_or_distinct,
    "distinct": count_or_distinct,
    "aggregate": aggregate,
    "mapReduce": map_reduce,
    "insert": insert,
    "update": update,
    "delete": delete,
    "findAndModify": find_and_modify,
    "bulkWrite": bulk_write,
    "explain": explain,
}
