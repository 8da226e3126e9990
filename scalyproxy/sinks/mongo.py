"""``profile.sink: mongodb://HOST[:PORT]/DB.COLLECTION``: the fleet's profile in one collection.

One document per (shape, appName), ``_id`` ``"<shape id>:<appName>"`` (the
overflow row: ``"overflow"``). Each write is one unordered bulk of upserts that
add the delta: ``$inc`` of ``count``, ``outcomes.<outcome>``,
``latency.b<bucket>`` and ``latency.sum_s``; ``$min`` of ``first_seen_s``,
``$max`` of ``last_seen_s``; ``$setOnInsert`` of the namespace, command,
appName and the skeleton (as JSON text: its keys may start with ``$``). Every
proxy of a fleet adds into the same documents, so one ``find`` sees the fleet.

Each key sketch (:mod:`scalyproxy.evidence.sketches`) is one document too,
``_id`` ``"sketch:<namespace>:<key>"``, ``kind: "sketch"``: a sketch union is not
an update operator, so each is merged in the writer (read, union, replace if its
``rev`` is still the one read, else read again), which keeps the fleet's writes
from losing one another.
"""

from __future__ import annotations

import base64
import json
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
MAX_ATTEMPTS: Final = 20  # compare-and-swap rounds per sketch and write


def _sketch_id(namespace: str, key: str) -> str:
    return f"{SKETCH}:{namespace}:{key}"


def sketch_doc(namespace: str, key: str, salt: str | None, sketch: KeySketch, rev: int) -> dict[str, Any]:
    from bson.binary import Binary

    doc = sketch.to_json()
    return {"_id": _sketch_id(namespace, key), "kind": SKETCH, "version": VERSION, "namespace": namespace,
            "key": key, "salt_id": salt, "rev": rev, **doc,
            "hll": Binary(base64.b64decode(doc["hll"])), "freq": Binary(base64.b64decode(doc["freq"]))}


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
        try:
            if rows:
                ops = [UpdateOne({"_id": _id(r)}, update_of(r), upsert=True) for r in rows]
                self._coll().bulk_write(ops, ordered=False)
            for (namespace, key), sketch in table.sketches:
                self._merge_sketch(namespace, key, table.sketches.salt_id, sketch)
        except PyMongoError as exc:
            raise SinkError(f"{self.description}: {type(exc).__name__}: {str(exc)[:300]}") from None
        return len(rows) + len(table.sketches)

    def _merge_sketch(self, namespace: str, key: str, salt: str | None, sketch: KeySketch) -> None:
        """Union one sketch into its document: read, merge, replace if unchanged (else again)."""
        from pymongo.errors import DuplicateKeyError

        coll = self._coll()
        ident = _sketch_id(namespace, key)
        for _ in range(MAX_ATTEMPTS):
            held = coll.find_one({"_id": ident})
            if held is None:
                try:
                    coll.insert_one(sketch_doc(namespace, key, salt, sketch, 1))
                    return
                except DuplicateKeyError:
                    continue  # another proxy inserted it first: merge into theirs
            if held.get("salt_id") not in (None, salt):
                raise SinkError(f"{self.description}: the sketch {ident} was made with another profile.salt "
                                f"(salt id {held.get('salt_id')}, this proxy's {salt}); give every proxy the same salt")
            try:
                merged = KeySketch.from_json(held)
            except ValueError as exc:
                raise SinkError(f"{self.description}: document {ident!r}: {exc}") from None
            merged.merge(sketch)
            rev = int(held.get("rev") or 0)
            if coll.replace_one({"_id": ident, "rev": rev},
                                sketch_doc(namespace, key, salt, merged, rev + 1)).matched_count:
                return
        raise SinkError(f"{self.description}: the sketch {ident} kept changing under {MAX_ATTEMPTS} merges")

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
                if doc.get("kind") == SKETCH:
                    sketches.append(doc)
                else:
                    rows.append(row_of(doc))
            except ValueError as exc:
                raise SinkError(f"{self.description}: not a profile: {exc}") from None
        try:
            table.sketches = SketchTable()
            table.sketches.merge_entries(sketches)
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
