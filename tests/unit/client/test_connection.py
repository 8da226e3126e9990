"""conn.models without a server: binding, lookup, the async classes (pymongo connects lazily)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient

from scalymongo_client import AsyncConnection, AsyncModel, Connection, Document
from scalymongo_client.cursor import AsyncDocumentCursor, DocumentCursor
from scalymongo_client.errors import GlobalQueryException


@pytest.fixture()
def conn() -> Iterator[Connection]:
    c = Connection("127.0.0.1", 9, connect=False)  # nothing listens on port 9; nothing is sent
    try:
        yield c
    finally:
        c.close()


def declare() -> type[Document]:
    class Note(Document):
        structure = {"owner": str, "text": str}
        indexes = [{"fields": ["owner"], "shard_key": True}]
        __database__ = "notes"
        __collection__ = "notes"

        def summary(self) -> str:
            return f"{self['owner']}: {self.get('text', '')}"

    return Note


def test_models_are_bound_subclasses(conn: Connection) -> None:
    Note = declare()
    Bound = conn.models.Note
    assert issubclass(Bound, Note) and Bound is not Note and Bound.__name__ == "Note"
    assert Bound is conn.models.Note is conn.model(Note) is conn.models["Note"] is conn.models["notes.notes"]
    assert isinstance(conn.client, MongoClient)
    assert Bound.collection.full_name == "notes.notes" and Bound.collection.database.client is conn.client
    note = Bound(owner="ann", text="hi")
    assert isinstance(note, Note) and note.summary() == "ann: hi"
    assert "Note" in dir(conn.models) and "Note" in list(conn.models)


def test_unknown_model_names(conn: Connection) -> None:
    with pytest.raises(AttributeError, match="no Document class named 'Nope'"):
        conn.models.Nope  # noqa: B018
    with pytest.raises(KeyError):
        conn.models["nope.nope"]


def test_the_session_refusal_needs_no_server(conn: Connection) -> None:
    declare()
    with pytest.raises(GlobalQueryException, match=r"^Some or all of the shard key was not specified\.  Missing fields were owner\.$"):
        conn.models.Note.find_one({"text": "x"})


def test_find_returns_a_document_cursor(conn: Connection) -> None:
    declare()
    cursor = conn.models.Note.find({"owner": "ann"}).sort("owner").limit(3).skip(1)
    assert isinstance(cursor, DocumentCursor) and cursor.model is conn.models.Note
    cursor.close()


def test_async_models() -> None:
    Note = declare()

    async def run() -> None:
        aconn = AsyncConnection("127.0.0.1", 9, connect=False)
        try:
            Bound: Any = aconn.models.Note
            assert isinstance(aconn.client, AsyncMongoClient)
            assert issubclass(Bound, Note) and issubclass(Bound, AsyncModel)
            assert Bound.__mro__[1:3] == (Note, AsyncModel), "the user's class comes before the async mixin"
            for name in ("find_one", "count", "distinct", "aggregate", "update_one", "update_many", "delete_one",
                         "delete_many", "find_one_and_update", "insert_many", "ensure_indexes"):
                assert inspect.iscoroutinefunction(getattr(Bound, name)), name
            for name in ("save", "reload", "delete", "modify"):
                assert inspect.iscoroutinefunction(getattr(Bound(owner="a"), name)), name
            assert isinstance(Bound.find({"owner": "a"}), AsyncDocumentCursor)
            with pytest.raises(GlobalQueryException):
                await Bound.find_one({"text": "x"})
            with pytest.raises(GlobalQueryException):
                Bound.find({"text": "x"})
            with Connection("127.0.0.1", 9, connect=False) as other:
                assert aconn.models.Note is not other.models.Note, "one bound class per connection"
        finally:
            await aconn.close()

    asyncio.run(run())


def test_user_overrides_run_first_in_both_apis(conn: Connection) -> None:
    calls: list[str] = []

    class Stamped(Document):
        structure = {"owner": str, "n": int}
        indexes = [{"fields": ["owner"], "shard_key": True}]
        __database__ = "notes"
        __collection__ = "stamped"

        def save(self) -> Any:
            calls.append("override")
            self["n"] = "not an int"  # the check that follows must refuse it
            return super().save()

    from scalymongo_client.errors import SchemaViolation

    with pytest.raises(SchemaViolation):
        conn.models.Stamped(owner="a").save()

    async def run() -> None:
        aconn = AsyncConnection("127.0.0.1", 9, connect=False)
        try:
            with pytest.raises(SchemaViolation):
                await aconn.models.Stamped(owner="a").save()
        finally:
            await aconn.close()

    asyncio.run(run())
    assert calls == ["override", "override"]
