"""The driver-tier checks for PyMongo, sync (MongoClient) and async (AsyncMongoClient).

Usage: python pymongo_driver.py {sync|async} MONGODB_URI AUTHOR

Prints one JSON line per check, {"check", "ok", "detail"}, after a first line naming
the driver and its version and before a last line {"done": true}. The same check list
runs with both clients: every client call goes through ``aw()``, which awaits what the
async client returns and passes the sync client's results through.

The data set is the documents of blog.blog_posts whose author is AUTHOR; the caller
removes them before the run (see tests/integration/test_drivers.py).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import pymongo
from pymongo import monitoring
from pymongo.errors import OperationFailure

DB, COLL = "blog", "blog_posts"
MARKER = "scaly:allow-global"
GLOBAL_MSG = "Some or all of the shard key was not specified.  Missing fields were title."
CURSOR_DOCS, BATCH = 50, 10
HEARTBEAT_MS, HEARTBEAT_WAIT_S = 500, 3.0


class CheckFailed(Exception):
    """A check's expectation did not hold; the message says what was seen."""


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)


async def aw(value: Any) -> Any:
    """Await ``value`` when the async client returned an awaitable; else return it."""
    return await value if inspect.isawaitable(value) else value


def emit(**fields: Any) -> None:
    print(json.dumps(fields, default=str), flush=True)


class Recorder(monitoring.CommandListener, monitoring.ServerHeartbeatListener):
    """Counts what the client sent and how its monitor's heartbeats went."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] = []
        self.beats_ok = 0
        self.beats_failed = 0
        self.beats_awaited = 0

    def started(self, event: Any) -> None:
        if isinstance(event, monitoring.CommandStartedEvent):
            self.commands.append((event.command_name, dict(event.command)))

    def succeeded(self, event: Any) -> None:
        if isinstance(event, monitoring.ServerHeartbeatSucceededEvent):
            self.beats_ok += 1
            self.beats_awaited += int(event.awaited)

    def failed(self, event: Any) -> None:
        if isinstance(event, monitoring.ServerHeartbeatFailedEvent):
            self.beats_failed += 1

    def names_since(self, mark: int) -> list[str]:
        return [name for name, _ in self.commands[mark:]]


def doc(author: str, title: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"author": author, "title": title, "body": f"{title} by {author}", "unique_views": 1}
    base.update(extra)
    return base


def server_error(exc: BaseException) -> tuple[int | None, str, str]:
    """(code, codeName, errmsg) of a server error reply carried by the driver's error."""
    expect(isinstance(exc, OperationFailure), f"not an OperationFailure: {exc!r}")
    assert isinstance(exc, OperationFailure)
    details = exc.details or {}
    return exc.code, str(details.get("codeName", "")), str(details.get("errmsg", ""))


class Run:
    """One run of every check against one client."""

    def __init__(self, client: Any, rec: Recorder, author: str) -> None:
        self.client, self.rec, self.author = client, rec, author
        self.coll = client[DB][COLL]
        self.titles: set[str] = set()  # what this run expects to be stored
        self.streaming = False  # the server's hello offers streaming (has topologyVersion)

    async def connect(self) -> str:
        reply = await aw(self.client.admin.command("ping"))
        expect(reply.get("ok") == 1, f"ping replied {reply}")
        hello = await aw(self.client.admin.command("hello"))
        self.streaming = "topologyVersion" in hello
        return f"appName set; ping ok; maxWireVersion={hello.get('maxWireVersion')}"

    async def insert(self) -> str:
        first = doc(self.author, "first", comments=[{"author": "ann", "comment": "hi", "rank": 1}])
        res = await aw(self.coll.insert_one(first))
        expect(res.acknowledged and res.inserted_id is not None, "insert_one not acknowledged")
        many = [doc(self.author, f"c{i:02d}") for i in range(CURSOR_DOCS)]
        res2 = await aw(self.coll.insert_many(many))
        expect(len(res2.inserted_ids) == CURSOR_DOCS, f"insert_many stored {len(res2.inserted_ids)}")
        self.titles |= {"first"} | {d["title"] for d in many}
        return f"insert_one + insert_many({CURSOR_DOCS})"

    async def find_shard_key(self) -> str:
        found = await aw(self.coll.find_one({"author": self.author, "title": "first"}))
        expect(found is not None, "find_one by (author, title) found nothing")
        expect(found["comments"][0]["rank"] == 1, f"unexpected document {found}")
        return "find_one({author, title}) returned the document"

    async def cursor_getmore(self) -> str:
        titles = [f"c{i:02d}" for i in range(CURSOR_DOCS)]
        mark = len(self.rec.commands)
        cursor = self.coll.find({"author": self.author, "title": {"$in": titles}}).batch_size(BATCH)
        docs = await aw(cursor.to_list())
        getmores = self.rec.names_since(mark).count("getMore")
        expect(len(docs) == CURSOR_DOCS, f"cursor returned {len(docs)} documents")
        expect(getmores >= CURSOR_DOCS // BATCH - 1, f"only {getmores} getMore commands")
        return f"{len(docs)} documents, batchSize {BATCH}, {getmores} getMores"

    async def update(self) -> str:
        key = {"author": self.author, "title": "first"}
        res = await aw(self.coll.update_one(key, {"$set": {"body": "edited"}, "$inc": {"unique_views": 1}}))
        expect(res.matched_count == 1 and res.modified_count == 1, f"matched {res.matched_count}")
        after = await aw(self.coll.find_one(key))
        expect(after["body"] == "edited" and after["unique_views"] == 2, f"after update: {after}")
        return "update_one by shard key: $set + $inc applied"

    async def delete(self) -> str:
        key = {"author": self.author, "title": "c49"}
        res = await aw(self.coll.delete_one(key))
        expect(res.deleted_count == 1, f"deleted {res.deleted_count}")
        expect(await aw(self.coll.find_one(key)) is None, "document still there")
        self.titles.discard("c49")
        return "delete_one by shard key"

    async def session(self) -> str:
        session = await aw(self.client.start_session(causal_consistency=True))
        mark = len(self.rec.commands)
        try:
            await aw(self.coll.insert_one(doc(self.author, "session"), session=session))
            got = await aw(self.coll.find_one({"author": self.author, "title": "session"}, session=session))
        finally:
            await aw(session.end_session())
        expect(got is not None, "the session's read did not see its write")
        sent = self.rec.commands[mark:]
        expect(all("lsid" in cmd for name, cmd in sent if name in ("insert", "find")), "no lsid sent")
        self.titles.add("session")
        return "causally consistent session: insert then find with the same lsid"

    async def transaction(self) -> dict[str, Any]:
        session = await aw(self.client.start_session())
        try:
            await aw(session.start_transaction())
            try:
                await aw(self.coll.insert_one(doc(self.author, "txn"), session=session))
                await aw(session.commit_transaction())
            except OperationFailure as exc:
                await aw(session.abort_transaction())
                return await self._txn_refused(exc)
        finally:
            await aw(session.end_session())
        expect(await aw(self.coll.find_one({"author": self.author, "title": "txn"})) is not None, "lost")
        self.titles.add("txn")
        return {"detail": "transaction committed"}

    async def _txn_refused(self, exc: OperationFailure) -> dict[str, Any]:
        code, name, msg = server_error(exc)
        expect(not name.startswith("Scaly"), f"the proxy refused the transaction: {name}")
        reply = await aw(self.client.admin.command("ping"))
        expect(reply.get("ok") == 1, "connection unusable after the refused transaction")
        found = await aw(self.coll.find_one({"author": self.author, "title": "txn"}))
        expect(found is None, "a refused transaction wrote its document")
        limit = f"backend has no transactions: {name} ({code}): {msg}"
        return {"detail": "server error relayed, client still usable", "backend_limit": limit}

    async def global_refused(self) -> str:
        mark = len(self.rec.commands)
        try:
            await aw(self.coll.find_one({"author": self.author}))
        except OperationFailure as exc:
            kind = type(exc).__name__
            code, name, msg = server_error(exc)
        else:
            raise CheckFailed("the global query was not refused")
        expect((code, name) == (29001, "ScalyGlobalQuery"), f"got {code} {name}")
        expect(msg == GLOBAL_MSG, f"errmsg {msg!r}")
        sent = self.rec.names_since(mark).count("find")
        expect(sent == 1, f"the driver sent the refused find {sent} times")
        return f"{kind} code {code} {name}: {msg} (not retried)"

    async def global_allowed(self) -> str:
        cursor = self.coll.find({"author": self.author}, comment=MARKER)
        got = {d["title"] for d in await aw(cursor.to_list())}
        expect(got == self.titles, f"expected {len(self.titles)} titles, got {len(got)}")
        return f"comment={MARKER!r}: {len(got)} documents"

    async def schema_refused(self) -> str:
        bad = doc(self.author, "bad-schema", unique_views="lots")
        kind, code, msg = await self._refused_insert(self.coll.insert_one, bad)
        return f"insert_one: {kind} code {code} {msg}; nothing written"

    async def schema_batch_refused(self) -> str:
        batch = [doc(self.author, "batch-ok"), doc(self.author, "batch-bad", unique_views="lots")]
        kind, code, msg = await self._refused_insert(self.coll.insert_many, batch)
        return f"insert_many(good, bad): {kind} code {code} {msg}; nothing written"

    async def _refused_insert(self, call: Callable[[Any], Any], payload: Any) -> tuple[str, Any, str]:
        try:
            await aw(call(payload))
        except OperationFailure as exc:
            kind = type(exc).__name__
            code, name, msg = server_error(exc)
            expect(not exc.has_error_label("RetryableWriteError"), "labelled RetryableWriteError")
        else:
            raise CheckFailed("the insert was not refused")
        expect((code, name) == (29003, "ScalySchemaViolation"), f"got {code} {name}: {msg}")
        titles = [d["title"] for d in (payload if isinstance(payload, list) else [payload])]
        for title in titles:
            left = await aw(self.coll.find_one({"author": self.author, "title": title}))
            expect(left is None, f"{title!r} was written")
        return kind, code, f"{name}: {msg}"

    async def heartbeats(self, started: float) -> str:
        before = self.rec.beats_ok
        await asyncio.sleep(HEARTBEAT_WAIT_S)
        during = self.rec.beats_ok - before
        expect(during >= 3, f"only {during} heartbeats in {HEARTBEAT_WAIT_S}s")
        expect(self.rec.beats_failed == 0, f"{self.rec.beats_failed} heartbeats failed")
        expect(self.rec.beats_awaited > 0 or not self.streaming, "hello has topologyVersion but no heartbeat streamed")
        reply = await aw(self.client.admin.command("ping"))
        expect(reply.get("ok") == 1, "ping after the wait failed")
        mode = "streaming" if self.rec.beats_awaited else "polling"
        total = time.monotonic() - started
        return f"{during} heartbeats in {HEARTBEAT_WAIT_S:.0f}s ({mode}, {self.rec.beats_awaited} awaited), connected {total:.1f}s"


CHECKS = (
    "connect", "insert", "find_shard_key", "cursor_getmore", "update", "delete", "session",
    "transaction", "global_refused", "global_allowed", "schema_refused", "schema_batch_refused",
)


async def run_checks(run: Run, started: float) -> None:
    for name in (*CHECKS, "heartbeats"):
        try:
            method = getattr(run, name)
            result = await (method(started) if name == "heartbeats" else method())
        except Exception as exc:  # a check failing must not hide the others
            emit(check=name, ok=False, detail=f"{type(exc).__name__}: {exc}")
            if name == "connect":
                return
            continue
        fields = result if isinstance(result, dict) else {"detail": result}
        emit(check=name, ok=True, **fields)


async def main(mode: str, uri: str, author: str) -> None:
    rec = Recorder()
    cls = pymongo.AsyncMongoClient if mode == "async" else pymongo.MongoClient
    emit(driver=f"pymongo ({mode})", version=pymongo.version,
         runtime=f"{platform.python_implementation()} {platform.python_version()}")
    started = time.monotonic()
    client: Any = cls(uri, appname=f"scaly-driver-{author}", heartbeatFrequencyMS=HEARTBEAT_MS,
                      serverSelectionTimeoutMS=10_000, event_listeners=[rec])
    try:
        await run_checks(Run(client, rec, author), started)
    finally:
        await aw(client.close())
    emit(done=True)


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("sync", "async"):
        sys.exit(__doc__)
    asyncio.run(main(*sys.argv[1:]))
