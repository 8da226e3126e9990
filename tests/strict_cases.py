"""Commands with a repeated key or a string that is not UTF-8 in each place the
proxy's verdict reads, and in places it does not (issue 15, section 2): shared by
the engine's unit tests and the scripted-peer tests that prove each moved boundary
is no bypass. config/blog.yaml: blog.blog_posts is declared, blog.other is not."""

from __future__ import annotations

from collections.abc import Callable

from tests.rawbson import Doc, arr, bad, doc, op_msg

DECLARED, UNDECLARED = "blog_posts", "other"
DB = ("$db", "blog")
TARGETED = doc(("author", "a"), ("title", "t"))
GLOBAL = doc(("author", "a"))
#: a filter giving the whole shard key, with the title repeated (the server reads two conditions)
TWICE = doc(("author", "a"), ("title", "t"), ("title", doc(("$ne", "t"))))
POST = doc(("author", "a"), ("title", "t"), ("body", "b"))


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
