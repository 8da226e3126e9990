"""The relay is transparent: real pymongo clients through the proxy to a real FerretDB."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bson
import pymongo
import pytest
from pymongo import AsyncMongoClient, MongoClient
from pymongo.errors import AutoReconnect, ConnectionFailure, PyMongoError
from pymongo.write_concern import WriteConcern

from scalyproxy.backend import FerretDB
from tests.conftest import ProxyProcess

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

OPEN_CONFIG = """\
listen: 127.0.0.1:27017
upstream: mongodb://127.0.0.1:27018
policy:
  unknown_namespaces: allow
limits:
  max_connections: 1000
  idle_timeout_s: 600
  message_read_timeout_s: 5
  connect_timeout_s: 2
"""


@pytest.fixture(scope="module")
def open_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("relay") / "open.yaml"
    path.write_text(OPEN_CONFIG)
    return path


@pytest.fixture(scope="module")
def proxy(proxy_factory: Callable[..., ProxyProcess], open_config: Path) -> ProxyProcess:
    return proxy_factory(open_config)


@pytest.fixture()
def client(proxy: ProxyProcess) -> Iterator[MongoClient]:
    c: MongoClient = MongoClient(proxy.uri, serverSelectionTimeoutMS=10_000, appname="relay-test")
    try:
        yield c
    finally:
        c.close()


def test_crud_through_proxy(client: MongoClient, direct_client: MongoClient) -> None:
    coll = client.relay.crud
    coll.drop()
    coll.insert_one({"_id": 1, "name": "a", "n": 1})
    coll.insert_one({"_id": 2, "name": "b", "n": 2})
    assert coll.find_one({"_id": 1}) == {"_id": 1, "name": "a", "n": 1}
    assert coll.update_one({"_id": 2}, {"$inc": {"n": 5}}).modified_count == 1
    assert coll.count_documents({}) == 2
    assert coll.delete_one({"_id": 1}).deleted_count == 1
    # what went through the proxy is really in the server
    assert list(direct_client.relay.crud.find()) == [{"_id": 2, "name": "b", "n": 7}]


def test_cursor_with_many_getmores(client: MongoClient) -> None:
    coll = client.relay.cursor
    coll.drop()
    coll.insert_many([{"_id": i, "v": i * 2} for i in range(1000)])
    got = [d["v"] for d in coll.find({}, batch_size=10).sort("_id", 1)]
    assert got == [i * 2 for i in range(1000)]


def test_insert_many_10000_kind1_sequences(client: MongoClient, direct_client: MongoClient) -> None:
    coll = client.relay.bulk
    coll.drop()
    res = coll.insert_many([{"_id": i, "pad": "x" * 50} for i in range(10_000)])
    assert len(res.inserted_ids) == 10_000
    assert direct_client.relay.bulk.count_documents({}) == 10_000


def test_session(client: MongoClient) -> None:
    coll = client.relay.session
    coll.drop()
    with client.start_session(causal_consistency=True) as s:
        coll.insert_one({"_id": "s1"}, session=s)
        assert coll.find_one({"_id": "s1"}, session=s) == {"_id": "s1"}
        assert coll.count_documents({}, session=s) == 1


def test_unacknowledged_writes_then_read(client: MongoClient) -> None:
    coll = client.relay.get_collection("w0", write_concern=WriteConcern(w=0))
    client.relay.w0.drop()
    for i in range(200):
        coll.insert_one({"_id": i})
    # an acknowledged read on the same connection sees every w:0 write
    deadline = time.monotonic() + 10
    while client.relay.w0.count_documents({}) < 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.relay.w0.count_documents({}) == 200


def test_async_client(proxy: ProxyProcess) -> None:
    async def main() -> list[int]:
        c: AsyncMongoClient = AsyncMongoClient(proxy.uri, serverSelectionTimeoutMS=10_000)
        try:
            coll = c.relay.async_coll
            await coll.drop()
            await coll.insert_many([{"_id": i} for i in range(300)])
            await coll.update_one({"_id": 5}, {"$set": {"x": 1}})
            assert (await coll.find_one({"_id": 5})) == {"_id": 5, "x": 1}
            await coll.delete_one({"_id": 6})
            return [d["_id"] async for d in coll.find({}, batch_size=7).sort("_id", 1)]
        finally:
            await c.close()

    ids = asyncio.run(main())
    assert ids == [i for i in range(300) if i != 6]


def test_200_concurrent_clients(proxy: ProxyProcess, direct_client: MongoClient) -> None:
    """200 clients at once, 50 checked operations each (10 writes, 40 reads).

    FerretDB's SQLite backend serialises writers per database and answers
    SQLITE_BUSY under heavy concurrent writes, so each client writes to its own
    database; the reads and the connections through the proxy are all concurrent.
    """
    clients, ops = 200, 50

    async def worker(k: int) -> int:
        c: AsyncMongoClient = AsyncMongoClient(proxy.uri, serverSelectionTimeoutMS=30_000, maxPoolSize=1)
        try:
            coll = c[f"relay_conc_{k}"].docs
            checked = 0
            for i in range(10):
                await coll.insert_one({"_id": i, "k": k})
                checked += 1
            for i in range(ops - 10):
                got = await coll.find_one({"_id": i % 10})
                assert got == {"_id": i % 10, "k": k}, got
                checked += 1
            return checked
        finally:
            await c.close()

    async def main() -> list[int]:
        return await asyncio.gather(*(worker(k) for k in range(clients)))

    for k in range(clients):
        direct_client.drop_database(f"relay_conc_{k}")
    try:
        assert asyncio.run(main()) == [ops] * clients
        assert sum(direct_client[f"relay_conc_{k}"].docs.count_documents({}) for k in range(clients)) == 2000
    finally:
        for k in range(clients):
            direct_client.drop_database(f"relay_conc_{k}")


def test_monitoring_stays_connected(proxy: ProxyProcess) -> None:
    from pymongo import monitoring

    class Beats(monitoring.ServerHeartbeatListener):
        def __init__(self) -> None:
            self.ok = 0
            self.failed = 0

        def started(self, event: monitoring.ServerHeartbeatStartedEvent) -> None:
            pass

        def succeeded(self, event: monitoring.ServerHeartbeatSucceededEvent) -> None:
            self.ok += 1

        def failed(self, event: monitoring.ServerHeartbeatFailedEvent) -> None:
            self.failed += 1

    beats = Beats()
    c: MongoClient = MongoClient(
        proxy.uri, heartbeatFrequencyMS=500, serverSelectionTimeoutMS=5000, event_listeners=[beats]
    )
    try:
        c.admin.command("ping")
        end = time.monotonic() + 5
        while time.monotonic() < end:
            assert c.admin.command("ping")["ok"] == 1.0
            time.sleep(0.5)
        assert beats.failed == 0
        assert beats.ok >= 5
    finally:
        c.close()


def _op_query_ismaster(request_id: int) -> bytes:
    body = bson.encode({"isMaster": 1, "client": {"application": {"name": "raw-legacy"}}})
    payload = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + body
    return struct.pack("<iiii", 16 + len(payload), request_id, 0, 2004) + payload


def _recv_message(sock: socket.socket) -> bytes:
    head = b""
    while len(head) < 16:
        chunk = sock.recv(16 - len(head))
        assert chunk, "connection closed"
        head += chunk
    length = struct.unpack_from("<i", head)[0]
    body = b""
    while len(body) < length - 16:
        chunk = sock.recv(length - 16 - len(body))
        assert chunk, "connection closed"
        body += chunk
    return head + body


def test_legacy_op_query_ismaster(proxy: ProxyProcess) -> None:
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as s:
        s.sendall(_op_query_ismaster(4242))
        reply = _recv_message(s)
    length, _rid, response_to, op = struct.unpack_from("<iiii", reply)
    assert op == 1 and response_to == 4242 and length == len(reply)
    n_returned = struct.unpack_from("<i", reply, 32)[0]
    assert n_returned == 1
    doc = bson.decode(reply[36:])
    assert doc["ok"] == 1.0 and doc["maxWireVersion"] >= 6


def test_upstream_killed_and_restarted(proxy_factory: Callable[..., ProxyProcess], open_config: Path,
                                        tmp_path: Path) -> None:
    server = FerretDB(data_dir=str(tmp_path / "data")).start()  # port 0; the restart below reuses its port
    try:
        p = proxy_factory(open_config, upstream=server.uri)
        seed: MongoClient = MongoClient(p.uri, serverSelectionTimeoutMS=10_000)
        seed.relay.kill.insert_one({"_id": "seed"})
        seed.close()

        def busy(k: int) -> str:
            c: MongoClient = MongoClient(p.uri, serverSelectionTimeoutMS=3000, socketTimeoutMS=5000,
                                         retryReads=False, retryWrites=False)
            try:
                end = time.monotonic() + 30
                while time.monotonic() < end:
                    try:
                        c.relay.kill.find_one({"_id": "seed"})
                    except PyMongoError:
                        return "error"
                return "no error"
            finally:
                c.close()

        with concurrent.futures.ThreadPoolExecutor(50) as ex:
            futures = [ex.submit(busy, k) for k in range(50)]
            time.sleep(1.5)
            server.kill()
            results = [f.result(timeout=30) for f in futures]
        assert results == ["error"] * 50
        # the proxy is still up: it accepts a TCP connection
        with socket.create_connection(("127.0.0.1", p.port), timeout=5):
            pass
        server.start()
        c: MongoClient = MongoClient(p.uri, serverSelectionTimeoutMS=15_000)
        try:
            assert c.relay.kill.find_one({"_id": "seed"}) == {"_id": "seed"}
        finally:
            c.close()
    finally:
        server.stop()


def test_no_upstream_closes_client(proxy_factory: Callable[..., ProxyProcess], open_config: Path,
                                   refused_port: int) -> None:
    dead = f"mongodb://127.0.0.1:{refused_port}"
    p = proxy_factory(open_config, upstream=dead)
    c: MongoClient = MongoClient(p.uri, serverSelectionTimeoutMS=1500, connectTimeoutMS=1000)
    try:
        with pytest.raises((ConnectionFailure, AutoReconnect, pymongo.errors.ServerSelectionTimeoutError)):
            c.admin.command("ping")
    finally:
        c.close()
    for _ in range(3):  # several attempts, one log line for the host
        with socket.create_connection(("127.0.0.1", p.port), timeout=5) as s:
            s.sendall(_op_query_ismaster(1))
            s.settimeout(5)
            # closed with no reply: a FIN, or a reset when the close found the
            # request still unread in the socket (reading waits for the upstream)
            try:
                got = s.recv(100)
            except ConnectionResetError:
                got = b""
            assert got == b""
    time.sleep(0.3)
    down = [e.get("worker") for e in p.events() if e["event"] == "upstream_down"]
    assert down and len(down) == len(set(down))  # one line per process (each worker keeps its own)
