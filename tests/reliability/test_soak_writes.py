"""R8: a soak of w:0 writes (moreToCome) mixed with acknowledged writes and cursors,
through the proxy to the real FerretDB.

Every write the driver considers done (an acknowledged write that returned, a
w:0 write that was sent) must be in the database exactly once: documents are
counted and checksummed, and ``$inc`` counters (which a duplicated or lost
update would skew) are summed. FerretDB v1 wrongly answers moreToCome requests;
the relay drops those replies, which is what makes w:0 work through the proxy.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pymongo import MongoClient
from pymongo.write_concern import WriteConcern

from tests.conftest import ProxyProcess
from tests.reliability.helpers import report, scaled, write_config

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

DB = "r8soak"


def checksum(docs: list[dict[str, Any]]) -> int:
    return sum(zlib.crc32(f"{d['_id']}|{d['t']}|{d['i']}|{d['pad']}".encode()) for d in docs) & 0xFFFFFFFFFFFF


class Writer:
    """One thread's writes, and what the driver reported done."""

    def __init__(self, client: MongoClient, t: int, ops: int) -> None:
        self.t, self.ops = t, ops
        self.acked = client[DB].docs
        self.unacked = client[DB].get_collection("docs", write_concern=WriteConcern(w=0))
        self.counters = client[DB].counters
        self.counters_w0 = client[DB].get_collection("counters", write_concern=WriteConcern(w=0))
        self.done: list[dict[str, Any]] = []
        self.incs = 0
        self.cursor_reads = 0
        self.error: BaseException | None = None

    def doc(self, i: int) -> dict[str, Any]:
        return {"_id": f"{self.t}-{i}", "t": self.t, "i": i, "pad": "p" * (i % 50)}

    def run(self) -> None:
        try:
            for i in range(self.ops):
                self.step(i)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def step(self, i: int) -> None:
        kind = i % 8
        if kind in (0, 1):
            d = self.doc(i)
            self.acked.insert_one(d)
            self.done.append(d)
        elif kind in (2, 3):
            d = self.doc(i)
            self.unacked.insert_one(d)  # returns once sent: the driver considers it done
            self.done.append(d)
        elif kind == 4:
            batch = [self.doc(i), self.doc(i + self.ops)]  # kind-1 sequence, w:0
            self.unacked.insert_many(batch)
            self.done += batch
        elif kind == 5:
            self.counters.update_one({"_id": self.t}, {"$inc": {"n": 1}}, upsert=True)
            self.incs += 1
        elif kind == 6:
            self.counters_w0.update_one({"_id": self.t}, {"$inc": {"n": 1}}, upsert=False)
            self.incs += 1  # the acknowledged upsert at i=5 created the counter before
        else:
            self.read_back(i)

    def read_back(self, i: int) -> None:
        """A cursor over this thread's recent documents: every acknowledged insert must be there."""
        recent = {"t": self.t, "i": {"$gte": i - 64, "$lt": i}}
        seen = {d["_id"] for d in self.acked.find(recent, batch_size=7)}
        acked_ids = [f"{self.t}-{j}" for j in range(max(i - 64, 0), i) if j % 8 in (0, 1)]
        missing = [x for x in acked_ids if x not in seen]
        assert not missing, f"acknowledged inserts missing from a later read: {missing[:5]}"
        self.cursor_reads += 1


def test_r8_soak_w0_and_acknowledged_writes(
    proxy_factory: Callable[..., ProxyProcess], direct_client: MongoClient, tmp_path: Path
) -> None:
    threads_n = scaled(4, 8)
    ops = scaled(160, 3000)
    proxy = proxy_factory(write_config(tmp_path / "r8.yaml"))
    direct_client.drop_database(DB)
    client: MongoClient = MongoClient(proxy.uri, serverSelectionTimeoutMS=10_000, maxPoolSize=threads_n)
    started = time.monotonic()
    try:
        writers = [Writer(client, t, ops) for t in range(threads_n)]
        threads = [threading.Thread(target=w.run) for w in writers]
        for th in threads:
            th.start()
        for th in threads:
            th.join(3000)
        for w in writers:
            assert w.error is None, repr(w.error)
    finally:
        client.close()
    expected = [d for w in writers for d in w.done]
    coll = direct_client[DB].docs
    deadline = time.monotonic() + 30  # w:0 writes may still be on their way
    while coll.count_documents({}) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.2)
    stored = list(coll.find({}))
    counters = {c["_id"]: c["n"] for c in direct_client[DB].counters.find({})}
    report(
        "R8",
        threads=threads_n,
        writes_verified=len(expected) + sum(w.incs for w in writers),
        documents=len(expected),
        unacknowledged_documents=sum(1 for d in expected if d["i"] % 8 in (2, 3, 4) or d["i"] >= ops),
        counter_increments=sum(w.incs for w in writers),
        cursor_reads=sum(w.cursor_reads for w in writers),
        seconds=round(time.monotonic() - started, 1),
    )
    assert len(stored) == len(expected), f"{len(stored)} documents stored, {len(expected)} written"
    assert len({d["_id"] for d in stored}) == len(stored)
    assert checksum(stored) == checksum(expected)
    assert counters == {w.t: w.incs for w in writers}, counters
    assert proxy.proc is not None and proxy.proc.poll() is None
