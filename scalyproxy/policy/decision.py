"""The state of one decision and the checks shared by the command handlers.

Rules are checked in this order, and the first enforced violation refuses the
whole command (a batch with one bad statement is refused whole):
deny_commands, read_only, unknown_namespace, then per namespace and statement
shard_key_write, global_query, schema, pipeline_update, unindexed_query.
Findings of rules in ``warn`` mode are collected as warnings. Reading a part of
the command that the proxy and the server could read differently (a repeated
key, a string that is not UTF-8: ``wire.ambiguous.AmbiguousRead``) ends the
decision with a refusal (rule ``ambiguous``); a malformed part ends it with a
refusal only where the policy governs the command (:meth:`Checks.governs`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, NoReturn

from scalyproxy import codes
from scalyproxy.config.model import ProxyConfig
from scalyproxy.policy.commands import canonical, namespace_of
from scalyproxy.policy.compiled import CompiledCollection, get_path, has_path
from scalyproxy.policy.model import CommandLike, Finding, RuleName, Verdict
from scalyproxy.policy.shape import shape_of
from scalyproxy.policy.targeting import (
    exact_id,
    is_array,
    is_mapping,
    let_variables,
    nonsimple_collation,
    touches,
)
from scalyproxy.wire.ambiguous import name_field

_MAX_MARKER_DEPTH: Final = 8
_NO_NAMESPACE_CHECK: Final = frozenset({"getMore", "killCursors"})

Source = CommandLike | None  # where kind-1 sequences come from (None: nowhere)


def global_query_message(missing: Sequence[str]) -> str:
    """The errmsg of a global query, exactly as the original ScalyMongo wrote it."""
    return f"Some or all of the shard key was not specified.  Missing fields were {', '.join(missing)}."


class Stop(Exception):
    """Internal: an enforced violation ends the decision."""


class Decision:
    """The state of one decision: findings so far and the namespaces touched."""

    __slots__ = ("engine", "command", "commented", "refusal", "warnings", "namespaces", "marker_used", "_marker")

    def __init__(self, engine: Checks, command: str, commented: Mapping[str, Any]) -> None:
        self.engine = engine
        self.command = command
        #: the documents whose ``comment`` may carry the allow marker (the command, an
        #: explain's inner command): read only when a global query needs the marker
        self.commented: list[Mapping[str, Any]] = [commented]
        self.refusal: Finding | None = None
        self.warnings: list[Finding] = []
        self.namespaces: list[str] = []
        self.marker_used = False
        self._marker: bool | None = None

    def report(
        self, rule: RuleName, mode: str, code: int, message: str, ns: str | None, shape: str | None = None
    ) -> None:
        if mode == "off":
            return
        finding = Finding(rule, code, codes.CODE_NAMES[code], message, ns, self.command, shape)
        if mode == "enforce":
            self.refusal = finding
            raise Stop
        self.warnings.append(finding)

    def malformed(self, message: str, ns: str | None = None) -> NoReturn:
        self.report("malformed", "enforce", codes.UNSUPPORTED_OPERATION, message, ns)
        raise Stop  # report() already raised; this tells the type checker

    def malformed_unless_ungoverned(self, message: str, ns: str | None = None) -> NoReturn:
        """A part the check needs is malformed: refuse (``malformed``) when the policy
        governs the command, else stop here and forward it untouched, so that the
        server answers with its own error (see :meth:`Checks.governs`)."""
        if self.engine.governs(self):
            self.malformed(message, ns)
        raise Stop

    def ambiguous(self, exc: Exception) -> None:
        """The check read a part that the proxy and the server could read differently."""
        ns = self.namespaces[0] if self.namespaces else None
        code = codes.PROTOCOL_ERROR
        self.refusal = Finding("ambiguous", code, codes.CODE_NAMES[code], str(exc), ns, self.command, None)

    def touch(self, ns: str, check_unknown: bool = True) -> CompiledCollection | None:
        """Record a namespace; its compiled collection, or None (after the unknown-namespace rule)."""
        if ns not in self.namespaces:
            self.namespaces.append(ns)
        cc = self.engine._collections.get(ns)
        if cc is None and check_unknown:
            mode = self.engine._unknown_mode
            if mode != "allow":
                message = (
                    f"namespace {ns} is not declared in the proxy config "
                    f"(policy.unknown_namespaces is {mode}; declare it under collections:)"
                )
                self.report("unknown_namespace", "enforce" if mode == "deny" else "warn", codes.COMMAND_DENIED, message, ns)
        return cc

    def marker(self) -> bool:
        if self._marker is None:
            token = self.engine._marker
            self._marker = any(has_marker(doc.get("comment"), token, 0) for doc in self.commented)
        return self._marker

    def global_query(self, cc: CompiledCollection, missing: Sequence[str], query: Any) -> None:
        if self.marker():
            self.marker_used = True
            return
        self.report("global_query", cc.global_query, codes.GLOBAL_QUERY, global_query_message(missing), cc.namespace, shape_of(query))


def has_marker(value: Any, token: str, depth: int) -> bool:
    if isinstance(value, str):
        return token in value
    if depth >= _MAX_MARKER_DEPTH:
        return False
    if is_mapping(value):
        return any(has_marker(v, token, depth + 1) for v in value.values())
    if is_array(value):
        return any(has_marker(v, token, depth + 1) for v in value)
    return False


class Checks:
    """Compiled policy state and the checks every handler uses."""

    def __init__(self, cfg: ProxyConfig) -> None:
        self.config = cfg
        prefix = cfg.policy.targeting == "prefix"
        self._collections: dict[str, CompiledCollection] = {
            ns: CompiledCollection(c, prefix) for ns, c in cfg.collections.items()
        }
        self._dbs = frozenset(c.config.db for c in self._collections.values())
        self._marker = cfg.policy.allow_marker
        self._unknown_mode: str = cfg.policy.unknown_namespaces
        self._deny = frozenset(canonical(n) for n in cfg.policy.deny_commands)
        self._read_only = cfg.read_only

    # -- helpers used by the handlers ---------------------------------------------

    def governs(self, d: Decision) -> bool:
        """Whether the policy governs the command: it touches a declared namespace, or
        ``unknown_namespaces`` is not ``allow`` (a rule then applies to every namespace).
        A malformed part of an ungoverned command is the server's to answer."""
        return self._unknown_mode != "allow" or any(ns in self._collections for ns in d.namespaces)

    def namespace(self, d: Decision, db: str, body: Mapping[str, Any], key: str) -> str | None:
        """``db.<body[key]>``; a collection given by UUID or not at all cannot be checked."""
        coll = body.get(key) if body.__class__ is dict else name_field(body, key)  # once per command
        if isinstance(coll, str) and coll:
            return f"{db}.{coll}"
        if db in self._dbs or self._unknown_mode != "allow":
            d.malformed(f"{key} must name a collection by its name (got {type(coll).__name__}); the proxy cannot check it otherwise")
        return None

    def statements(self, d: Decision, body: Mapping[str, Any], src: Source, key: str, ns: str | None) -> Sequence[Any]:
        """Statements from the body or, when absent there, the kind-1 sequence of that name."""
        value = body.get(key)
        if value is None:
            value = src.sequences.get(key) if src is not None else None
        if value is None:
            return ()
        if not is_array(value) and not isinstance(value, Sequence) or isinstance(value, str | bytes):
            d.malformed(f"{key} must be an array of documents", ns)
        return value

    def read(
        self, d: Decision, cc: CompiledCollection, query: Any, collation: Any, sort: Any = None, let: Any = None
    ) -> None:
        """global_query and unindexed_query for one query of a declared namespace."""
        if query is not None and not is_mapping(query):
            d.malformed(f"the query on {cc.namespace} must be a document", cc.namespace)
        if cc.global_query != "off":
            self.targeted(d, cc, {} if query is None else query, collation, let)
        if cc.unindexed_query != "off":
            self._unindexed(d, cc, query, sort)

    @staticmethod
    def targeted(d: Decision, cc: CompiledCollection, query: Any, collation: Any, let: Any) -> None:
        """global_query: refuse (or warn) unless mongos would target ``query``."""
        assert cc.shard_key is not None
        nonsimple = nonsimple_collation(collation, cc.config.collation)
        missing = cc.shard_key.missing(query, nonsimple, let_variables(let) if let is not None else None)
        if missing:
            d.global_query(cc, missing, query)

    def _unindexed(self, d: Decision, cc: CompiledCollection, query: Any, sort: Any) -> None:
        if query is not None and not cc.indexes.serves_filter(query):
            fields = sorted(k for k in query if isinstance(k, str) and not k.startswith("$")) or ["$or/$and"]
            message = f"no declared index serves the filter on {', '.join(fields)} ({cc.namespace})"
            d.report("unindexed_query", cc.unindexed_query, codes.COMMAND_DENIED, message, cc.namespace, shape_of(query))
        elif sort is not None and not cc.indexes.serves_sort(sort, query):
            keys = ", ".join(str(k) for k in sort) if is_mapping(sort) else str(sort)
            message = f"no declared index serves the sort on {keys} ({cc.namespace})"
            d.report("unindexed_query", cc.unindexed_query, codes.COMMAND_DENIED, message, cc.namespace, shape_of(query or {}))

    def insert_doc(
        self, d: Decision, cc: CompiledCollection, doc: Any, field: str, index: int, schema_ok: bool = False
    ) -> None:
        """Shard key presence and schema of one inserted document (``field.index`` names it);
        ``schema_ok``: the C checker has already confirmed it matches the structure."""
        if cc.shard_key_write != "off":
            missing = cc.missing_key_fields(doc)
            if missing:
                where = f"{field}.{index}"
                message = f"{where}: missing shard key field(s) {', '.join(missing)} (every document of {cc.namespace} must contain the full shard key)"
                d.report("shard_key_write", cc.shard_key_write, codes.SHARD_KEY_VIOLATION, message, cc.namespace)
        if cc.schema_mode != "off" and not schema_ok:
            assert cc.schema is not None
            if not cc.schema.root.ok(doc):
                errors = cc.schema.document_errors(doc)
                if errors:
                    message = f"{'; '.join(errors)} ({cc.namespace} {field}.{index})"
                    d.report("schema", cc.schema_mode, codes.SCHEMA_VIOLATION, message, cc.namespace)

    def write_statement(
        self, d: Decision, cc: CompiledCollection, st: Statement, where: str
    ) -> None:
        """One update / delete / findAndModify statement of a declared namespace."""
        if cc.shard_key_write != "off":
            self._key_writes(d, cc, st, where)
        if cc.global_query != "off" and not _routed_by_replacement(cc, st):
            self.targeted(d, cc, st.query, st.collation, st.let)
        if st.update is not None:
            self._update_schema(d, cc, st, where)
        if cc.unindexed_query != "off":
            self._unindexed(d, cc, st.query, st.sort)

    def _key_writes(self, d: Decision, cc: CompiledCollection, st: Statement, where: str) -> None:
        key = cc.shard_key
        assert key is not None
        mode, ns = cc.shard_key_write, cc.namespace
        if st.upsert:
            missing = [p for p in key.paths if not key.equality_value(st.query, p)[0]]
            if missing:
                message = f"{where}: an upsert on {ns} must give the full shard key by equality in its filter.  Missing fields were {', '.join(missing)}."
                d.report("shard_key_write", mode, codes.SHARD_KEY_VIOLATION, message, ns, shape_of(st.query))
        if st.update is None:
            return
        problem = _key_change(cc, st.query, st.update)
        if problem:
            d.report("shard_key_write", mode, codes.SHARD_KEY_VIOLATION, f"{where}: {problem}", ns, shape_of(st.update))

    def _update_schema(self, d: Decision, cc: CompiledCollection, st: Statement, where: str) -> None:
        if cc.schema_mode == "off" or cc.schema is None:
            return
        update = st.update
        if is_array(update):
            message = f"{where}: a pipeline-style update on {cc.namespace} cannot be checked against the structure"
            d.report("pipeline_update", cc.pipeline_update, codes.SCHEMA_VIOLATION, message, cc.namespace, shape_of(update))
            return
        if not is_mapping(update):
            d.malformed(f"{where}: the update must be a document or a pipeline", cc.namespace)
            return
        first = next(iter(update), "")
        if isinstance(first, str) and first.startswith("$"):
            errors = cc.schema.updates.check(update)
        else:
            errors = cc.schema.document_errors(update)
        if errors:
            message = f"{'; '.join(errors)} ({cc.namespace} {where})"
            d.report("schema", cc.schema_mode, codes.SCHEMA_VIOLATION, message, cc.namespace, shape_of(update))

    def generic(self, d: Decision, command: str, db: str, body: Mapping[str, Any]) -> None:
        ns = namespace_of(command, db, body)
        check = command not in _NO_NAMESPACE_CHECK
        if ns is not None:
            d.touch(ns, check)
        for key in ("to", "toCollection"):
            target = name_field(body, key)
            if isinstance(target, str) and target:
                d.touch(target if command == "renameCollection" else f"{db}.{target}", check)


class Statement:
    """A query with its write parts, whatever command it came from.

    ``let``: the command's let variables; ``one``: an update statement that
    changes at most one document (an update or bulkWrite update op without
    ``multi: true``), which mongos may route by its replacement document.
    """

    __slots__ = ("query", "update", "upsert", "collation", "sort", "let", "one")

    def __init__(
        self,
        query: Any,
        update: Any = None,
        upsert: Any = False,
        collation: Any = None,
        sort: Any = None,
        let: Any = None,
        one: bool = False,
    ) -> None:
        self.query = query if query is not None else {}
        self.update = update
        self.upsert = upsert is True
        self.collation = collation
        self.sort = sort
        self.let = let
        self.one = one


def is_replacement(update: Any) -> bool:
    """A replacement document (not operators, not a pipeline); ``{}`` replaces too."""
    if not is_mapping(update):
        return False
    first = next(iter(update), "")
    return not (isinstance(first, str) and first.startswith("$"))


def _routed_by_replacement(cc: CompiledCollection, st: Statement) -> bool:
    """mongos routes a non-upsert replacement whose filter is an exact ``_id`` by the replacement's
    shard key, to one shard (CollectionRoutingInfoTargeter::targetUpdate)."""
    return st.one and not st.upsert and is_replacement(st.update) and exact_id(st.query, st.collation, cc.config.collation)


def _key_change(cc: CompiledCollection, query: Any, update: Any) -> str:
    """Why an update could change a shard-key field, or "" when it cannot."""
    key = cc.shard_key
    assert key is not None
    if is_array(update):
        return _pipeline_key_change(cc, update)
    if not is_mapping(update):
        return ""
    if not is_replacement(update):
        return _operator_key_change(cc, update)
    missing = [p for p in key.paths if not has_path(update, p)]
    if missing:
        return f"the replacement document lacks shard key field(s) {', '.join(missing)} of {cc.namespace}"
    for path in key.paths:
        found, expected = key.equality_value(query, path)
        _, value = get_path(update, path)
        if not found:
            return f"the replacement may change shard key field {path} of {cc.namespace}: the filter does not fix it to one value"
        if value != expected or type(value) is not type(expected) and not _both_numbers(value, expected):
            return f"the replacement changes shard key field {path} of {cc.namespace}"
    return ""


def _both_numbers(a: Any, b: Any) -> bool:
    return isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool) and not isinstance(b, bool)


def _operator_key_change(cc: CompiledCollection, update: Mapping[str, Any]) -> str:
    key = cc.shard_key
    assert key is not None
    for op, args in update.items():
        if op == "$setOnInsert" or not is_mapping(args):
            continue
        paths = list(args)
        if op == "$rename":
            paths += [v for v in args.values() if isinstance(v, str)]
        for path in paths:
            hit = [k for k in key.paths if isinstance(path, str) and touches(path, k)]
            if hit:
                return f"{op} of {path} would change shard key field(s) {', '.join(hit)} of {cc.namespace}"
    return ""


def _pipeline_key_change(cc: CompiledCollection, pipeline: Sequence[Any]) -> str:
    key = cc.shard_key
    assert key is not None
    for stage in pipeline:
        if not is_mapping(stage):
            continue
        for op, spec in stage.items():
            paths: list[str] = []
            if op in ("$set", "$addFields") and is_mapping(spec):
                paths = [p for p in spec if isinstance(p, str)]
            elif op == "$unset":
                paths = [spec] if isinstance(spec, str) else [p for p in spec if isinstance(p, str)] if is_array(spec) else []
            elif op == "$project" and is_mapping(spec):
                kept = _projection_keeps(spec, key.paths)
                if kept:
                    return f"$project in the update pipeline would change shard key field(s) {', '.join(kept)} of {cc.namespace}"
            elif op in ("$replaceRoot", "$replaceWith"):
                return f"{op} in the update pipeline may change the shard key of {cc.namespace}"
            hit = [k for k in key.paths for p in paths if touches(p, k)]
            if hit:
                return f"{op} of {', '.join(paths)} in the update pipeline would change shard key field(s) {', '.join(dict.fromkeys(hit))} of {cc.namespace}"
    return ""


def _projection_keeps(spec: Mapping[str, Any], key_paths: Sequence[str]) -> list[str]:
    """Shard-key fields a $project stage drops or recomputes."""
    inclusion = any(v in (1, True) for k, v in spec.items() if k != "_id" and not is_mapping(v))
    changed: list[str] = []
    for path in key_paths:
        entries = [(p, v) for p, v in spec.items() if isinstance(p, str) and touches(p, path)]
        exact = [v for p, v in entries if path == p or path.startswith(p + ".")]
        if inclusion:
            if not exact or any(v not in (1, True) for v in exact) or len(entries) != len(exact):
                changed.append(path)
        elif entries:
            changed.append(path)
    return changed


def internal_refusal(message: str, command: str) -> Verdict:
    finding = Finding(
        "malformed", codes.UNSUPPORTED_OPERATION, codes.CODE_NAMES[codes.UNSUPPORTED_OPERATION], message, None, command, None
    )
    return Verdict(finding, (), (), command, False)




#: for the advisor (scalyproxy.evidence.advisor), which observes the same checks
key_change = _key_change
routed_by_replacement = _routed_by_replacement
