"""A Document's default collation: in its checks (as mongos targets), its export and its sharding commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import yaml
from pymongo.collation import Collation

from scalymongo_client import Document
from scalymongo_client.config_io import documents_from_config, export_config
from scalymongo_client.errors import GlobalQueryException, NotBoundError
from tests.unit.client.models_fixture import BlogPost


class FrenchName(Document, register=False):
    structure = {"name": str, "n": int}
    indexes = [{"fields": ["name"], "shard_key": True}]
    collation = {"locale": "fr", "strength": 2}
    __database__ = "people"
    __collection__ = "names"


class Counter(Document, register=False):
    structure = {"n": int}
    indexes = [{"fields": ["n"], "shard_key": True}]
    collation = Collation(locale="fr")
    __database__ = "people"
    __collection__ = "counters"


REFUSED: list[tuple[str, Callable[[], Any]]] = [
    ("a string key under the default collation", lambda: FrenchName.find({"name": "léa"})),
    ("a string key under a non-simple collation given", lambda: FrenchName.find({"name": "léa"}, collation={"locale": "en"})),
    ("pymongo's Collation given", lambda: BlogPost.find({"author": "A", "title": "t"}, collation=Collation(locale="fr"))),
    ("an update by a string key", lambda: FrenchName.update_one({"name": "léa"}, {"$set": {"n": 1}})),
]
ALLOWED: list[tuple[str, Callable[[], Any]]] = [
    ("the simple collation given", lambda: FrenchName.find({"name": "léa"}, collation={"locale": "simple"})),
    ("pymongo's simple Collation given", lambda: FrenchName.find({"name": "léa"}, collation=Collation(locale="simple"))),
    ("a number is not collated", lambda: Counter.find({"n": 5})),
    ("a delete by a number", lambda: Counter.delete_one({"n": 5})),
]


@pytest.mark.parametrize("call", [r[1] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_as_mongos_would_not_target(call: Callable[[], Any]) -> None:
    with pytest.raises(GlobalQueryException):
        call()


@pytest.mark.parametrize("call", [a[1] for a in ALLOWED], ids=[a[0] for a in ALLOWED])
def test_allowed_then_needs_a_connection(call: Callable[[], Any]) -> None:
    with pytest.raises(NotBoundError):
        call()


def test_export_carries_the_collation_and_comes_back() -> None:
    text = export_config([FrenchName, Counter])
    entries = yaml.safe_load(text)["collections"]
    assert entries["people.names"]["collation"] == {"locale": "fr", "strength": 2}
    assert entries["people.counters"]["collation"]["locale"] == "fr"
    back = documents_from_config(text=text)
    assert back["FrenchName"].model_spec().collection_config.collation == {"locale": "fr", "strength": 2}
    with pytest.raises(GlobalQueryException):
        back["FrenchName"].find({"name": "léa"})


def test_the_shard_key_index_and_shard_collection_take_the_simple_collation() -> None:
    assert [m.document for m in FrenchName.index_models()] == [
        {"key": {"name": 1}, "name": "name_1", "collation": {"locale": "simple"}},
    ]
    assert FrenchName.shard_commands()[1] == {
        "shardCollection": "people.names", "key": {"name": 1}, "collation": {"locale": "simple"},
    }
    assert "collation" not in BlogPost.shard_commands()[1]


def test_a_collation_must_be_a_document() -> None:
    from scalymongo_client.errors import DefinitionError

    with pytest.raises(DefinitionError, match="collation must be a mapping"):

        class Bad(Document, register=False):
            structure = {"n": int}
            collation = "fr"
            __database__ = "d"
            __collection__ = "c"
