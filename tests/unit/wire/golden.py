"""Golden messages produced by pymongo's own message builders (not by our codec).

``pymongo.message._op_msg`` (C ``_cmessage._op_msg`` underneath) builds OP_MSG
requests, pulling ``documents`` of an insert into a kind-1 section;
``pymongo._cmessage._query_message`` builds OP_QUERY; ``pymongo.message._compress``
wraps a message in OP_COMPRESSED with a compression context. pymongo's own
ZstdContext needs the ``backports.zstd`` module (not installed), so zstd and
noop use the same ``_compress`` with a small context of the same shape.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

import zstandard
from bson.codec_options import DEFAULT_CODEC_OPTIONS
from bson.int64 import Int64
from bson.objectid import ObjectId
from pymongo import _cmessage  # type: ignore[attr-defined]
from pymongo import message as pm
from pymongo.compression_support import SnappyContext, ZlibContext
from pymongo.read_concern import ReadConcern


class ZstdContext:
    """Same interface as pymongo.compression_support.ZstdContext, on zstandard."""

    compressor_id = 3

    @staticmethod
    def compress(data: bytes) -> bytes:
        return zstandard.ZstdCompressor().compress(data)


class NoopContext:
    compressor_id = 0

    @staticmethod
    def compress(data: bytes) -> bytes:
        return bytes(data)


@dataclass(frozen=True)
class Golden:
    name: str
    message: bytes  # as pymongo built it
    request_id: int
    body: dict[str, Any]  # the command document expected in the body section
    sequences: dict[str, list[dict[str, Any]]]
    db: str


def _op_msg(command: dict[str, Any], db: str, ctx: Any = None) -> tuple[int, bytes]:
    rid, msg, _size, _max = pm._op_msg(0, command, db, None, DEFAULT_CODEC_OPTIONS, ctx)
    return rid, msg


def insert_1000() -> Golden:
    docs = [{"_id": i, "name": f"user{i}", "tags": ["a", "b"], "n": {"x": i}} for i in range(1000)]
    command = {"insert": "users", "ordered": True, "documents": docs}
    rid, msg = _op_msg(command, "app")
    return Golden(
        "insert_1000",
        msg,
        rid,
        {"insert": "users", "ordered": True, "$db": "app"},
        {"documents": docs},
        "app",
    )


def find() -> Golden:
    command = pm._gen_find_command(
        "users", {"age": {"$gt": 30}}, {"name": 1}, 0, -5, None, None, ReadConcern()
    )
    expected = {**command, "$db": "app"}
    rid, msg = _op_msg(command, "app")
    return Golden("find", msg, rid, expected, {}, "app")


def get_more() -> Golden:
    command = pm._gen_get_more_command(Int64(8_000_000_123), "users", 50, None, None)
    expected = {**command, "$db": "app"}
    rid, msg = _op_msg(command, "app")
    return Golden("getMore", msg, rid, expected, {}, "app")


def hello_op_query(name: str = "isMaster") -> Golden:
    query = {
        name: 1,
        "helloOk": True,
        "client": {"driver": {"name": "PyMongo", "version": "4.20"}},
        "compression": ["zlib"],
    }
    rid, msg, _max = _cmessage._query_message(
        0, "admin.$cmd", 0, -1, query, None, DEFAULT_CODEC_OPTIONS
    )
    return Golden(f"{name}_op_query", msg, rid, query, {}, "admin")


def compressed(ctx: Any, label: str) -> Golden:
    docs = [{"_id": ObjectId(), "v": "x" * 50, "i": i} for i in range(20)]
    command = {"insert": "logs", "documents": docs}
    rid, msg = _op_msg(command, "app", ctx)
    return Golden(
        f"compressed_{label}",
        msg,
        rid,
        {"insert": "logs", "$db": "app"},
        {"documents": docs},
        "app",
    )


def all_golden() -> list[Golden]:
    return [
        insert_1000(),
        find(),
        get_more(),
        hello_op_query("isMaster"),
        hello_op_query("ismaster"),
        hello_op_query("hello"),
        compressed(NoopContext(), "noop"),
        compressed(SnappyContext(), "snappy"),
        compressed(ZlibContext(6), "zlib"),
        compressed(ZstdContext(), "zstd"),
    ]


def request_id_of(message: bytes) -> int:
    return int(struct.unpack_from("<i", message, 4)[0])
