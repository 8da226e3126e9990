"""The fields a command's queries fix by equality: what the advisor takes as candidate keys.

A query fixes a field by equality when its top-level conjunction (``$and``
flattened) gives the field one value: a literal, ``$eq``, or a one-value
``$in``, the equalities mongos extracts a shard key from
(:mod:`scalyproxy.policy.targeting`). The candidates a query suggests are each
such field and the compound keys made of them in the order the query writes
them (every prefix of two or more). Pure.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final

from scalyproxy.config.model import ProxyConfig
from scalyproxy.policy.targeting import is_array, is_literal, is_mapping

Key = tuple[str, ...]
READS: Final = ("find", "aggregate", "count", "distinct")
WRITES: Final = ("update", "delete", "findAndModify", "bulkWrite")
_MAX_DEPTH: Final = 8
MAX_COMPOUND: Final = 3  # compound candidates of at most this many fields


def queries_of(command: str, body: Mapping[str, Any], sequences: Mapping[str, Sequence[Any]]) -> Iterator[Any]:
    """The filters of a read or write command on its own collection."""
    if command == "find":
        yield body.get("filter")
    elif command in ("count", "distinct", "findAndModify"):
        yield body.get("query")
    elif command == "aggregate":
        pipeline = body.get("pipeline")
        if is_array(pipeline) and pipeline and is_mapping(pipeline[0]) and "$match" in pipeline[0]:
            yield pipeline[0]["$match"]
    elif command in ("update", "delete"):
        field = "updates" if command == "update" else "deletes"
        statements = body.get(field)
        if statements is None:
            statements = sequences.get(field, ())
        for st in statements if is_array(statements) or isinstance(statements, Sequence) else ():
            if is_mapping(st):
                yield st.get("q")


def equality_paths(query: Any, depth: int = 0) -> list[str]:
    """The field paths the query's top-level conjunction fixes to one value, in its order."""
    out: list[str] = []
    if not is_mapping(query) or depth > _MAX_DEPTH:
        return out
    for name, value in query.items():
        if not isinstance(name, str):
            continue
        if name == "$and" and is_array(value):
            for sub in value:
                out += [p for p in equality_paths(sub, depth + 1) if p not in out]
        elif name == "$or" and is_array(value) and len(value) == 1:
            out += [p for p in equality_paths(value[0], depth + 1) if p not in out]
        elif not name.startswith("$") and _one_value(value) and name not in out:
            out.append(name)
    return out


def _one_value(value: Any) -> bool:
    if is_literal(value):  # a scalar or an embedded document without operators
        return True
    if not is_mapping(value):
        return False  # an array: no shard key can hold it
    if "$eq" in value:
        return not is_array(value["$eq"]) and not is_mapping(value["$eq"])
    args = value.get("$in")
    return is_array(args) and len(args) == 1 and not is_array(args[0])


def candidate_keys(paths: Sequence[str]) -> list[Key]:
    """Each field alone, then the compound prefixes (two to MAX_COMPOUND fields) in the query's order."""
    keys: list[Key] = [(p,) for p in paths]
    keys += [tuple(paths[:n]) for n in range(2, min(len(paths), MAX_COMPOUND) + 1)]
    return keys


def keys_of(command: str, body: Mapping[str, Any], sequences: Mapping[str, Sequence[Any]]) -> list[Key]:
    """The candidate keys a command's queries suggest (none for other commands)."""
    out: list[Key] = []
    for query in queries_of(command, body, sequences):
        for key in candidate_keys(equality_paths(query)):
            if key not in out:
                out.append(key)
    return out


def configured_keys(cfg: ProxyConfig) -> dict[str, list[Key]]:
    """The keys a config names per namespace: the shard key, each index, ``profile.candidates``."""
    out: dict[str, list[Key]] = {}
    for ns, coll in cfg.collections.items():
        for index in coll.indexes:
            if index.fields not in out.setdefault(ns, []):
                out[ns].append(index.fields)
    for ns, keys in cfg.profile.candidates.items():
        for key in keys:
            if key not in out.setdefault(ns, []):
                out[ns].append(key)
    return out
