"""Record the fuzzers' seed corpus from real pymongo traffic.

    .venv/bin/python -m tests.fuzz.make_corpus      # rewrites tests/fuzz/corpus/

Starts a FerretDB, puts a recording TCP relay (a thread of ours, no policy) in
front of it, runs a pymongo workload through it (handshake, CRUD with kind-1
sequences, cursors and getMore, aggregation with sub-pipelines, w:0 writes,
sessions, explain, bulkWrite-style batches), and writes:

* ``corpus/codec/*.bin``: one recorded client message each (after a chunk-size
  byte), plus OP_COMPRESSED (snappy, zlib, zstd) and checksummed variants of a
  few, since FerretDB negotiates neither;
* ``corpus/relay/*.bin``: short recorded sessions in the relay fuzzer's format
  ``[chunk][client length][client bytes][upstream bytes]``.

Only messages up to 4 KiB are kept, so the corpus stays small.
"""

from __future__ import annotations

import hashlib
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pymongo
from pymongo.errors import OperationFailure
from pymongo.write_concern import WriteConcern

from scalyproxy.backend import FerretDB
from scalyproxy.wire import compress_message
from scalyproxy.wire.op_msg import FLAG_CHECKSUM_PRESENT
from tests.fuzz.targets import pack_relay_input, split_frames

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"
MAX_KEEP = 4096


class Recorder:
    """A plain TCP relay that keeps every byte of both directions, per connection."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.sessions: list[tuple[bytearray, bytearray]] = []
        self.threads: list[threading.Thread] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            session = (bytearray(), bytearray())
            self.sessions.append(session)
            for src, dst, buf in ((client, server, session[0]), (server, client, session[1])):
                t = threading.Thread(target=self._pump, args=(src, dst, buf), daemon=True)
                t.start()
                self.threads.append(t)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, buf: bytearray) -> None:
        try:
            while data := src.recv(65536):
                buf += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.sock.close()


def attempt(call: Callable[[], object]) -> None:
    """Run one step; FerretDB refusing it (not implemented) is fine: the request was recorded."""
    try:
        call()
    except OperationFailure:
        pass


def workload(uri: str) -> None:
    client: pymongo.MongoClient = pymongo.MongoClient(uri, appname="corpus", maxPoolSize=1)
    try:
        posts = client.blog.blog_posts
        posts.drop()
        posts.insert_one({"author": "ann", "title": "t0", "body": "hello", "unique_views": 1})
        posts.insert_many(
            [{"author": f"a{i}", "title": f"t{i}", "comments": [{"author": "b", "comment": "c", "rank": i}]} for i in range(5)]
        )
        posts.find_one({"author": "ann", "title": "t0"})
        list(posts.find({"author": "a1"}, batch_size=2).sort("title", 1).limit(4))
        list(posts.find({}, batch_size=2))
        posts.update_one({"author": "ann", "title": "t0"}, {"$inc": {"unique_views": 1}})
        posts.update_many({"author": "a1"}, {"$set": {"body": "x"}})
        posts.replace_one({"author": "a2", "title": "t2"}, {"author": "a2", "title": "t2", "body": "r"})
        posts.find_one_and_update({"author": "a3", "title": "t3"}, {"$set": {"body": "y"}})
        posts.count_documents({"author": "a4"})
        posts.distinct("title", {"author": "a4"})
        # the targeted forms the C fast path answers (docs/policy.md, "Performance")
        posts.distinct("body", {"author": "a4", "title": "t4"})
        list(posts.aggregate([{"$match": {"author": "ann", "title": "t0"}}, {"$project": {"body": 1}}, {"$limit": 1}]))
        posts.update_one({"author": "ann", "title": "t0"}, {"$push": {"comments": {"author": "b", "comment": "c", "rank": 1}}})
        posts.update_one({"author": "up", "title": "u1"}, {"$setOnInsert": {"body": "new"}, "$set": {"unique_views": 0}}, upsert=True)
        posts.find_one_and_delete({"author": "a2", "title": "t2"})
        attempt(lambda: list(posts.aggregate([
            {"$match": {"author": "ann"}},
            {"$lookup": {"from": "blog_posts", "localField": "author", "foreignField": "author", "as": "same"}},
            {"$unionWith": {"coll": "blog_posts", "pipeline": [{"$match": {"author": "a1", "title": "t1"}}]}},
            {"$facet": {"n": [{"$count": "n"}]}},
        ])))
        posts.delete_one({"author": "a4", "title": "t4"})
        posts.delete_many({"author": "a3"})
        with client.start_session() as s:
            posts.find_one({"author": "ann", "title": "t0"}, session=s)
        attempt(lambda: client.blog.command("explain", {"find": "blog_posts", "filter": {"author": "ann"}}))
        client.blog.command({"count": "blog_posts", "query": {"author": "ann", "title": "t0"}})
        client.admin.command("ping")
        client.blog.list_collection_names()
        posts.create_index([("author", 1), ("title", 1)])
        attempt(lambda: posts.bulk_write([
            pymongo.InsertOne({"author": "bw", "title": "1"}),
            pymongo.UpdateOne({"author": "bw", "title": "1"}, {"$set": {"body": "b"}}),
            pymongo.DeleteOne({"author": "bw", "title": "1"}),
        ]))
        posts.drop()
        # last: FerretDB v1 wrongly answers moreToCome requests, which would
        # desynchronise pymongo for any command after these (the proxy drops them)
        w0 = client.blog.get_collection("blog_posts", write_concern=WriteConcern(w=0))
        w0.insert_one({"author": "w", "title": "w0"})
        w0.update_one({"author": "w", "title": "w0"}, {"$set": {"body": "z"}})
    finally:
        client.close()


def _name(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16] + ".bin"


def write_corpus(sessions: list[tuple[bytearray, bytearray]]) -> tuple[int, int]:
    codec_dir, relay_dir = CORPUS / "codec", CORPUS / "relay"
    for d in (codec_dir, relay_dir):
        d.mkdir(parents=True, exist_ok=True)
        for old in d.glob("*.bin"):
            old.unlink()
    messages: dict[bytes, None] = {}
    for sent, got in sessions:
        for raw in split_frames(bytes(sent), 48_000_000)[0] + split_frames(bytes(got), 48_000_000)[0]:
            if len(raw) <= MAX_KEEP:
                messages[raw] = None
    variants: dict[bytes, None] = dict(messages)
    for raw in list(messages)[:12]:
        if struct.unpack_from("<i", raw, 12)[0] != 2013:
            continue
        for cid in (1, 2, 3):
            try:
                variants[compress_message(raw, cid)] = None
            except Exception:  # hello and friends are never compressed
                pass
        variants[_with_checksum(raw)] = None
    for raw in [*variants, *doubtful_messages()]:
        seed = bytes([15]) + raw  # chunks of 16 bytes
        (codec_dir / _name(seed)).write_bytes(seed)
    relays = 0
    for sent, got in sessions:
        client_msgs = split_frames(bytes(sent), MAX_KEEP)[0]
        reply_msgs = split_frames(bytes(got), MAX_KEEP)[0]
        for start in range(0, len(client_msgs), 4):
            client = b"".join(client_msgs[start : start + 4])
            upstream = b"".join(reply_msgs[start : start + 4])
            if len(client) + len(upstream) <= 2 * MAX_KEEP:
                seed = pack_relay_input(4096, client, upstream)
                (relay_dir / _name(seed)).write_bytes(seed)
                relays += 1
    return len(variants), relays


def doubtful_messages() -> list[bytes]:
    """What no driver sends, for the lenient path: repeated keys and strings that are not
    UTF-8, in the name, $db, a filter, an update, a pipeline, a kind-1 document."""
    from tests.rawbson import arr, bad, doc, op_msg

    db = ("$db", "blog")
    twice = doc(("author", "a"), ("title", "t"), ("title", "u"))
    return [
        op_msg(doc(("find", "blog_posts"), ("filter", twice), db), 3),
        op_msg(doc(("find", "other"), ("filter", twice), ("comment", bad(b"x\xff")), db), 3),
        op_msg(doc(("find", "a"), ("find", "b"), db), 3),
        op_msg(doc(("ping", 1), ("$db", "admin"), ("$db", bad(b"\xff"))), 3),
        op_msg(doc(("update", bad(b"c\xfe")), ("updates", arr(doc(("q", doc()), ("u", doc(("$set", doc(("v", 1), ("v", 2)))))))), db), 3),
        op_msg(doc(("aggregate", "other"), ("pipeline", arr(doc(("$group", doc(("_id", doc(("v", "$v"), ("v", "$w")))))))), ("cursor", doc()), db), 3),
        op_msg(doc(("insert", "blog_posts"), db), 3, documents=[doc(("_id", 1), ("_id", 2)), doc((b"k\xc0", 1))]),
    ]


def _with_checksum(raw: bytes) -> bytes:
    from crc32c import crc32c

    flags = struct.unpack_from("<I", raw, 16)[0] | FLAG_CHECKSUM_PRESENT
    body = struct.pack("<i", len(raw) + 4) + raw[4:16] + struct.pack("<I", flags) + raw[20:]
    return body + struct.pack("<I", crc32c(body))


def main() -> None:
    server = FerretDB().start()
    try:
        host, port = server.uri.removeprefix("mongodb://").split("/")[0].rsplit(":", 1)
        recorder = Recorder((host, int(port)))
        workload(f"mongodb://127.0.0.1:{recorder.port}/?directConnection=true")
        recorder.close()
        for t in recorder.threads:
            t.join(5)
        codec, relay = write_corpus(recorder.sessions)
        print(f"wrote {codec} codec seeds and {relay} relay seeds under {CORPUS}")
    finally:
        server.stop()


if __name__ == "__main__":
    main()
