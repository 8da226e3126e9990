"""Refusals only the proxy can make: its YAML has rules the Python class does not declare.

The class below knows no shard key, allows extra fields and knows nothing of
deny_commands, so its client-side checks pass; the proxy (started with the
stricter config) refuses, and the library raises the same exception types,
which are then also pymongo OperationFailures.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pymongo
import pytest
from pymongo.errors import OperationFailure

from scalymongo_client import AsyncConnection, Connection, Document
from scalymongo_client.errors import (
    CommandDenied,
    GlobalQueryException,
    ScalyMongoError,
    SchemaViolation,
    ServerCommandDenied,
    ServerGlobalQueryException,
    ServerSchemaViolation,
    ServerShardKeyViolation,
    ShardKeyViolation,
)
from tests.conftest import ProxyProcess

STRICT = """\
policy:
  deny_commands: [delete]
collections:
  guarded.items:
    structure: {shop: string, sku: string, price: int}
    rules: {unindexed_query: off}
    indexes:
      - fields: [shop, sku]
        shard_key: true
"""


class LaxItem(Document):
    structure = {"shop": str, "sku": str, "price": int}
    additional_fields = True
    rules = {"unindexed_query": "off"}
    __database__ = "guarded"
    __collection__ = "items"


@pytest.fixture(scope="module")
def strict_proxy(proxy_factory: Callable[..., ProxyProcess], tmp_path_factory: pytest.TempPathFactory) -> ProxyProcess:
    path: Path = tmp_path_factory.mktemp("strict") / "strict.yaml"
    path.write_text(STRICT)
    return proxy_factory(config_path=path)


@pytest.fixture()
def items(strict_proxy: ProxyProcess, direct_client: pymongo.MongoClient) -> Iterator[type[LaxItem]]:
    direct_client.guarded.items.drop()
    direct_client.guarded.items.insert_many([{"shop": "s", "sku": str(i), "price": i} for i in range(3)])
    conn = Connection(strict_proxy.uri, serverSelectionTimeoutMS=10_000)
    try:
        yield conn.model(LaxItem)
    finally:
        conn.close()


def _assert_server_refusal(exc: BaseException, family: type[ScalyMongoError], server: type, message: str) -> None:
    assert type(exc) is server
    assert isinstance(exc, family) and isinstance(exc, OperationFailure) and isinstance(exc, ScalyMongoError)
    assert str(exc) == message and exc.from_server  # type: ignore[attr-defined]
    assert isinstance(exc.__cause__, OperationFailure), "chained to pymongo's own exception"
    assert exc.details is not None and exc.details["errmsg"] == message  # type: ignore[attr-defined]


def test_global_query_refused_by_the_proxy(items: type[LaxItem]) -> None:
    with pytest.raises(GlobalQueryException) as refused:
        items.find_one({"shop": "s"})
    _assert_server_refusal(
        refused.value, GlobalQueryException, ServerGlobalQueryException,
        "Some or all of the shard key was not specified.  Missing fields were sku.",
    )
    assert refused.value.code == 29001 and refused.value.code_name == "ScalyGlobalQuery"  # type: ignore[attr-defined]


def test_the_marker_reaches_the_proxy(items: type[LaxItem]) -> None:
    found = items.find_one({"shop": "s", "price": 2}, allow_global=True, comment="admin report")
    assert found is not None and found["sku"] == "2" and isinstance(found, LaxItem)
    assert items.count({"shop": "s"}, allow_global=True) == 3
    assert sorted(d["sku"] for d in items.find({"shop": "s"}, allow_global=True)) == ["0", "1", "2"]


def test_shard_key_write_refused_by_the_proxy(items: type[LaxItem], direct_client: pymongo.MongoClient) -> None:
    item = items(shop="s", price=1)
    with pytest.raises(ShardKeyViolation) as refused:
        item.save()
    _assert_server_refusal(
        refused.value, ShardKeyViolation, ServerShardKeyViolation,
        "documents.0: missing shard key field(s) sku (every document of guarded.items must contain the full shard key)",
    )
    assert "_id" not in item, "a refused insert gives back the _id it was given"
    assert direct_client.guarded.items.count_documents({}) == 3


def test_schema_refused_by_the_proxy_and_nothing_written(items: type[LaxItem], direct_client: pymongo.MongoClient) -> None:
    batch = [{"shop": "t", "sku": str(i), "price": i} for i in range(1000)]
    batch[500]["colour"] = "red"
    with pytest.raises(SchemaViolation) as refused:
        items.insert_many(batch)
    _assert_server_refusal(
        refused.value, SchemaViolation, ServerSchemaViolation,
        "colour: unknown field (not in the structure; additional_fields is false) (guarded.items documents.500)",
    )
    assert direct_client.guarded.items.count_documents({}) == 3


def test_denied_command_refused_by_the_proxy(items: type[LaxItem], direct_client: pymongo.MongoClient) -> None:
    with pytest.raises(CommandDenied) as refused:
        items.delete_one({"shop": "s", "sku": "1"})
    _assert_server_refusal(
        refused.value, CommandDenied, ServerCommandDenied,
        "command delete is denied by the proxy policy (policy.deny_commands)",
    )
    assert direct_client.guarded.items.count_documents({}) == 3


def test_async_refusals_are_mapped_too(strict_proxy: ProxyProcess, items: type[LaxItem]) -> None:
    async def run() -> None:
        conn = AsyncConnection(strict_proxy.uri, serverSelectionTimeoutMS=10_000)
        try:
            model = conn.model(LaxItem)
            with pytest.raises(ServerGlobalQueryException):
                await model.find_one({"price": 1})
            with pytest.raises(ServerGlobalQueryException):
                [d async for d in model.find({"price": 1})]
            with pytest.raises(ServerCommandDenied):
                await model.delete_many({"shop": "s", "sku": "0"})
            assert await model.count({"shop": "s", "sku": "0"}) == 1
        finally:
            await conn.close()

    asyncio.run(run())


def test_config_classes_agree_with_the_proxy(strict_proxy: ProxyProcess, tmp_path: Path, items: type[LaxItem]) -> None:
    """With config= the client knows the proxy's rules: the same refusal, now raised before any round trip."""
    path = tmp_path / "strict.yaml"
    path.write_text(STRICT)
    conn = Connection(strict_proxy.uri, config=path, serverSelectionTimeoutMS=10_000)
    try:
        with pytest.raises(GlobalQueryException) as refused:
            conn.models.Items.find_one({"shop": "s"})
        assert type(refused.value) is GlobalQueryException
        assert str(refused.value) == "Some or all of the shard key was not specified.  Missing fields were sku."
        with pytest.raises(CommandDenied) as denied:
            conn.models.Items.delete_one({"shop": "s", "sku": "1"})
        assert type(denied.value) is CommandDenied
        assert conn.models.Items.find_one({"shop": "s", "sku": "1"}) == {**items.find_one({"shop": "s", "sku": "1"})}
    finally:
        conn.close()
