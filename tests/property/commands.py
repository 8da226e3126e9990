"""Hypothesis strategies: configs and commands that exercise every rule of the engine.

Shared by the skeleton tests (faithfulness, shape ids, no values). Field names
come from one small pool, so that generated filters, documents and updates
meet the generated shard keys, indexes and structures often.
"""

from __future__ import annotations

from typing import Any

from bson import Int64
from hypothesis import strategies as st

from scalyproxy.config import ProxyConfig, load_config_text
from tests.unit.policy.strategies import scalar as scalar_values

MARK = "scaly:allow-global"
NAMESPACES = ("d.a", "d.b", "e.c")
FIELDS = ("a", "b", "c", "k", "x.y", "x", "_id")
LEAF_FIELDS = ("a", "b", "c", "k", "_id")
TYPES = ("int", "long", "string", "double", "number", "bool", "date", "any", "objectId", "int | null", "string?")
MODES = ("enforce", "warn", "off")

# -- configs ---------------------------------------------------------------------------


SCALAR_TYPES = ("int", "long", "string", "double", "number", "date", "objectId", "int | null", "string?")


@st.composite
def structure(draw: st.DrawFn, needed: list[str]) -> list[str]:
    """YAML lines of a structure with the ``needed`` fields (shard key, indexes) and a few more."""
    names = set(needed) | set(draw(st.lists(st.sampled_from(LEAF_FIELDS[:-1]), unique=True, min_size=1, max_size=3)))
    lines = ["    structure:"]
    for name in sorted(n for n in names if "." not in n):
        types = SCALAR_TYPES if name in needed else TYPES
        lines.append(f"      {name}: {draw(st.sampled_from(types))!r}")
    if "x.y" in names or draw(st.booleans()):
        lines.append("      x:")
        lines.append(f"        y: {draw(st.sampled_from(SCALAR_TYPES))!r}")
    if draw(st.booleans()):
        lines.append(f"      tags: [{draw(st.sampled_from(('string', 'int')))}]")
    lines.append(f"    additional_fields: {str(draw(st.booleans())).lower()}")
    return lines


@st.composite
def collection(draw: st.DrawFn, ns: str) -> list[str]:
    lines = [f"  {ns}:"]
    indexes, needed = [], []
    if draw(st.integers(0, 3)):
        key = draw(st.lists(st.sampled_from(("a", "b", "k", "x.y")), unique=True, min_size=1, max_size=2))
        hashed = draw(st.booleans()) and len(key) == 1
        fields = "{" + f"{key[0]}: hashed" + "}" if hashed else "[" + ", ".join(key) + "]"
        indexes.append(f"      - {{fields: {fields}, shard_key: true}}")
        needed += key
    for _ in range(draw(st.integers(0, 2))):
        fields = draw(st.lists(st.sampled_from(("a", "b", "c", "k")), unique=True, min_size=1, max_size=2))
        indexes.append(f"      - {{fields: [{', '.join(fields)}]}}")
        needed += fields
    if draw(st.integers(0, 2)):
        lines += draw(structure(needed))
    overrides = {r: draw(st.sampled_from(MODES)) for r in ("global_query", "schema", "unindexed_query")
                 if draw(st.integers(0, 2)) == 0}
    if overrides:
        lines.append("    rules: {" + ", ".join(f"{k}: {v}" for k, v in overrides.items()) + "}")
    if indexes:
        lines.append("    indexes:")
        lines += indexes
    if len(lines) == 1:
        lines.append("    indexes: []")
    return lines


@st.composite
def configs(draw: st.DrawFn) -> ProxyConfig:
    rules = ", ".join(f"{r}: {draw(st.sampled_from(MODES))}" for r in
                      ("global_query", "shard_key_write", "schema", "unindexed_query", "pipeline_update"))
    deny = draw(st.lists(st.sampled_from(("dropDatabase", "aggregate", "delete", "count")), unique=True, max_size=2))
    lines = [
        "policy:",
        f"  allow_marker: {MARK!r}",
        f"  unknown_namespaces: {draw(st.sampled_from(('allow', 'allow', 'allow', 'warn', 'deny')))}",
        f"  targeting: {draw(st.sampled_from(('full', 'prefix')))}",
        f"  rules: {{{rules}}}",
        f"  deny_commands: [{', '.join(deny)}]",
        f"read_only: {str(draw(st.integers(0, 5)) == 0).lower()}",
        "collections:",
    ]
    for ns in draw(st.lists(st.sampled_from(NAMESPACES), unique=True, min_size=2, max_size=3)):
        lines += draw(collection(ns))
    text = "\n".join(lines) + "\n"
    return load_config_text(text)


# -- commands ----------------------------------------------------------------------------

fields = st.sampled_from(FIELDS)
#: a few values, often equal or ordered against each other (the engine's bounds compare them)
small = st.sampled_from([1, 2, 3, 1.0, 2.5, Int64(2), Int64(3), "a", "b", "c", True, False, None, [1, 2], [2, 1], []])
scalar = st.one_of(small, small, scalar_values)
operator = st.one_of(
    st.builds(lambda v: {"$eq": v}, scalar),
    st.builds(lambda vs: {"$in": vs}, st.lists(scalar, max_size=3)),
    st.builds(lambda v: {"$gt": v}, scalar),
    st.builds(lambda v, w: {"$gte": v, "$lt": w}, scalar, scalar),
    st.builds(lambda v: {"$ne": v}, scalar),
    st.builds(lambda v: {"$exists": v}, st.booleans() | st.just(1)),
    st.builds(lambda v: {"$not": {"$gt": v}}, scalar),
    st.builds(lambda v: {"$elemMatch": {"$gt": v}}, scalar),
    st.builds(lambda v: {"$nin": [v, v]}, scalar),
    st.builds(lambda vs: {"$in": vs}, st.lists(small, min_size=1, max_size=4)),
    st.builds(lambda v, w: {"$gt": v, "$lte": w}, small, small),
    st.builds(lambda vs: {"$all": vs}, st.lists(small, min_size=1, max_size=2)),
)
values = st.recursive(
    scalar | operator,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(fields, children, max_size=3),
    max_leaves=6,
)
documents = st.dictionaries(fields, values, max_size=5)
plain_documents = st.dictionaries(fields, st.recursive(
    scalar, lambda c: st.lists(c, max_size=3) | st.dictionaries(fields, c, max_size=2), max_leaves=5), max_size=5)


@st.composite
def filters(draw: st.DrawFn, depth: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = draw(documents)
    if depth < 2 and draw(st.integers(0, 4)) == 0:
        out[draw(st.sampled_from(("$and", "$or", "$nor")))] = draw(st.lists(filters(depth + 1), max_size=3))
    if depth < 2 and draw(st.integers(0, 4)) == 0:  # the same path in several branches
        path = draw(fields)
        out[draw(st.sampled_from(("$and", "$or")))] = [{path: draw(values)} for _ in range(draw(st.integers(1, 3)))]
    if draw(st.integers(0, 6)) == 0:
        a, b = draw(fields), draw(fields)
        out["$expr"] = {"$eq": [f"${a}", f"${b}" if draw(st.booleans()) else draw(scalar)]}
    return out


@st.composite
def updates(draw: st.DrawFn, query: dict[str, Any]) -> Any:
    kind = draw(st.integers(0, 3))
    if kind == 0:  # operators
        ops: dict[str, Any] = {}
        for op in draw(st.lists(st.sampled_from(
                ("$set", "$unset", "$inc", "$rename", "$push", "$currentDate", "$min", "$pull", "$setOnInsert")),
                unique=True, min_size=1, max_size=3)):
            path = draw(fields)
            if op == "$rename":
                ops[op] = {path: draw(fields)}
            elif op == "$currentDate":
                ops[op] = {path: draw(st.sampled_from([True, {"$type": "timestamp"}, {"$type": "date"}]))}
            elif op == "$push":
                ops[op] = {path: draw(st.sampled_from([draw(scalar), {"$each": draw(st.lists(scalar, max_size=2))}]))}
            else:
                ops[op] = {path: draw(values)}
        return ops
    if kind == 1:  # a replacement, often keeping some of the filter's values
        doc = draw(plain_documents)
        for key, value in query.items():
            if not key.startswith("$") and draw(st.booleans()):
                doc[key] = value
        if draw(st.integers(0, 3)) == 0 and doc:
            doc[next(iter(doc))] = draw(st.booleans())
        return doc
    if kind == 2:  # a pipeline
        stages = draw(st.lists(st.sampled_from([
            {"$set": {draw(fields): "$a", "z": draw(scalar)}},
            {"$unset": draw(fields)},
            {"$unset": [draw(fields), "c"]},
            {"$project": {draw(fields): draw(st.sampled_from([0, 1, True, "$b", 2]))}},
            {"$replaceWith": {"a": "$b"}},
            {"$addFields": {"q": {"$literal": draw(scalar)}}},
        ]), min_size=1, max_size=3))
        return stages
    return draw(scalar)


@st.composite
def statement(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    query = draw(filters())
    st_: dict[str, Any] = {"q": query}
    if kind == "update":
        st_["u"] = draw(updates(query))
        if draw(st.booleans()):
            st_["upsert"] = draw(st.booleans())
        if draw(st.booleans()):
            st_["multi"] = draw(st.booleans())
    else:
        st_["limit"] = draw(st.sampled_from([0, 1]))
    if draw(st.integers(0, 4)) == 0:
        st_["collation"] = draw(st.sampled_from([{"locale": "fr", "strength": 2}, {"locale": "simple"}]))
    return st_


@st.composite
def stages(draw: st.DrawFn, depth: int = 0) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for _ in range(draw(st.integers(0, 3))):
        choice = draw(st.integers(0, 9 if depth < 1 else 4))
        coll = draw(st.sampled_from(("a", "b", "c", "zz")))
        if choice == 0:
            out.append({"$match": draw(filters())})
        elif choice == 1:
            out.append({"$sort": {draw(fields): draw(st.sampled_from([1, -1]))}})
        elif choice == 2:
            out.append({"$project": {draw(fields): draw(st.sampled_from([0, 1]))}})
        elif choice == 3:
            out.append({"$group": {"_id": "$a", "n": {"$sum": draw(scalar)}}})
        elif choice == 4:
            out.append({"$limit": draw(st.integers(1, 100))})
        elif choice == 5:
            spec: dict[str, Any] = {"from": coll, "as": "j"}
            if draw(st.booleans()):
                spec.update(localField="a", foreignField=draw(fields))
            else:
                spec["pipeline"] = draw(stages(depth + 1))
            out.append({"$lookup": spec})
        elif choice == 6:
            out.append({"$unionWith": coll if draw(st.booleans()) else {"coll": coll, "pipeline": draw(stages(depth + 1))}})
        elif choice == 7:
            out.append({"$facet": {"f": draw(stages(depth + 1))}})
        elif choice == 8:
            out.append({"$graphLookup": {"from": coll, "startWith": "$a", "connectFromField": "a",
                                         "connectToField": draw(fields), "as": "g",
                                         "restrictSearchWithMatch": draw(filters())}})
        else:
            out.append(draw(st.sampled_from([{"$out": coll}, {"$merge": {"into": coll}}, {"$merge": coll}])))
    return out


@st.composite
def bodies(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A command body and its kind-1 sequences."""
    ns = draw(st.sampled_from((*NAMESPACES, "d.zz")))
    db, _, coll = ns.partition(".")
    name = draw(st.sampled_from(("find", "find", "insert", "insert", "update", "delete", "findAndModify",
                                 "aggregate", "count", "distinct", "bulkWrite", "explain", "getMore", "drop",
                                 "findandmodify")))
    sequences: dict[str, list[Any]] = {}
    body: dict[str, Any] = {}
    if name == "find":
        body = {"find": coll, "filter": draw(filters())}
        if draw(st.booleans()):
            body["sort"] = {draw(fields): draw(st.sampled_from([1, -1]))}
        if draw(st.integers(0, 3)) == 0:
            body["limit"] = draw(st.integers(0, 10))
    elif name == "insert":
        docs = draw(st.lists(plain_documents | documents, max_size=4))
        if draw(st.booleans()) and docs:
            docs = docs * draw(st.integers(1, 3))
        if draw(st.booleans()):
            sequences["documents"] = docs
            body = {"insert": coll}
        else:
            body = {"insert": coll, "documents": docs}
    elif name in ("update", "delete"):
        key = "updates" if name == "update" else "deletes"
        stmts = draw(st.lists(statement(name), min_size=1, max_size=3))
        if draw(st.booleans()):
            sequences[key] = stmts
            body = {name: coll}
        else:
            body = {name: coll, key: stmts}
    elif name in ("findAndModify", "findandmodify"):
        query = draw(filters())
        body = {name: coll, "query": query}
        if draw(st.integers(0, 3)) == 0:
            body["remove"] = True
        else:
            body["update"] = draw(updates(query))
        if draw(st.booleans()):
            body["upsert"] = draw(st.booleans())
        if draw(st.booleans()):
            body["sort"] = {draw(fields): 1}
    elif name == "aggregate":
        body = {"aggregate": coll if draw(st.integers(0, 4)) else 1, "pipeline": draw(stages()), "cursor": {}}
    elif name in ("count", "distinct"):
        body = {name: coll, "query": draw(filters())}
        if name == "distinct":
            body["key"] = draw(fields)
    elif name == "bulkWrite":
        ops = []
        for _ in range(draw(st.integers(1, 3))):
            kind = draw(st.sampled_from(("insert", "update", "delete")))
            index = draw(st.integers(0, 2))
            if kind == "insert":
                ops.append({"insert": index, "document": draw(plain_documents)})
            else:
                flt = draw(filters())
                op: dict[str, Any] = {kind: index, "filter": flt}
                if kind == "update":
                    op["updateMods"] = draw(updates(flt))
                    op["upsert"] = draw(st.booleans())
                ops.append(op)
        body = {"bulkWrite": 1, "ops": ops, "nsInfo": [{"ns": n} for n in draw(st.lists(
            st.sampled_from(NAMESPACES), min_size=1, max_size=2))]}
        db = "admin"
    elif name == "explain":
        body = {"explain": {"find": coll, "filter": draw(filters())}, "verbosity": "queryPlanner"}
        if draw(st.booleans()):
            body["explain"]["comment"] = MARK
    elif name == "getMore":
        body = {"getMore": Int64(draw(st.integers(1, 2**40))), "collection": coll}
    else:
        body = {"drop": coll}
    for key, value in (
        ("collation", st.sampled_from([{"locale": "simple"}, {"locale": "fr", "strength": 1}])),
        ("comment", st.sampled_from([MARK, "just a comment", f"x {MARK} y", {"tag": MARK}, ["a", MARK], 5])),
        ("hint", st.sampled_from(["a_1", {"a": 1}])),
        ("lsid", st.just({"id": 5})),
        ("maxTimeMS", st.integers(1, 100)),
    ):
        if draw(st.integers(0, 3)) == 0:
            body[key] = draw(value)
    body["$db"] = db
    return body, sequences
