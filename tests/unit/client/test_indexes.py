"""ensure_indexes(): the declared indexes, and sharding only when the server says it is a mongos."""

from __future__ import annotations

from typing import Any

import pytest

from scalymongo_client.errors import NotBoundError, ScalyMongoWarning
from tests.unit.client.models_fixture import BlogPost, Event


def test_index_models() -> None:
    assert [m.document for m in BlogPost.index_models()] == [
        {"key": {"author": 1, "title": 1}, "name": "author_1_title_1", "unique": True},
    ]
    assert [m.document for m in Event.index_models()] == [
        {"key": {"user_id": "hashed"}, "name": "user_id_hashed"},
        {"key": {"at": -1}, "name": "at_-1"},
    ]


def test_shard_commands() -> None:
    assert BlogPost.shard_commands() == [
        {"enableSharding": "blog"},
        {"shardCollection": "blog.blog_posts", "key": {"author": 1, "title": 1}, "unique": True},
    ]
    assert Event.shard_commands() == [
        {"enableSharding": "metrics"},
        {"shardCollection": "metrics.events", "key": {"user_id": "hashed"}},
    ]


class ScriptedServer:
    """A stand-in for pymongo's Collection/Database/admin, for what FerretDB cannot show: a mongos.

    It answers ``hello`` with the given ``msg`` and records every command; the
    FerretDB path (no sharding, a warning) is tested for real in
    tests/integration/test_client_api.py.
    """

    def __init__(self, hello_msg: str | None) -> None:
        self.hello_msg = hello_msg
        self.commands: list[Any] = []
        self.database = self
        self.client = self
        self.admin = self

    def create_indexes(self, models: list[Any]) -> list[str]:
        self.commands.append(("createIndexes", [m.document for m in models]))
        return [m.document["name"] for m in models]

    def command(self, command: Any) -> dict[str, Any]:
        self.commands.append(command)
        return {"ok": 1.0, **({"msg": self.hello_msg} if self.hello_msg and command == "hello" else {})}


def bound(server: ScriptedServer) -> Any:
    from scalymongo_client.connection import make_bound_class

    return make_bound_class(BlogPost, None, server)


def test_on_a_mongos_the_collection_is_sharded() -> None:
    server = ScriptedServer("isdbgrid")
    assert bound(server).ensure_indexes() == ["author_1_title_1"]
    assert server.commands == [
        ("createIndexes", [{"key": {"author": 1, "title": 1}, "name": "author_1_title_1", "unique": True}]),
        "hello",
        {"enableSharding": "blog"},
        {"shardCollection": "blog.blog_posts", "key": {"author": 1, "title": 1}, "unique": True},
    ]


def test_elsewhere_nothing_is_sharded_and_a_warning_says_so() -> None:
    server = ScriptedServer(None)
    with pytest.warns(ScalyMongoWarning, match=r"^blog.blog_posts: the server is not a mongos"):
        bound(server).ensure_indexes()
    assert server.commands[-1] == "hello" and len(server.commands) == 2


def test_unbound() -> None:
    with pytest.raises(NotBoundError):
        BlogPost.ensure_indexes()
