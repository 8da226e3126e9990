"""Document classes with no server: declarations, defaults, validate() with the proxy's messages."""

from __future__ import annotations

from typing import Any

import pytest
from bson.objectid import ObjectId

from scalymongo_client import Document, registered_models
from scalymongo_client.errors import (
    DefinitionError,
    NotBoundError,
    ScalyMongoError,
    SchemaViolation,
    ValidationError,
)
from scalyproxy.config import load_config
from scalyproxy.policy import Engine
from tests.unit.client.models_fixture import BlogPost, Event

ROOT = __import__("pathlib").Path(__file__).resolve().parents[3]


def good_post(**extra: Any) -> BlogPost:
    post = BlogPost(author="Allan", title="My first post", body="text", unique_views=3)
    post["comments"] = [
        {"author": "Bob", "comment": "nice", "rank": 1},
        {"author": "Eve", "comment": "meh", "rank": 2},
    ]
    post.update(extra)
    return post


def test_a_document_is_a_dict() -> None:
    post = good_post()
    assert isinstance(post, dict)
    assert post == {
        "author": "Allan", "title": "My first post", "body": "text", "unique_views": 3,
        "comments": [{"author": "Bob", "comment": "nice", "rank": 1}, {"author": "Eve", "comment": "meh", "rank": 2}],
    }
    assert repr(BlogPost(author="A")) == "{'author': 'A'}"


def test_validate_accepts_a_good_document() -> None:
    good_post().validate()
    good_post(_id=ObjectId()).validate()
    BlogPost(author="Allan", title="t").validate()  # optional fields may be absent


def test_validate_names_a_bad_rank_inside_the_array_of_comments() -> None:
    post = good_post()
    post["comments"][1]["rank"] = "high"
    with pytest.raises(SchemaViolation) as refused:
        post.validate()
    assert str(refused.value) == "comments.1.rank: expected int, got string"
    assert refused.value.errors == ("comments.1.rank: expected int, got string",)
    assert refused.value.code_name == "ScalySchemaViolation" and refused.value.code == 29003
    assert refused.value.namespace == "blog.blog_posts"
    assert not refused.value.from_server


def test_validate_lists_every_problem() -> None:
    post = BlogPost(title=3, extra=1, comments=[{"rank": 1.5}, "not a comment"])
    with pytest.raises(ValidationError) as refused:
        post.validate()
    assert refused.value.errors == (
        "author: required field missing",
        "title: expected string, got int",
        "extra: unknown field (not in the structure; additional_fields is false)",
        "comments.0.rank: expected int, got double",
        "comments.1: expected object, got string",
    )
    assert str(refused.value) == "; ".join(refused.value.errors)


def test_validate_gives_the_proxy_engine_messages() -> None:
    """The same messages as the proxy's engine loaded from config/blog.yaml (one implementation)."""
    engine = Engine.from_config(load_config(ROOT / "config" / "blog.yaml"))
    bad = good_post(unique_views="many", comments=[{"author": "x", "comment": "y", "rank": "1"}])
    with pytest.raises(SchemaViolation) as refused:
        bad.validate()
    assert list(refused.value.errors) == engine.validate_document("blog.blog_posts", bad)
    assert len(refused.value.errors) == 2


def test_nullable_unions_and_additional_fields() -> None:
    event = Event(user_id=ObjectId(), kind="click", payload={"size": 1, "source": None}, note=None, other=1)
    event.validate()
    event["score"] = 2.5
    event.validate()
    event["score"] = "high"
    event["payload"] = {"source": "web"}
    with pytest.raises(SchemaViolation) as refused:
        event.validate()
    assert refused.value.errors == (  # in the document's order: defaults come after the given fields
        "payload.size: required field missing",
        "score: expected int or double, got string",
    )


def test_shard_key_fields_are_required() -> None:
    with pytest.raises(SchemaViolation, match="^user_id: required field missing$"):
        Event(kind="k", payload={"size": 1}).validate()


def test_default_values_fill_new_documents_only() -> None:
    first, second = Event(), Event(score=5)
    assert first == {"tags": [], "score": 0} and second == {"score": 5, "tags": []}
    first["tags"].append("x")
    assert Event()["tags"] == [], "a callable default is called for each document"

    class WithDotted(Document):
        structure = {"meta": {"n": int, "seen": [str]}}
        default_values = {"meta.n": 1, "meta.seen": ["a"]}

    one, two = WithDotted(), WithDotted()
    one["meta"]["seen"].append("b")
    assert two == {"meta": {"n": 1, "seen": ["a"]}}, "defaults are deep-copied"
    assert Event._from_db({"_id": 1, "kind": "k"}) == {"_id": 1, "kind": "k"}, "no defaults for stored documents"


def test_bad_declarations_fail_when_the_class_is_created() -> None:
    with pytest.raises(DefinitionError) as refused:

        class Typo(Document):
            structure = {"name": "strin"}
            __database__, __collection__ = "d", "c"

    assert str(refused.value).endswith(  # the qualified name: ...<locals>.Typo
        ".Typo is not a valid declaration:\n  structure.name: unknown type 'strin' (did you mean 'string'?)"
    )

    with pytest.raises(DefinitionError, match=r"shard-key field 'missing' is missing from the structure"):

        class BadKey(Document):
            structure = {"name": str}
            indexes = [{"fields": ["missing"], "shard_key": True}]
            __database__, __collection__ = "d", "c"

    with pytest.raises(DefinitionError, match=r"shard-key field 'when' is descending \(-1\)"):

        class Descending(Document):
            structure = {"name": str, "when": int}
            indexes = [{"fields": [("name", 1), ("when", -1)], "shard_key": True}]
            __database__, __collection__ = "d", "c"

    with pytest.raises(DefinitionError, match="NotAType: cannot declare"):

        class NotAType(Document):
            structure = {"name": set}

    assert issubclass(DefinitionError, ScalyMongoError) and issubclass(DefinitionError, TypeError)


def test_classes_register_by_name_latest_wins() -> None:
    class Registered(Document):
        structure = {"a": int}

    first = Registered

    class Registered(Document):  # type: ignore[no-redef]  # noqa: F811
        structure = {"b": int}

    assert registered_models()["Registered"] is Registered is not first


def test_unbound_classes_check_first_then_need_a_connection() -> None:
    with pytest.raises(NotBoundError, match=r"use conn.models.BlogPost"):
        BlogPost.find_one({"author": "A", "title": "t"})
    with pytest.raises(NotBoundError):
        BlogPost.collection  # noqa: B018
    with pytest.raises(NotBoundError):
        good_post().save()
    # The save was refused before anything changed: no _id was given.
    post = good_post()
    with pytest.raises(NotBoundError):
        post.save()
    assert "_id" not in post


def test_no_namespace_no_database_methods() -> None:
    class Loose(Document):
        structure = {"a": int}

    with pytest.raises(DefinitionError, match="declares no __database__ and __collection__"):
        Loose.find_one({})
    with pytest.raises(DefinitionError):
        Loose(a=1).validate()
