"""The requests and replies of the benchmark, built once as wire bytes.

Requests look like what pymongo sends (an ``lsid`` in every command, the
documents of a write in a kind-1 section) and target ``blog.blog_posts`` of
``config/blog.yaml``, so that the full policy really checks them: inserts
carry the shard key (author, title) and match the declared structure; finds
give the full shard key.

Pure: no I/O. Each message is built with request id 0; senders patch bytes 4..8
(:func:`with_request_id`) or cycle through a prebuilt ring (:func:`ring`).
"""

from __future__ import annotations

import datetime
import struct
import uuid
from collections.abc import Mapping
from typing import Any

import bson
from bson.binary import Binary, UuidRepresentation

OP_MSG = 2013
OP_QUERY = 2004
OP_REPLY = 1
FLAG_MORE_TO_COME = 1 << 1
HEADER = struct.Struct("<iiii")
DB = "blog"
COLLECTION = "blog_posts"
LSID = {"id": Binary.from_uuid(uuid.UUID(int=0x5CA1E), UuidRepresentation.STANDARD)}


def op_msg(body: Mapping[str, Any], sequences: Mapping[str, list[bytes]] | None = None,
           request_id: int = 0, response_to: int = 0, flags: int = 0) -> bytes:
    """An OP_MSG: kind-0 ``body`` then one kind-1 section per entry of ``sequences`` (encoded docs)."""
    parts = [struct.pack("<I", flags), b"\x00", bson.encode(body)]
    for name, docs in (sequences or {}).items():
        payload = name.encode() + b"\x00" + b"".join(docs)
        parts.append(b"\x01" + struct.pack("<i", 4 + len(payload)) + payload)
    rest = b"".join(parts)
    return HEADER.pack(16 + len(rest), request_id, response_to, OP_MSG) + rest


def with_request_id(message: bytes, request_id: int) -> bytes:
    return message[:4] + struct.pack("<i", request_id) + message[8:]


def ring(message_of: Any, count: int) -> list[bytes]:
    """``count`` variants: ``message_of(i)`` with request id ``i + 1``."""
    return [with_request_id(message_of(i), i + 1) for i in range(count)]


# -- requests -----------------------------------------------------------------------


def hello() -> bytes:
    body = {"hello": 1, "client": {"application": {"name": "scaly-bench"},
                                   "driver": {"name": "scaly-bench", "version": "1"}}, "$db": "admin"}
    return op_msg(body)


def post(i: int, body_size: int = 850) -> dict[str, Any]:
    """A blog post matching config/blog.yaml, ``body_size`` characters of text."""
    return {
        "author": f"user{i % 997:03d}",
        "title": f"t{i:06d}",
        "body": ("lorem ipsum dolor sit amet " * (body_size // 27 + 1))[:body_size],
        "unique_views": i % 10_000,
        "comments": [{"author": "reader", "comment": "nice post", "rank": 3}],
    }


def insert_one(i: int) -> bytes:
    """Workload 1: one ~1.1 KB document carrying the shard key (like ``insert_one``)."""
    body = {"insert": COLLECTION, "ordered": True, "lsid": LSID, "$db": DB}
    return op_msg(body, {"documents": [bson.encode(post(i))]})


def find_by_key(i: int) -> bytes:
    """Workload 2: a find by the full shard key, ~108 bytes on the wire."""
    body = {"find": COLLECTION, "filter": {"author": f"user{i % 997:03d}", "title": f"t{i:06d}"},
            "$db": DB}
    return op_msg(body)


def insert_many(i: int, batch: int = 1000, doc_size: int = 1000) -> bytes:
    """Workload 3: ``batch`` documents of ~``doc_size`` bytes (like ``insert_many``)."""
    body = {"insert": COLLECTION, "ordered": True, "lsid": LSID, "$db": DB}
    docs = [bson.encode(post(i * batch + j, doc_size - 160)) for j in range(batch)]
    return op_msg(body, {"documents": docs})


def big_insert(total: int = 47_000_000, doc_size: int = 1_000_000) -> bytes:
    """Workload 4: one insert message of about ``total`` bytes (documents of ~1 MB)."""
    count = max(1, total // doc_size)
    body = {"insert": COLLECTION, "ordered": True, "lsid": LSID, "$db": DB}
    docs = [bson.encode(post(i, doc_size - 160)) for i in range(count)]
    return op_msg(body, {"documents": docs})


# -- replies (what the canned server sends) -------------------------------------------


def hello_reply_body() -> bytes:
    """What a mongos answers to hello (just what drivers and the proxy read)."""
    return bson.encode({
        "isWritablePrimary": True, "ismaster": True, "msg": "isdbgrid",
        "maxBsonObjectSize": 16 * 1024 * 1024, "maxMessageSizeBytes": 48_000_000,
        "maxWriteBatchSize": 100_000, "localTime": datetime.datetime(2024, 1, 1),
        "logicalSessionTimeoutMinutes": 30, "connectionId": 1,
        "minWireVersion": 0, "maxWireVersion": 21, "readOnly": False, "ok": 1.0,
    })


def cursor_reply_body() -> bytes:
    doc = {"_id": bson.ObjectId(b"scalymongo!!"), **post(1, 40)}
    return bson.encode({"cursor": {"firstBatch": [doc], "id": 0, "ns": f"{DB}.{COLLECTION}"}, "ok": 1.0})


def write_reply_body(n: int) -> bytes:
    return bson.encode({"n": n, "ok": 1.0})


OK_BODY = bson.encode({"ok": 1.0})


def count_documents(message: bytes | bytearray | memoryview) -> int:
    """Documents in the kind-1 sections of an OP_MSG."""
    n, pos, end = 0, 20, len(message)
    while pos < end:
        kind = message[pos]
        size = struct.unpack_from("<i", message, pos + 1)[0]
        if kind == 1:
            stop = pos + 1 + size
            doc = message.index(0, pos + 5) + 1  # past the identifier
            while doc < stop:
                doc += struct.unpack_from("<i", message, doc)[0]
                n += 1
        elif kind != 0:
            break
        pos += 1 + size
    return n


# -- the mixed workload: an application's traffic ---------------------------------------

#: Kinds of the mixed workload with their share in percent (sum 100), in schedule order.
MIX: tuple[tuple[str, int], ...] = (
    ("find", 50), ("update", 15), ("insert", 10), ("delete", 5), ("aggregate", 10), ("count", 5),
    ("refused", 3), ("warned", 2),
)
#: Posts the reads and updates of the mix address (the backend is seeded with post(0..SEEDED-1)).
SEEDED = 20
#: The mix inserts posts under this author with MIX_KEYS titles and deletes them by the same keys.
MIX_AUTHOR = "mix-writer"
MIX_KEYS = 16
#: A second sharded collection, in warn mode for global queries in the mix config: the warned part.
WARN_COLLECTION = "post_comments"
WARN_COLLECTION_CONFIG: dict[str, Any] = {
    "structure": {"post_author": "string", "post_title": "string", "comment": "string"},
    "rules": {"global_query": "warn"},
    "indexes": [{"fields": ["post_author", "post_title"], "shard_key": True}],
}


def schedule(weights: tuple[tuple[str, int], ...] = MIX) -> list[str]:
    """One cycle of ``sum(weights)`` kinds, each as often as its weight and spread evenly
    (smooth weighted round robin: deterministic, no long run of one kind)."""
    total = sum(w for _, w in weights)
    current = {kind: 0 for kind, _ in weights}
    out = []
    for _ in range(total):
        for kind, w in weights:
            current[kind] += w
        best = max(current, key=lambda k: current[k])  # first of the maxima: the order of MIX
        current[best] -= total
        out.append(best)
    return out


def _key(i: int) -> dict[str, str]:
    """The full shard key of seeded post ``i % SEEDED`` (as :func:`post` writes it)."""
    i %= SEEDED
    return {"author": f"user{i % 997:03d}", "title": f"t{i:06d}"}


def _write(command: str, identifier: str, statement: dict[str, Any]) -> bytes:
    body = {command: COLLECTION, "ordered": True, "lsid": LSID, "$db": DB}
    return op_msg(body, {identifier: [bson.encode(statement)]})


def mix_message(kind: str, i: int) -> bytes:
    """The ``i``-th command of ``kind``, as pymongo sends it (lsid, kind-1 sections for writes)."""
    if kind == "find":  # find_one by the full shard key
        return op_msg({"find": COLLECTION, "filter": _key(i), "limit": 1, "singleBatch": True,
                       "lsid": LSID, "$db": DB})
    if kind == "update":  # update_one by the full shard key: an edit of the body (the post stays 1 KB)
        edit = {"$set": {"body": post(i)["body"].replace("lorem", f"v{i % 1000:03d}", 1)}, "$inc": {"unique_views": 1}}
        return _write("update", "updates", {"q": _key(i), "u": edit, "multi": False, "upsert": False})
    if kind == "insert":  # insert_one of a 1 KB post
        doc = post(i)
        doc.update(author=MIX_AUTHOR, title=f"m{i % MIX_KEYS:02d}")
        return _write("insert", "documents", doc)
    if kind == "delete":  # delete_many by the full shard key (the posts the inserts added)
        return _write("delete", "deletes", {"q": {"author": MIX_AUTHOR, "title": f"m{i % MIX_KEYS:02d}"},
                                            "limit": 0})
    if kind == "aggregate":  # a pipeline whose first stage is a targeted $match
        return op_msg({"aggregate": COLLECTION, "pipeline": [{"$match": _key(i)}, {"$project": {"body": 0}}],
                       "cursor": {}, "lsid": LSID, "$db": DB})
    if kind == "count":  # count_documents' older sibling: the count command by the full key
        return op_msg({"count": COLLECTION, "query": _key(i), "lsid": LSID, "$db": DB})
    if kind == "refused":  # a global query: half the shard key (ScalyGlobalQuery under the policy)
        return op_msg({"find": COLLECTION, "filter": {"author": _key(i)["author"]}, "lsid": LSID, "$db": DB})
    if kind == "warned":  # a global query on a collection whose global_query rule is in warn mode
        return op_msg({"find": WARN_COLLECTION, "filter": {"post_author": _key(i)["author"]}, "lsid": LSID,
                       "$db": DB})
    raise ValueError(f"unknown kind of the mix: {kind!r}")


def mix_ring(count: int = 1000) -> list[tuple[str, bytes]]:
    """``count`` commands in the order of :func:`schedule`, repeated; request ids ``1..count``."""
    cycle = schedule()
    seen = {kind: 0 for kind, _ in MIX}
    out = []
    for n in range(count):
        kind = cycle[n % len(cycle)]
        out.append((kind, with_request_id(mix_message(kind, seen[kind]), n + 1)))
        seen[kind] += 1
    return out


def find_and_modify_by_key(i: int) -> bytes:
    """A targeted ``find_one_and_update`` (outside the mix, as the fast path answers it)."""
    body = {"findAndModify": COLLECTION, "query": _key(i), "update": {"$inc": {"unique_views": 1}},
            "new": True, "lsid": LSID, "$db": DB}
    return op_msg(body)


def distinct_by_key(i: int) -> bytes:
    """A targeted ``distinct`` (outside the mix)."""
    return op_msg({"distinct": COLLECTION, "key": "body", "query": _key(i), "lsid": LSID, "$db": DB})


def targeted(kind: str, i: int) -> bytes:
    """The ``i``-th targeted command of a kind the C fast path answers: the mix's own, or the two
    kinds the mix leaves out (findAndModify, distinct)."""
    extra = {"findAndModify": find_and_modify_by_key, "distinct": distinct_by_key}
    return extra[kind](i) if kind in extra else mix_message(kind, i)
