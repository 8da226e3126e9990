"""Modes (enforce / warn / off), unknown namespaces, deny_commands, read_only, unindexed
queries, bulkWrite, robustness, and the purity of the policy package."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scalyproxy.policy import Command, Engine

from .conftest import merged, run

KEY = {"author": "a", "title": "t"}
UNTARGETED = {"find": "blog_posts", "filter": {"author": "a"}, "$db": "blog"}
BAD_INSERT = {"insert": "blog_posts", "documents": [{**KEY, "unique_views": "x"}], "$db": "blog"}
NO_KEY_INSERT = {"insert": "blog_posts", "documents": [{"author": "a"}], "$db": "blog"}


@pytest.mark.parametrize(
    ("rule", "body"),
    [("global_query", UNTARGETED), ("schema", BAD_INSERT), ("shard_key_write", NO_KEY_INSERT)],
)
@pytest.mark.parametrize("mode", ["enforce", "warn", "off"])
def test_rule_modes(rule: str, body: dict[str, Any], mode: str) -> None:
    rules = {rule: mode}
    if rule == "shard_key_write":
        rules["schema"] = "off"  # the missing title is also a missing required field
    verdict = run(Engine.from_config(merged(rules=rules)), body)
    if mode == "enforce":
        assert verdict.refusal is not None and verdict.refusal.rule == rule
    else:
        assert verdict.allowed, verdict.refusal
        assert [w.rule for w in verdict.warnings] == ([rule] if mode == "warn" else [])


def test_warn_collects_every_finding() -> None:
    engine = Engine.from_config(merged(rules={"global_query": "warn", "schema": "warn", "shard_key_write": "warn"}))
    body = {"update": "blog_posts", "updates": [{"q": {"author": "a"}, "u": {"$set": {"title": "x", "unique_views": "y"}}}], "$db": "blog"}
    verdict = run(engine, body)
    assert verdict.allowed
    assert sorted(w.rule for w in verdict.warnings) == ["global_query", "schema", "shard_key_write"]


def test_per_collection_rules_override_policy() -> None:
    engine = Engine.from_config(merged(blog_rules="{global_query: off, unindexed_query: off}"))
    assert run(engine, UNTARGETED).allowed
    users = run(engine, {"find": "users", "filter": {}, "$db": "shop"})
    assert users.refusal is not None and users.refusal.rule == "global_query"


@pytest.mark.parametrize(
    ("mode", "allowed", "warned"), [("allow", True, False), ("warn", True, True), ("deny", False, False)]
)
def test_unknown_namespaces(mode: str, allowed: bool, warned: bool) -> None:
    engine = Engine.from_config(merged(unknown=mode))
    verdict = run(engine, {"find": "nope", "filter": {}, "$db": "shop"})
    assert verdict.allowed is allowed
    assert [w.rule for w in verdict.warnings] == (["unknown_namespace"] if warned else [])
    if not allowed:
        assert verdict.refusal is not None
        assert verdict.refusal.rule == "unknown_namespace" and verdict.refusal.code_name == "ScalyCommandDenied"
        assert "shop.nope" in verdict.refusal.message
    assert run(engine, {"find": "blog_posts", "filter": KEY, "$db": "blog"}).allowed
    assert run(engine, {"ping": 1, "$db": "admin"}).allowed
    assert run(engine, {"getMore": 1, "collection": "nope", "$db": "shop"}).allowed


def test_unknown_namespace_in_sub_pipeline_and_bulk_write() -> None:
    engine = Engine.from_config(merged(unknown="deny"))
    lookup = {"aggregate": "blog_posts", "pipeline": [{"$match": KEY}, {"$lookup": {"from": "nope", "localField": "a", "foreignField": "b", "as": "c"}}], "$db": "blog"}
    refusal = run(engine, lookup).refusal
    assert refusal is not None and refusal.namespace == "blog.nope"
    bulk = {"bulkWrite": 1, "ops": [{"insert": 0, "document": {}}], "nsInfo": [{"ns": "x.y"}], "$db": "admin"}
    refusal = run(engine, bulk).refusal
    assert refusal is not None and refusal.rule == "unknown_namespace"


@pytest.mark.parametrize(
    ("deny", "body", "allowed"),
    [
        ("[dropDatabase]", {"dropDatabase": 1, "$db": "blog"}, False),
        ("[dropDatabase]", {"drop": "blog_posts", "$db": "blog"}, True),
        ("[dropIndexes]", {"deleteIndexes": "blog_posts", "index": "*", "$db": "blog"}, False),
        ("[deleteIndexes]", {"dropIndexes": "blog_posts", "index": "*", "$db": "blog"}, False),
        ("[findandmodify]", {"findAndModify": "blog_posts", "query": KEY, "remove": True, "$db": "blog"}, False),
        ("[mapReduce]", {"mapreduce": "blog_posts", "map": "", "reduce": "", "$db": "blog"}, False),
    ],
)
def test_deny_commands(deny: str, body: dict[str, Any], allowed: bool) -> None:
    verdict = run(Engine.from_config(merged(deny=deny)), body)
    assert verdict.allowed is allowed
    if not allowed:
        assert verdict.refusal is not None
        assert verdict.refusal.rule == "deny_commands" and verdict.refusal.code == 29004


READ_ONLY: list[tuple[dict[str, Any], bool]] = [
    ({"find": "blog_posts", "filter": KEY, "$db": "blog"}, True),
    ({"insert": "blog_posts", "documents": [KEY], "$db": "blog"}, False),
    ({"insert": "anything", "$db": "x"}, False),
    ({"update": "blog_posts", "updates": [{"q": KEY, "u": {"$set": {"body": "x"}}}], "$db": "blog"}, False),
    ({"delete": "blog_posts", "deletes": [{"q": KEY, "limit": 1}], "$db": "blog"}, False),
    ({"findAndModify": "blog_posts", "query": KEY, "remove": True, "$db": "blog"}, False),
    ({"findandmodify": "blog_posts", "query": KEY, "update": {"$set": {"body": "x"}}, "$db": "blog"}, False),
    ({"bulkWrite": 1, "ops": [], "nsInfo": [], "$db": "admin"}, False),
    ({"aggregate": "blog_posts", "pipeline": [{"$match": KEY}, {"$out": "copy"}], "$db": "blog"}, False),
    ({"aggregate": "blog_posts", "pipeline": [{"$match": KEY}, {"$merge": {"into": "copy"}}], "$db": "blog"}, False),
    ({"aggregate": "blog_posts", "pipeline": [{"$match": KEY}], "$db": "blog"}, True),
    ({"mapReduce": "blog_posts", "map": "", "reduce": "", "out": "x", "query": KEY, "$db": "blog"}, False),
    ({"mapReduce": "blog_posts", "map": "", "reduce": "", "out": {"inline": 1}, "query": KEY, "$db": "blog"}, True),
    ({"create": "new", "$db": "blog"}, False),
    ({"drop": "blog_posts", "$db": "blog"}, False),
    ({"dropDatabase": 1, "$db": "blog"}, False),
    ({"createIndexes": "blog_posts", "indexes": [], "$db": "blog"}, False),
    ({"deleteIndexes": "blog_posts", "index": "*", "$db": "blog"}, False),
    ({"renameCollection": "blog.a", "to": "blog.b", "$db": "admin"}, False),
    ({"explain": {"update": "blog_posts", "updates": [{"q": KEY, "u": {"$set": {"body": "x"}}}]}, "$db": "blog"}, True),
    ({"listCollections": 1, "$db": "blog"}, True),
    ({"hello": 1, "$db": "admin"}, True),
]


@pytest.mark.parametrize(("body", "allowed"), READ_ONLY, ids=[f"{next(iter(b))}-{i}" for i, (b, _) in enumerate(READ_ONLY)])
def test_read_only(body: dict[str, Any], allowed: bool) -> None:
    verdict = run(Engine.from_config(merged(read_only=True)), body)
    assert verdict.allowed is allowed, verdict.refusal
    if not allowed:
        assert verdict.refusal is not None
        assert verdict.refusal.rule == "read_only" and verdict.refusal.code_name == "ScalyCommandDenied"


UNINDEXED: list[tuple[str, dict[str, Any], bool]] = [
    ("filter on an indexed field", {"find": "logs", "filter": {"level": "x"}}, False),
    ("filter on an unindexed field", {"find": "logs", "filter": {"msg": "x"}}, True),
    ("filter on _id", {"find": "logs", "filter": {"_id": 1}}, False),
    ("$or with an unindexed branch", {"find": "logs", "filter": {"$or": [{"level": "x"}, {"msg": "y"}]}}, True),
    ("$or served in each branch", {"find": "logs", "filter": {"$or": [{"level": "x"}, {"_id": 2}]}}, False),
    ("negation only", {"find": "logs", "filter": {"level": {"$ne": "x"}}}, True),
    ("sort served", {"find": "logs", "filter": {"level": "x"}, "sort": {"level": -1}}, False),
    ("sort unserved", {"find": "logs", "filter": {"level": "x"}, "sort": {"msg": 1}}, True),
    ("sort after equality prefix", {"find": "orders", "filter": {"customer.region": "eu", "customer.id": 1, "created": {"$gt": 1}}, "sort": {"total": 1}}, True),
    ("compound sort reversed", {"find": "orders", "filter": {"customer.region": "eu", "customer.id": 1}, "sort": {"created": 1, "total": -1}}, False),
    ("compound sort mixed", {"find": "orders", "filter": {"customer.region": "eu", "customer.id": 1}, "sort": {"created": 1, "total": 1}}, True),
    ("range on hashed index", {"find": "users", "filter": {"email": {"$gt": "a"}}, "comment": "scaly:allow-global"}, True),
    ("update statement", {"update": "logs", "updates": [{"q": {"msg": "x"}, "u": {"$set": {"level": "y"}}}]}, True),
]


@pytest.mark.parametrize(("body", "warned"), [c[1:] for c in UNINDEXED], ids=[c[0] for c in UNINDEXED])
def test_unindexed_query(engine: Engine, body: dict[str, Any], warned: bool) -> None:
    verdict = run(engine, {**body, "$db": "shop"})
    assert verdict.allowed, verdict.refusal
    assert [w.rule for w in verdict.warnings] == (["unindexed_query"] if warned else [])
    if warned:
        assert verdict.warnings[0].shape is not None and "\"x\"" not in verdict.warnings[0].shape


def test_unindexed_query_off_and_enforce(blog_engine: Engine) -> None:
    body = {"find": "blog_posts", "filter": {**KEY, "body": "x"}, "sort": {"unique_views": 1}, "$db": "blog"}
    assert run(blog_engine, body).warnings == ()  # rules: {unindexed_query: off} on blog_posts
    enforced = Engine.from_config(merged(rules={"unindexed_query": "enforce"}))
    verdict = run(enforced, {"find": "logs", "filter": {"msg": "x"}, "$db": "shop"})
    assert verdict.refusal is not None and verdict.refusal.rule == "unindexed_query"


def bulk(ops: list[dict[str, Any]], ns_info: list[str], in_body: bool = True, **extra: Any) -> tuple[dict[str, Any], Any]:
    infos = [{"ns": ns} for ns in ns_info]
    if in_body:
        return {"bulkWrite": 1, "ops": ops, "nsInfo": infos, "errorsOnly": True, **extra, "$db": "admin"}, None
    return {"bulkWrite": 1, "errorsOnly": True, **extra, "$db": "admin"}, {"ops": ops, "nsInfo": infos}


POST = {**KEY, "body": "b"}
BULK: list[tuple[str, list[dict[str, Any]], str | None]] = [
    ("all fine", [{"insert": 0, "document": POST}, {"update": 0, "filter": KEY, "updateMods": {"$set": {"body": "x"}}}, {"delete": 1, "filter": {"msg": "x"}, "multi": True}], None),
    ("untargeted update", [{"insert": 0, "document": POST}, {"update": 0, "filter": {"author": "a"}, "updateMods": {"$set": {"body": "x"}}, "multi": True}], "global_query"),
    ("untargeted deleteOne", [{"delete": 0, "filter": {"title": "t"}}], "global_query"),
    ("bad inserted document", [{"insert": 1, "document": {"msg": "x"}}, {"insert": 0, "document": {**KEY, "rank": 1}}], "schema"),
    ("insert without key", [{"insert": 0, "document": {"author": "a"}}], "shard_key_write"),
    ("upsert without key", [{"update": 0, "filter": {"author": "a"}, "updateMods": {"$set": {"body": "x"}}, "upsert": True}], "shard_key_write"),
    ("key change", [{"update": 0, "filter": KEY, "updateMods": {"$set": {"title": "x"}}}], "shard_key_write"),
    ("bad update operator value", [{"update": 0, "filter": KEY, "updateMods": {"$set": {"unique_views": "x"}}}], "schema"),
    ("index out of range", [{"insert": 2, "document": {}}], "malformed"),
    ("unknown op", [{"replace": 0, "filter": {}}], "malformed"),
]


@pytest.mark.parametrize("in_body", [True, False], ids=["body", "sequences"])
@pytest.mark.parametrize(("ops", "rule"), [c[1:] for c in BULK], ids=[c[0] for c in BULK])
def test_bulk_write(engine: Engine, ops: list[dict[str, Any]], rule: str | None, in_body: bool) -> None:
    body, seqs = bulk(ops, ["blog.blog_posts", "blog.logs"], in_body)
    verdict = run(engine, body, seqs)
    assert verdict.namespaces == ("blog.blog_posts", "blog.logs")
    if rule is None:
        assert verdict.allowed, verdict.refusal
    else:
        assert verdict.refusal is not None and verdict.refusal.rule == rule, verdict.refusal


def test_bulk_write_marker_and_op_index(engine: Engine) -> None:
    ops = [{"insert": 0, "document": POST}, {"update": 0, "filter": {}, "updateMods": {"$set": {"body": "x"}}, "multi": True}]
    body, _ = bulk(ops, ["blog.blog_posts"], comment="scaly:allow-global")
    assert run(engine, body).allowed
    bad = [{"insert": 0, "document": POST}, {"insert": 0, "document": {**KEY, "unique_views": "x"}}]
    refusal = run(engine, bulk(bad, ["blog.blog_posts"])[0]).refusal
    assert refusal is not None and "ops.1" in refusal.message


def test_collection_lookup_and_validate_document(engine: Engine) -> None:
    compiled = engine.collection("blog.blog_posts")
    assert compiled is not None and compiled.shard_key is not None
    assert compiled.shard_key.paths == ("author", "title")
    assert engine.collection("blog.nope") is None
    assert engine.validate_document("blog.blog_posts", {**KEY, "comments": [{"rank": "x"}]}) == [
        "comments.0.rank: expected int, got string"
    ]
    assert engine.validate_document("blog.blog_posts", {"author": "a"}) == ["title: required field missing"]
    assert engine.validate_document("blog.nope", {"anything": 1}) == []
    assert engine.validate_document("shop.plain", {"region": 1}) == ["day: required field missing (shard key)"]


def test_allow_all() -> None:
    verdict = Engine.ALLOW_ALL.decide(Command.from_body({"insert": "c", "documents": [1], "$db": "d"}))
    assert verdict.allowed and verdict.namespaces == ("d.c",) and verdict.command == "insert"
    assert Engine.ALLOW_ALL.decide(Command.from_body({"dropDatabase": 1, "$db": "d"})).allowed


MALFORMED: list[dict[str, Any]] = [
    {"find": 7, "filter": {}, "$db": "blog"},
    {"find": "blog_posts", "filter": 3, "$db": "blog"},
    {"update": "blog_posts", "updates": [1], "$db": "blog"},
    {"update": "blog_posts", "updates": "x", "$db": "blog"},
    {"aggregate": "blog_posts", "pipeline": {"$match": {}}, "$db": "blog"},
    {"bulkWrite": 1, "ops": [{"insert": "0", "document": {}}], "nsInfo": [{"ns": "blog.blog_posts"}], "$db": "admin"},
    {"bulkWrite": 1, "ops": [], "nsInfo": [{"ns": 3}], "$db": "admin"},
]


@pytest.mark.parametrize("body", MALFORMED, ids=[str(i) for i in range(len(MALFORMED))])
def test_malformed_commands_are_refused(engine: Engine, body: dict[str, Any]) -> None:
    verdict = run(engine, body)
    assert verdict.refusal is not None and verdict.refusal.rule == "malformed"
    assert verdict.refusal.code_name == "ScalyUnsupportedOperation"


def test_command_from_body() -> None:
    cmd = Command.from_body({"find": "c", "$db": "d"})
    assert (cmd.name, cmd.db) == ("find", "d")
    assert Command.from_body({"ping": 1}, db="admin").db == "admin"
    with pytest.raises(ValueError, match=r"\$db"):
        Command.from_body({"ping": 1})
    with pytest.raises(ValueError, match="empty"):
        Command.from_body({})


_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["$in", "$eq", "$or", "$and", "author", "title", "q", "u", "$set", "x", "0"]), inner, max_size=3),
    max_leaves=12,
)
_bodies = st.fixed_dictionaries(
    {
        "cmd": st.sampled_from(["find", "insert", "update", "delete", "aggregate", "findAndModify", "count", "bulkWrite", "explain", "distinct"]),
        "target": st.sampled_from(["blog_posts", "orders", 1, None]),
        "rest": st.dictionaries(st.sampled_from(["filter", "query", "documents", "updates", "deletes", "pipeline", "update", "ops", "nsInfo", "explain", "comment", "collation", "sort", "upsert"]), _values, max_size=4),
    }
)


_FUZZ_ENGINE = Engine.from_config(merged(unknown="warn"))


@settings(max_examples=300, deadline=None)
@given(_bodies)
def test_decide_never_raises(raw: dict[str, Any]) -> None:
    engine = _FUZZ_ENGINE
    body = {raw["cmd"]: raw["target"], **raw["rest"], "$db": "blog"}
    verdict = engine.decide(Command(raw["cmd"], "blog", body))
    assert verdict.command


def test_policy_and_config_import_no_io_modules() -> None:
    root = Path(__file__).resolve().parents[3] / "scalyproxy"
    banned = {"asyncio", "socket", "ssl", "selectors", "uvloop"}
    for folder in ("policy", "config"):
        for path in (root / folder).glob("*.py"):
            tree = ast.parse(path.read_text())
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                for name in names:
                    assert name.split(".")[0] not in banned, f"{path.name} imports {name}"


def test_importing_policy_loads_no_io_modules() -> None:
    import subprocess
    import sys

    code = "import sys, scalyproxy.policy, scalyproxy.config; print(sorted(m for m in ('asyncio', 'socket') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"
