"""The commands ``init-cluster`` sends to mongos to shard the declared collections.

mongos itself (the Docker tier, tests/integration/test_sharded_cluster.py) runs
them for the blog config; here a recorder stands in for the client so that the
collation handling, which FerretDB cannot run (no sharding, no collation), is
checked command by command."""

from __future__ import annotations

from typing import Any

from pymongo.errors import CollectionInvalid

from scalyproxy.cluster_init import shard_collections
from scalyproxy.config import load_config_text

CONFIG = """\
collections:
  shop.plain:
    indexes: [{fields: [k], shard_key: true, unique: true}]
  shop.french:
    collation: {locale: fr, strength: 2}
    indexes: [{fields: {k: hashed}, shard_key: true}]
  shop.unsharded:
    collation: {locale: fr}
"""


class Recorder:
    """Records what shard_collections asks of a MongoClient: ``admin.command``, ``create_collection``, ``create_index``."""

    def __init__(self, existing: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.calls: list[tuple[Any, ...]] = []
        self.existing = existing
        self.admin = self

    def command(self, name: str, value: Any = None, **kwargs: Any) -> dict[str, Any]:
        self.calls.append(("command", name, value, kwargs))
        return {"ok": 1}

    def __getitem__(self, db: str) -> Database:
        return Database(self, db)


class Database:
    def __init__(self, rec: Recorder, name: str) -> None:
        self.rec, self.name = rec, name

    def create_collection(self, name: str, **kwargs: Any) -> None:
        self.rec.calls.append(("create_collection", f"{self.name}.{name}", kwargs))
        if f"{self.name}.{name}" in self.rec.existing:
            raise CollectionInvalid(f"collection {name} already exists")

    def __getitem__(self, coll: str) -> Collection:
        return Collection(self.rec, f"{self.name}.{coll}")


class Collection:
    def __init__(self, rec: Recorder, ns: str) -> None:
        self.rec, self.ns = rec, ns

    def create_index(self, keys: Any, **kwargs: Any) -> str:
        self.rec.calls.append(("create_index", self.ns, keys, kwargs))
        return "k_1"


def test_a_declared_collation_creates_the_collection_and_shards_it_with_the_simple_collation() -> None:
    rec = Recorder()
    done = shard_collections(rec, load_config_text(CONFIG))  # type: ignore[arg-type]
    assert done == ["shop.plain", "shop.french"]
    assert [c for c in rec.calls if c[0] != "command" or c[1] != "enableSharding"] == [
        ("create_index", "shop.plain", [("k", 1)], {"unique": True}),
        ("command", "shardCollection", "shop.plain", {"key": {"k": 1}, "unique": True}),
        ("create_collection", "shop.french", {"collation": {"locale": "fr", "strength": 2}}),
        ("create_index", "shop.french", [("k", "hashed")], {"unique": False, "collation": {"locale": "simple"}}),
        ("command", "shardCollection", "shop.french",
         {"key": {"k": "hashed"}, "unique": False, "collation": {"locale": "simple"}}),
    ]


def test_an_existing_collection_is_left_as_it_is() -> None:
    rec = Recorder(existing={"shop.french"})
    assert shard_collections(rec, load_config_text(CONFIG)) == ["shop.plain", "shop.french"]  # type: ignore[arg-type]
    assert ("command", "shardCollection", "shop.french",
            {"key": {"k": "hashed"}, "unique": False, "collation": {"locale": "simple"}}) in rec.calls
