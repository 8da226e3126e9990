"""``profile.sink: mongodb://HOST[:PORT]/DB.COLLECTION``: the fleet's profile in one collection.

One document per (shape, appName), ``_id`` ``"<shape id>:<appName>"`` (the
overflow row: ``"overflow"``). Each write is one unordered bulk of upserts that
add the delta: ``$inc`` of ``count``, ``outcomes.<outcome>``,
``latency.b<bucket>`` and ``latency.sum_s``; ``$min`` of ``first_seen_s``,
``$max`` of ``last_seen_s``; ``$setOnInsert`` of the namespace, command,
appName and the skeleton (as JSON text: its keys may start with ``$``). Every
proxy of a fleet adds into the same documents, so one ``find`` sees the fleet.

The key sketches (:mod:`scalyproxy.evidence.sketches`) are documents too,
``kind: "sketch"``: a sketch union is no update operator, and a read-merge-replace
loses a concurrent writer's merge on servers whose conditional replace is not
atomic (FerretDB's is not), so each flush *inserts* its delta as a new part,
and reading unions the parts. When a key has more than ``MAX_PARTS`` parts, the
writer that takes the key's lock (an insert of a fixed ``_id``, which one
writer wins) folds them into one part that names the parts it ``replaces``, then
deletes them; a reader skips replaced parts, so a fold that dies halfway counts
nothing twice.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Final

from scalyproxy.evidence.sketches import KeySketch, SketchTable
from scalyproxy.evidence.table import OVERFLOW_ID, VERSION, ProfileTable, Row, shape_hex
from scalyproxy.sinks import SinkError


def _id(row: Row) -> str:
    return OVERFLOW_ID if row.shape is None else f"{shape_hex(row.shape_id)}:{row.app or ''}"


def update_of(row: Row) -> dict[str, Any]:
    """The upsert that adds one row's figures into its document."""
    inc: dict[str, Any] = {"count": row.count, "latency.sum_s": row.latency_sum}
    for outcome, n in row.all_outcomes().items():
        inc[f"outcomes.{outcome}"] = n
    for index, n in row.latency.items():
        inc[f"latency.b{index}"] = n
    insert: dict[str, Any] = {"version": VERSION}
    if row.shape is not None:
        insert.update(namespace=row.namespace, command=row.command, app=row.app,
                      shape_id=shape_hex(row.shape_id), shape=json.dumps(row.shape, separators=(",", ":")))
    return {"$inc": inc, "$min": {"first_seen_s": row.first_seen}, "$max": {"last_seen_s": row.last_seen},
            "$setOnInsert": insert}


def row_of(doc: dict[str, Any]) -> Row:
    """A sink document back as a row (ValueError when it is not one)."""
    latency = doc.get("latency") or {}
    buckets = {k[1:]: v for k, v in latency.items() if isinstance(k, str) and k[:1] == "b" and k[1:].isdigit()}
    shape = doc.get("shape")
    try:
        return Row.from_json({
            **{k: doc.get(k) for k in ("namespace", "command", "app", "count", "outcomes", "first_seen_s", "last_seen_s")},
            "shape_id": OVERFLOW_ID if doc.get("_id") == OVERFLOW_ID else doc.get("shape_id"),
            "shape": json.loads(shape) if isinstance(shape, str) else None,
            "latency": {"buckets": buckets, "sum_s": latency.get("sum_s", 0.0)},
        })
    except ValueError as exc:
        raise ValueError(f"document {doc.get('_id')!r}: {exc}") from None


SKETCH: Final = "sketch"
MAX_PARTS: Final = 16  # parts of one key sketch before a writer folds them into one
STALE_LOCK_S: Final = 60.0  # a fold lock older than this was left by a writer that died


def sketch_doc(namespace: str, key: str, salt: str | None, sketch: KeySketch,
               replaces: Sequence[str] = ()) -> dict[str, Any]:
    """One part of a key sketch, under a fresh ``_id``; ``replaces``: the parts it folds."""
    from bson.binary import Binary

    doc = sketch.to_json()
    return {"_id": f"{SKETCH}:{namespace}:{key}:{uuid.uuid4().hex}", "kind": SKETCH, "version": VERSION,
            "namespace": namespace, "key": key, "salt_id": salt, "replaces": list(replaces), **doc,
            "hll": Binary(base64.b64decode(doc["hll"])), "freq": Binary(base64.b64decode(doc["freq"]))}


def live_parts(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The parts that count: those no other part says it replaces (a fold that died halfway)."""
    parts = list(docs)
    replaced = {i for d in parts for i in d.get("replaces") or ()}
    return [d for d in parts if d["_id"] not in replaced]


class MongoSink:
    def __init__(self, uri: str, timeout_s: float = 5.0) -> None:
        from pymongo.uri_parser import parse_uri

        parsed = parse_uri(uri)
        self.database, self.collection = parsed["database"], parsed["collection"]
        if not self.database or not self.collection:
            raise SinkError("the sink URI must end with /DB.COLLECTION")
        self.uri = uri
        self.timeout_ms = int(timeout_s * 1000)
        hosts = ",".join(f"{h}:{p}" for h, p in parsed["nodelist"])
        self.description = f"mongodb://{hosts}/{self.database}.{self.collection}"  # no credentials
        self._client: Any = None

    def _coll(self) -> Any:
        if self._client is None:
            import pymongo

            self._client = pymongo.MongoClient(
                self.uri, serverSelectionTimeoutMS=self.timeout_ms, connectTimeoutMS=self.timeout_ms,
                socketTimeoutMS=self.timeout_ms * 2, appname="scalyproxy-profile")
        return self._client[self.database][self.collection]

    def write(self, table: ProfileTable) -> int:
        from pymongo import UpdateOne
        from pymongo.errors import PyMongoError

        rows = list(table)
        if table.overflow.count or table.overflow.latency:
            rows.append(table.overflow)
        if not rows and not table.sketches:
            return 0
        written = 0
        try:
            if rows:
                ops = [UpdateOne({"_id": _id(r)}, update_of(r), upsert=True) for r in rows]
                self._coll().bulk_write(ops, ordered=False)
                written = len(rows)
                # delivered: a failure below retries only the sketches, never adds the rows twice
                table.rows.clear()
                table.overflow = Row(0, None, None, None, None, table.since)
            for ident, sketch in list(table.sketches):
                self._add_sketch(ident[0], ident[1], table.sketches.salt_id, sketch)
                del table.sketches.keys[ident]
                written += 1
        except PyMongoError as exc:
            raise SinkError(f"{self.description}: {type(exc).__name__}: {str(exc)[:300]}") from None
        return written

    def _add_sketch(self, namespace: str, key: str, salt: str | None, sketch: KeySketch) -> None:
        """Insert the delta as a new part (an insert never loses a concurrent one), then fold
        the key's parts into one when there are many (under a lock that is an insert too)."""
        coll = self._coll()
        coll.insert_one(sketch_doc(namespace, key, salt, sketch))
        query = {"kind": SKETCH, "namespace": namespace, "key": key}
        if coll.count_documents(query) > MAX_PARTS:
            self._fold(coll, namespace, key, query)

    def _fold(self, coll: Any, namespace: str, key: str, query: dict[str, Any]) -> None:
        from pymongo.errors import DuplicateKeyError

        lock = f"{SKETCH}-lock:{namespace}:{key}"
        try:
            coll.insert_one({"_id": lock, "kind": "sketch-lock", "at": time.time()})
        except DuplicateKeyError:  # another writer folds it; a lock left by a dead one goes
            coll.delete_one({"_id": lock, "at": {"$lt": time.time() - STALE_LOCK_S}})
            return
        try:
            docs = list(coll.find(query))
            parts = live_parts(docs)
            dead = [d["_id"] for d in docs if d not in parts]
            if dead:
                coll.delete_many({"_id": {"$in": dead}})
            salts = {p.get("salt_id") for p in parts}
            if len(parts) < 2 or len(salts) > 1:
                return  # parts of several salts stay apart (advise counts the mismatch)
            merged = KeySketch.from_json(parts[0])
            for part in parts[1:]:
                merged.merge(KeySketch.from_json(part))
            ids = [p["_id"] for p in parts]
            coll.insert_one(sketch_doc(namespace, key, parts[0].get("salt_id"), merged, ids))
            coll.delete_many({"_id": {"$in": ids}})
        except ValueError as exc:
            raise SinkError(f"{self.description}: a sketch of {namespace} {key}: {exc}") from None
        finally:
            coll.delete_one({"_id": lock})

    def read(self) -> ProfileTable:
        from pymongo.errors import PyMongoError

        table = ProfileTable(10_000_000)
        try:
            docs = list(self._coll().find({}))
        except PyMongoError as exc:
            raise SinkError(f"{self.description}: {type(exc).__name__}: {str(exc)[:300]}") from None
        rows = []
        sketches = []
        for doc in docs:
            try:
                if doc.get("kind") == "sketch-lock":
                    continue
                if doc.get("kind") == SKETCH:
                    sketches.append(doc)
                else:
                    rows.append(row_of(doc))
            except ValueError as exc:
                raise SinkError(f"{self.description}: not a profile: {exc}") from None
        try:
            table.sketches = SketchTable()
            table.sketches.merge_entries(live_parts(sketches))
        except ValueError as exc:
            raise SinkError(f"{self.description}: not a profile: {exc}") from None
        if rows:
            table.since = min(r.first_seen for r in rows)
        table.merge_rows(rows)
        return table

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
