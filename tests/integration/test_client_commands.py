"""The client checks the very command pymongo sends: the body it judged vs. the body on the wire.

Runs straight against FerretDB (no proxy needed): a pymongo CommandListener records
what pymongo really sends, a spy on the client's check records what the engine judged.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pymongo
import pytest
from pymongo import ReturnDocument, monitoring

from scalymongo_client import Connection, Document, checks
from scalyproxy.backend import FerretDB
from scalyproxy.policy import Command

# Fields the policy reads; if pymongo sends one, the judged command must have it too, equal.
POLICY_FIELDS = ("filter", "sort", "collation", "hint", "comment", "pipeline", "query", "update", "key",
                 "projection", "fields", "upsert", "new", "limit", "skip", "singleBatch", "let")
SEQUENCES = ("documents", "updates", "deletes")


class Recorder(monitoring.CommandListener):
    def __init__(self) -> None:
        self.commands: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.commands.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


class Item(Document):
    structure = {"shop": str, "sku": str, "price": int, "tags": [str]}
    indexes = [{"fields": ["shop", "sku"], "shard_key": True}, {"fields": ["price"]}]
    __database__ = "cmdcheck"
    __collection__ = "items"


@pytest.fixture()
def wired(ferretdb: FerretDB, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Recorder, list[Command]]]:
    recorder = Recorder()
    judged: list[Command] = []
    original = checks.enforce

    def spy(spec: Any, command: Command) -> Any:
        judged.append(command)
        return original(spec, command)

    monkeypatch.setattr(checks, "enforce", spy)
    conn = Connection(ferretdb.uri, event_listeners=[recorder], serverSelectionTimeoutMS=10_000)
    conn.client.cmdcheck.items.drop()
    model = conn.model(Item)
    model.insert_many([{"shop": "s", "sku": str(i), "price": i} for i in range(5)])
    try:
        yield model, recorder, judged
    finally:
        conn.close()


KEY = {"shop": "s", "sku": "1"}
OPS: list[tuple[str, Callable[[Any], Any]]] = [
    ("find_one", lambda M: M.find_one(KEY, ["price"], comment="c")),
    ("find", lambda M: list(M.find({"shop": "s", "sku": {"$in": ["1", "2"]}}, sort=[("shop", 1)], skip=1, limit=2))),
    ("find allow_global", lambda M: list(M.find({"price": {"$gt": 1}}, allow_global=True, comment="report"))),
    ("count", lambda M: M.count(KEY, limit=5)),
    ("distinct", lambda M: M.distinct("price", KEY, comment="d")),
    ("aggregate", lambda M: list(M.aggregate([{"$match": KEY}, {"$project": {"price": 1}}], comment="a"))),
    ("update_one", lambda M: M.update_one(KEY, {"$set": {"price": 9}}, upsert=True, comment="u")),
    ("update_many", lambda M: M.update_many({"shop": "s"}, {"$inc": {"price": 1}}, allow_global=True)),
    ("delete_one", lambda M: M.delete_one(KEY, comment="x")),
    ("delete_many", lambda M: M.delete_many({"shop": "s", "sku": {"$in": ["3"]}})),
    ("find_one_and_update", lambda M: M.find_one_and_update(
        {"shop": "s", "sku": "2"}, {"$push": {"tags": "new"}}, return_document=ReturnDocument.AFTER,
        sort=[("price", 1)], comment="f")),
    ("insert_many", lambda M: M.insert_many([{"shop": "t", "sku": "a", "price": 1}], ordered=False)),
    ("save", lambda M: M(shop="u", sku="b", price=2).save()),
    ("modify", lambda M: M.find_one({"shop": "s", "sku": "4"}).modify({"$set": {"price": 40}})),
]


@pytest.mark.parametrize(("case", "op"), OPS, ids=[o[0] for o in OPS])
def test_judged_command_is_the_sent_command(wired: tuple[Any, Recorder, list[Command]], case: str, op: Callable[[Any], Any]) -> None:
    model, recorder, judged = wired
    recorder.commands.clear()
    judged.clear()
    op(model)
    command = judged[-1]
    sent = [c for c in recorder.commands if command.name in c]
    assert sent, f"pymongo sent no {command.name}: {recorder.commands}"
    wire = sent[-1]
    assert wire[command.name] == command.body[command.name] == "items" and wire["$db"] == command.db == "cmdcheck"
    for field in POLICY_FIELDS:
        if field in wire:
            assert field in command.body, f"{case}: pymongo sends {field}={wire[field]!r}, the check did not see it"
            assert command.body[field] == wire[field], field
        else:
            assert field not in command.body, f"{case}: the check saw {field} that pymongo does not send"
    for name in SEQUENCES:
        if name in wire:
            assert [dict(s) for s in command.sequences[name]] == [dict(s) for s in wire[name]], name


def test_pymongo_really_sends_find_one_as_judged(ferretdb: FerretDB) -> None:
    """Sanity check of the recorder itself (so the test above cannot pass vacuously)."""
    recorder = Recorder()
    client: pymongo.MongoClient = pymongo.MongoClient(ferretdb.uri, event_listeners=[recorder])
    try:
        client.cmdcheck.items.find_one({"shop": "s"})
    finally:
        client.close()
    finds = [c for c in recorder.commands if "find" in c]
    assert finds and finds[0]["filter"] == {"shop": "s"} and finds[0]["limit"] == 1 and finds[0]["singleBatch"] is True
