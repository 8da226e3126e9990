"""Strict where the verdict reads (issue 15, section 2), decided by the engine on views
the codec builds from raw bytes: a repeated key (or a string that is not UTF-8) in a
part a rule reads for a declared namespace is refused as ScalyProtocolError; the
same part of a command on an undeclared namespace is never read, and forwarded.

config/blog.yaml: blog.blog_posts is declared (shard key author, title; a schema);
blog.other is not, and unknown_namespaces is allow.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from scalyproxy._scan import fast_decide
from scalyproxy.policy import Engine, Verdict
from scalyproxy.wire import ProtocolError, command_view, make_frame
from tests.rawbson import Doc, arr, bad, doc, op_msg

DECLARED, UNDECLARED = "blog_posts", "other"
DB = ("$db", "blog")
TARGETED = doc(("author", "a"), ("title", "t"))
GLOBAL = doc(("author", "a"))
#: a filter giving the whole shard key, with the title repeated (the server reads two conditions)
TWICE = doc(("author", "a"), ("title", "t"), ("title", doc(("$ne", "t"))))
POST = doc(("author", "a"), ("title", "t"), ("body", "b"))


def decide(engine: Engine, message: bytes) -> Verdict:
    return engine.decide(command_view(make_frame(message)))


Build = Callable[[str], bytes]


def _agg(coll: str, *stages: Doc) -> bytes:
    return op_msg(doc(("aggregate", coll), ("pipeline", arr(*stages)), ("cursor", doc()), DB))


#: Each builds a message for a collection; the repeat is in a part the verdict reads
#: when that collection is declared (and only then).
READ_WHEN_DECLARED: dict[str, Build] = {
    "find filter": lambda c: op_msg(doc(("find", c), ("filter", TWICE), DB)),
    "count query": lambda c: op_msg(doc(("count", c), ("query", TWICE), DB)),
    "distinct query": lambda c: op_msg(doc(("distinct", c), ("key", "x"), ("query", TWICE), DB)),
    "update q": lambda c: op_msg(doc(("update", c), ("updates", arr(doc(("q", TWICE), ("u", doc(("$set", doc(("body", "x")))))))), DB)),
    "update u, two $set (issue 15)": lambda c: op_msg(
        doc(("update", c), ("updates", arr(doc(("q", TARGETED), ("u", doc(("$set", doc(("body", "x"))), ("$set", doc(("views", 1)))))))), DB)
    ),
    "update u, a field twice in $set (issue 15)": lambda c: op_msg(
        doc(("update", c), ("updates", arr(doc(("q", TARGETED), ("u", doc(("$set", doc(("body", "x"), ("body", "y")))))))), DB)
    ),
    "update replacement": lambda c: op_msg(
        doc(("update", c), ("updates", arr(doc(("q", TARGETED), ("u", doc(("author", "a"), ("title", "t"), ("body", "1"), ("body", "2")))))), DB)
    ),
    "update in a kind-1 sequence": lambda c: op_msg(
        doc(("update", c), DB), updates=[doc(("q", TWICE), ("u", doc(("$set", doc(("body", "x"))))))]
    ),
    "delete q": lambda c: op_msg(doc(("delete", c), ("deletes", arr(doc(("q", TWICE), ("limit", 1)))), DB)),
    "findAndModify query": lambda c: op_msg(doc(("findAndModify", c), ("query", TWICE), ("remove", True), DB)),
    "findAndModify update": lambda c: op_msg(
        doc(("findAndModify", c), ("query", TARGETED), ("update", doc(("$set", doc(("body", "x"), ("body", "y"))))), DB)
    ),
    "insert, two _id (issue 15)": lambda c: op_msg(doc(("insert", c), ("documents", arr(doc(("_id", 1), ("_id", 2), ("author", "a"), ("title", "t")))), DB)),
    "insert in a kind-1 sequence": lambda c: op_msg(doc(("insert", c), DB), documents=[POST, doc(("_id", 1), ("_id", 2), ("author", "a"), ("title", "t"))]),
    "insert, a string that is not UTF-8": lambda c: op_msg(doc(("insert", c), DB), documents=[doc(("author", "a"), ("title", bad(b"t\xff")))]),
    "aggregate first $match": lambda c: _agg(c, doc(("$match", TWICE))),
    "$lookup sub-pipeline $match": lambda c: _agg(
        UNDECLARED, doc(("$lookup", doc(("from", c), ("pipeline", arr(doc(("$match", TWICE)))), ("as", "x"))))
    ),
    "$lookup foreignField": lambda c: _agg(
        UNDECLARED, doc(("$lookup", doc(("from", c), ("localField", "a"), ("foreignField", "author"), ("foreignField", "title"), ("as", "x"))))
    ),
    "$unionWith sub-pipeline $match": lambda c: _agg(UNDECLARED, doc(("$unionWith", doc(("coll", c), ("pipeline", arr(doc(("$match", TWICE)))))))),
    "$graphLookup restrictSearchWithMatch": lambda c: _agg(
        UNDECLARED,
        doc(("$graphLookup", doc(("from", c), ("startWith", "$x"), ("connectFromField", "a"), ("connectToField", "author"), ("restrictSearchWithMatch", TWICE), ("as", "x")))),
    ),
    "comment read for the marker": lambda c: op_msg(
        doc(("find", c), ("filter", GLOBAL), ("comment", doc(("why", "scaly:allow-global"), ("why", "x"))), DB)
    ),
    "comment twice, read for the marker": lambda c: op_msg(doc(("find", c), ("filter", GLOBAL), ("comment", "scaly:allow-global"), ("comment", "x"), DB)),
    "explain's inner filter": lambda c: op_msg(doc(("explain", doc(("find", c), ("filter", TWICE))), DB)),
    "bulkWrite ops": lambda c: op_msg(
        doc(("bulkWrite", 1), ("ops", arr(doc(("update", 0), ("filter", TWICE), ("updateMods", doc(("$set", doc(("body", "x")))))))), ("nsInfo", arr(doc(("ns", f"blog.{c}")))), ("$db", "admin"))
    ),
}

#: Namespace fields, the name and the pipeline stages the walk reads: strict wherever.
ALWAYS_STRICT: dict[str, bytes] = {
    "$lookup from twice": _agg(UNDECLARED, doc(("$lookup", doc(("from", "x"), ("from", DECLARED), ("pipeline", arr()), ("as", "x"))))),
    "$unionWith coll twice": _agg(UNDECLARED, doc(("$unionWith", doc(("coll", "x"), ("coll", DECLARED))))),
    "a stage with two keys": _agg(UNDECLARED, doc(("$match", doc()), ("$unionWith", "x"), ("$unionWith", DECLARED))),
    "pipeline twice": op_msg(doc(("aggregate", UNDECLARED), ("pipeline", arr()), ("pipeline", arr(doc(("$unionWith", DECLARED)))), ("cursor", doc()), DB)),
    "$out twice": _agg(UNDECLARED, doc(("$match", doc())), doc(("$out", "x"), ("$out", DECLARED))),
    "renameCollection to twice": op_msg(doc(("renameCollection", "blog.x"), ("to", "blog.y"), ("to", f"blog.{DECLARED}"), ("$db", "admin"))),
    "bulkWrite nsInfo ns twice": op_msg(
        doc(("bulkWrite", 1), ("ops", arr(doc(("delete", 0), ("filter", doc()), ("multi", True)))), ("nsInfo", arr(doc(("ns", "blog.x"), ("ns", f"blog.{DECLARED}")))), ("$db", "admin"))
    ),
    "explain twice": op_msg(doc(("explain", doc(("find", UNDECLARED))), ("explain", doc(("find", DECLARED), ("filter", GLOBAL))), DB)),
    "explain's inner name twice": op_msg(doc(("explain", doc(("find", UNDECLARED), ("find", DECLARED), ("filter", GLOBAL))), DB)),
}


@pytest.mark.parametrize("name", list(READ_WHEN_DECLARED))
def test_a_repeat_the_verdict_reads_is_refused(name: str, blog_engine: Engine) -> None:
    verdict = decide(blog_engine, READ_WHEN_DECLARED[name](DECLARED))
    assert verdict.refusal is not None, name
    assert (verdict.refusal.rule, verdict.refusal.code, verdict.refusal.code_name) == ("ambiguous", 29005, "ScalyProtocolError")
    assert "proxy and the server could read it differently" in verdict.refusal.message


@pytest.mark.parametrize("name", list(READ_WHEN_DECLARED))
def test_the_same_repeat_on_an_undeclared_namespace_is_forwarded(name: str, blog_engine: Engine) -> None:
    verdict = decide(blog_engine, READ_WHEN_DECLARED[name](UNDECLARED))
    assert verdict.allowed, verdict.refusal


@pytest.mark.parametrize("name", list(ALWAYS_STRICT))
def test_namespace_fields_and_walked_stages_are_always_strict(name: str, blog_engine: Engine) -> None:
    try:
        verdict = decide(blog_engine, ALWAYS_STRICT[name])
    except ProtocolError as exc:  # the command's name itself (its first key): refused by the codec
        assert exc.kind == "duplicate_key"
        return
    assert verdict.refusal is not None and verdict.refusal.rule == "ambiguous", name


UNREAD: dict[str, bytes] = {
    "a projection repeating a key (issue 15)": op_msg(doc(("find", DECLARED), ("filter", TARGETED), ("projection", doc(("body", 1), ("body", 0))), DB)),
    "$group _id repeating a key (issue 15)": _agg(UNDECLARED, doc(("$group", doc(("_id", doc(("v", "$v"), ("v", "$w"))))))),
    "createIndexes key repeating a field (issue 15)": op_msg(
        doc(("createIndexes", DECLARED), ("indexes", arr(doc(("key", doc(("v", -1), ("v", 1))), ("name", "v")))), DB)
    ),
    "create of a name that is not UTF-8 (issue 15)": op_msg(doc(("create", bad(b"c\xff")), DB)),
    "renameCollection to a name that is not UTF-8 (issue 15)": op_msg(
        doc(("renameCollection", "blog.x"), ("to", bad(b"blog.y\xff")), ("$db", "admin"))
    ),
    "a comment in doubt on a targeted find": op_msg(doc(("find", DECLARED), ("filter", TARGETED), ("comment", "x"), ("comment", bad(b"\xff")), DB)),
    "a repeat deep in a stage after the first": _agg(DECLARED, doc(("$match", TARGETED)), doc(("$project", doc(("a", 1), ("a", 1))))),
}


@pytest.mark.parametrize("name", list(UNREAD))
def test_parts_no_rule_reads_go_to_the_server(name: str, blog_engine: Engine) -> None:
    verdict = decide(blog_engine, UNREAD[name])
    assert verdict.allowed, verdict.refusal


def test_an_undecodable_namespace_is_an_undeclared_one(blog_engine: Engine) -> None:
    verdict = decide(blog_engine, op_msg(doc(("find", bad(b"blog_posts\xff")), ("filter", GLOBAL), DB)))
    assert verdict.allowed and verdict.namespaces == ("blog.blog_posts\udcff",)


@pytest.mark.parametrize(
    "body",
    [
        doc(("find", DECLARED), ("filter", TWICE), DB),  # in the filter: read
        doc(("find", DECLARED), ("filter", TARGETED), ("limit", 1), ("limit", 2), DB),  # elsewhere: not read
        doc(("find", DECLARED), ("filter", doc(("author", "a"), ("title", bad(b"t\xff")))), DB),
        doc(("find", DECLARED), ("filter", TARGETED), ("comment", bad(b"\xff")), DB),
    ],
    ids=["repeat in the filter", "repeat elsewhere", "bad string in the filter", "bad string elsewhere"],
)
def test_the_c_fast_path_never_allows_a_message_in_doubt(body: bytes, blog_engine: Engine) -> None:
    """fast_decide answers only for clean messages; the engine decides the others."""
    assert fast_decide(op_msg(body), blog_engine.fast) is None
    clean = op_msg(doc(("find", DECLARED), ("filter", TARGETED), DB))
    assert fast_decide(clean, blog_engine.fast) is not None  # the positive control


def test_an_insert_in_doubt_never_takes_the_fast_path(blog_engine: Engine) -> None:
    for documents in ([POST, doc(("author", "a"), ("title", "t"), ("body", "x"), ("body", "y"))], [doc(("author", "a"), ("title", bad(b"\xff")))]):
        message = op_msg(doc(("insert", DECLARED), DB), documents=documents)
        assert fast_decide(message, blog_engine.fast) is None
        assert decide(blog_engine, message).refusal is not None
    assert fast_decide(op_msg(doc(("insert", DECLARED), DB), documents=[POST]), blog_engine.fast) is not None
