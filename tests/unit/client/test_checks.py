"""Client-side refusals, with no server: the proxy's engine judges the command pymongo would send."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pymongo import ReturnDocument

from scalymongo_client import checks
from scalymongo_client.config_io import documents_from_config
from scalymongo_client.errors import (
    CommandDenied,
    GlobalQueryException,
    NotBoundError,
    ScalyMongoError,
    ScalyMongoWarning,
    SchemaViolation,
    ShardKeyViolation,
)
from tests.unit.client.models_fixture import BlogPost, Event

B = BlogPost
GLOBAL_TITLE = "Some or all of the shard key was not specified.  Missing fields were title."
GLOBAL_BOTH = "Some or all of the shard key was not specified.  Missing fields were author, title."

REFUSED: list[tuple[str, Callable[[], Any], type[ScalyMongoError], str]] = [
    ("find_one", lambda: B.find_one({"author": "Allan"}), GlobalQueryException, GLOBAL_TITLE),
    ("find", lambda: B.find({"title": "t"}), GlobalQueryException,
     "Some or all of the shard key was not specified.  Missing fields were author."),
    ("find all", lambda: B.find(), GlobalQueryException, GLOBAL_BOTH),
    ("find $or", lambda: B.find({"$or": [{"author": "a", "title": "t"}, {"author": "b"}]}), GlobalQueryException, GLOBAL_TITLE),
    ("count", lambda: B.count({"author": "A"}), GlobalQueryException, GLOBAL_TITLE),
    ("count all", lambda: B.count(), GlobalQueryException, GLOBAL_BOTH),
    ("distinct", lambda: B.distinct("body", {"author": "A"}), GlobalQueryException, GLOBAL_TITLE),
    ("aggregate", lambda: B.aggregate([{"$match": {"author": "A"}}]), GlobalQueryException, GLOBAL_TITLE),
    ("update_one", lambda: B.update_one({"author": "A"}, {"$set": {"body": "x"}}), GlobalQueryException, GLOBAL_TITLE),
    ("update_many", lambda: B.update_many({}, {"$set": {"body": "x"}}), GlobalQueryException, GLOBAL_BOTH),
    ("delete_one", lambda: B.delete_one({"author": "A"}), GlobalQueryException, GLOBAL_TITLE),
    ("delete_many", lambda: B.delete_many({"title": {"$gt": "a"}}), GlobalQueryException, GLOBAL_BOTH),
    ("find_one_and_update", lambda: B.find_one_and_update({"author": "A"}, {"$set": {"body": "x"}}),
     GlobalQueryException, GLOBAL_TITLE),
    ("update changes the key", lambda: B.update_one({"author": "A", "title": "t"}, {"$set": {"title": "u"}}),
     ShardKeyViolation, "updates.0: $set of title would change shard key field(s) title of blog.blog_posts"),
    ("upsert without the key", lambda: B.update_one({"author": "A"}, {"$set": {"body": "x"}}, upsert=True, allow_global=True),
     ShardKeyViolation,
     "updates.0: an upsert on blog.blog_posts must give the full shard key by equality in its filter.  Missing fields were title."),
    ("insert without the key", lambda: B.insert_many([{"author": "A", "title": "t"}, {"author": "A"}]), ShardKeyViolation,
     "documents.1: missing shard key field(s) title (every document of blog.blog_posts must contain the full shard key)"),
    ("insert a bad comment rank", lambda: B.insert_many([
        {"author": "A", "title": "t", "comments": [{"author": "c", "comment": "d", "rank": "high"}]}]),
     SchemaViolation, "comments.0.rank: expected int, got string (blog.blog_posts documents.0)"),
    ("update with a bad type", lambda: B.update_one({"author": "A", "title": "t"}, {"$set": {"comments.0.rank": "x"}}),
     SchemaViolation, "comments.0.rank: expected int, got string (blog.blog_posts updates.0)"),
    ("$inc of a string field", lambda: B.update_many({"author": "A", "title": "t"}, {"$inc": {"body": 1}}),
     SchemaViolation, "body: $inc/$mul needs a numeric field, the field is string (blog.blog_posts updates.0)"),
    ("save without the key", lambda: B(author="A", body="b").save(), ShardKeyViolation,
     "documents.0: missing shard key field(s) title (every document of blog.blog_posts must contain the full shard key)"),
    ("save a bad document", lambda: B(author="A", title="t", unique_views="many").save(), SchemaViolation,
     "unique_views: expected int, got string (blog.blog_posts documents.0)"),
    ("hashed key by range", lambda: Event.find({"user_id": {"$gt": 1}}), GlobalQueryException,
     "Some or all of the shard key was not specified.  Missing fields were user_id."),
]


@pytest.mark.parametrize(("case", "call", "error", "message"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_client_side_with_the_exact_message(
    case: str, call: Callable[[], Any], error: type[ScalyMongoError], message: str
) -> None:
    with pytest.raises(error) as refused:
        call()
    assert str(refused.value) == message
    assert type(refused.value) is error, "a client-side refusal is the plain class, not the server one"
    assert refused.value.details == {"ok": 0.0, "errmsg": message, "code": refused.value.code, "codeName": refused.value.code_name}


ALLOWED: list[tuple[str, Callable[[], Any]]] = [
    ("find_one targeted", lambda: B.find_one({"author": "Allan", "title": "My first post"})),
    ("find_one with the marker", lambda: B.find_one({"author": "Allan"}, allow_global=True)),
    ("the marker already in the comment", lambda: B.find_one({"author": "A"}, comment="x scaly:allow-global")),
    ("find $in", lambda: B.find({"author": {"$in": ["a", "b"]}, "title": "t"})),
    ("find $and", lambda: B.find({"$and": [{"author": "a"}, {"title": {"$eq": "t"}}]})),
    ("count targeted", lambda: B.count({"author": "A", "title": "t"})),
    ("count all with the marker", lambda: B.count(allow_global=True)),
    ("aggregate targeted", lambda: B.aggregate([{"$match": {"author": "A", "title": "t"}}, {"$project": {"body": 1}}])),
    ("update_many with the marker", lambda: B.update_many({}, {"$set": {"body": "x"}}, allow_global=True)),
    ("upsert targeted", lambda: B.update_one({"author": "A", "title": "t"}, {"$set": {"body": "x"}}, upsert=True)),
    ("delete_many with a document comment", lambda: B.delete_many({}, allow_global=True, comment={"app": "blog"})),
    ("find_one_and_update", lambda: B.find_one_and_update(
        {"author": "A", "title": "t"}, {"$push": {"comments": {"author": "c", "comment": "d", "rank": 1}}},
        return_document=ReturnDocument.AFTER)),
    ("insert_many", lambda: B.insert_many([{"author": "A", "title": str(i)} for i in range(3)])),
    ("hashed key by equality", lambda: Event.find({"user_id": 7})),
]


@pytest.mark.parametrize(("case", "call"), ALLOWED, ids=[a[0] for a in ALLOWED])
def test_allowed_client_side_then_needs_a_connection(case: str, call: Callable[[], Any]) -> None:
    """The check passes (no warning, no refusal); only then does the unbound class need a connection."""
    with pytest.raises(NotBoundError):
        call()


def test_insert_many_refuses_the_whole_batch_and_changes_nothing() -> None:
    docs = [{"author": "A", "title": str(i)} for i in range(5)] + [{"author": "A"}]
    with pytest.raises(ShardKeyViolation, match="documents.5"):
        B.insert_many(docs)
    assert all("_id" not in d for d in docs), "no _id was given to any document of a refused batch"


def test_unindexed_queries_warn() -> None:
    with pytest.warns(ScalyMongoWarning, match=r"^no declared index serves the filter on body \(blog.blog_posts\) \[unindexed_query\]$"):
        with pytest.raises(NotBoundError):
            B.find({"body": "x"}, allow_global=True)
    with pytest.warns(ScalyMongoWarning, match="no declared index serves the sort on"):
        with pytest.raises(NotBoundError):
            B.find({"author": "A"}, allow_global=True, sort=[("body", 1)])


def test_a_rule_turned_off_does_not_warn() -> None:
    with pytest.raises(NotBoundError):  # Event has rules: {unindexed_query: off}; filterwarnings=error would fail
        Event.find({"user_id": 1, "kind": "x"})


def test_the_warning_points_at_the_caller() -> None:
    with pytest.warns(ScalyMongoWarning) as record:
        with pytest.raises(NotBoundError):
            B.find({"body": "x"}, allow_global=True)
    assert record[0].filename == __file__


def test_deny_commands_from_the_config_are_refused_client_side() -> None:
    text = """
policy:
  deny_commands: [delete]
collections:
  app.items:
    structure: {name: string}
"""
    Item = documents_from_config(text=text)["Items"]
    with pytest.raises(CommandDenied) as refused:
        Item.delete_many({"name": "x"})
    assert str(refused.value) == "command delete is denied by the proxy policy (policy.deny_commands)"
    with pytest.raises(NotBoundError):
        Item.find({"_id": 1})


# -- the allow marker -------------------------------------------------------------------

MARKER = "scaly:allow-global"


@pytest.mark.parametrize(
    ("comment", "expected"),
    [
        (None, MARKER),
        ("list posts", "list posts scaly:allow-global"),
        ("already scaly:allow-global", "already scaly:allow-global"),
        ({"app": "blog"}, {"app": "blog", "scaly": MARKER}),
        ({"scaly": "mine"}, {"scaly": "mine", "_scaly": MARKER}),
        ({"why": f"report {MARKER}"}, {"why": f"report {MARKER}"}),
    ],
)
def test_marked_comment(comment: Any, expected: Any) -> None:
    assert checks.marked_comment(comment, MARKER) == expected


def test_marked_comment_refuses_other_types() -> None:
    with pytest.raises(TypeError, match="string or document comment"):
        checks.marked_comment(42, MARKER)


def test_allow_global_keeps_the_callers_comment() -> None:
    spec = B.model_spec()
    opts = checks.options_with_marker({"comment": "nightly report", "limit": 3}, True, spec.marker)
    assert opts == {"comment": "nightly report scaly:allow-global", "limit": 3}
    assert checks.options_with_marker({"comment": "x"}, False, spec.marker) == {"comment": "x"}


# -- the bodies pymongo sends -------------------------------------------------------------


def test_find_one_body() -> None:
    cmd = checks.find_command(
        B.model_spec(), {"author": "A"}, ["body"], {"sort": [("title", -1)], "comment": "c", "collation": {"locale": "en"}},
        single=True,
    )
    assert cmd.name == "find" and cmd.db == "blog"
    assert dict(cmd.body) == {
        "find": "blog_posts", "filter": {"author": "A"}, "sort": {"title": -1}, "projection": {"body": 1},
        "limit": 1, "singleBatch": True, "comment": "c", "collation": {"locale": "en"}, "$db": "blog",
    }


def test_write_statements_travel_in_sequences() -> None:
    spec = B.model_spec()
    update = checks.update_command(spec, {"author": "A"}, {"$set": {"b": 1}}, multi=True, options={"array_filters": [{"x.a": 1}]})
    assert dict(update.body) == {"update": "blog_posts", "ordered": True, "$db": "blog"}
    assert update.sequences == {"updates": [{"q": {"author": "A"}, "u": {"$set": {"b": 1}}, "multi": True, "upsert": False, "arrayFilters": [{"x.a": 1}]}]}
    delete = checks.delete_command(spec, {"author": "A"}, many=False)
    assert delete.sequences == {"deletes": [{"q": {"author": "A"}, "limit": 1}]}
    insert = checks.insert_command(spec, [{"_id": 1, "author": "A"}], {"ordered": False})
    assert dict(insert.body) == {"insert": "blog_posts", "ordered": False, "$db": "blog"}
    assert insert.sequences == {"documents": [{"_id": 1, "author": "A"}]}


def test_count_is_count_documents_pipeline() -> None:
    cmd = checks.count_command(B.model_spec(), {"author": "A"}, {"skip": 2, "limit": 5})
    assert cmd.body["pipeline"] == [
        {"$match": {"author": "A"}}, {"$skip": 2}, {"$limit": 5}, {"$group": {"_id": 1, "n": {"$sum": 1}}},
    ]


@pytest.mark.parametrize(
    ("sort", "expected"),
    [("a", {"a": 1}), ([("a", 1), ("b", -1)], {"a": 1, "b": -1}), ({"a": -1}, {"a": -1}), (None, None)],
)
def test_sort_document(sort: Any, expected: Any) -> None:
    assert checks.sort_document(sort) == expected
