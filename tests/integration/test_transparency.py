"""Issue 15, sections 2 and 3, against the real server: what the guard does not read,
the server judges, and the client sees exactly the server's own answer.

Each command (sent over a raw socket: drivers cannot send repeated keys or bytes
that are not UTF-8) goes once straight to FerretDB and once through the proxy
with config/blog.yaml (``unknown_namespaces: allow``), each time on a freshly
reset database; the two replies must be the same document (ok, n, code, errmsg,
...), and the connection must answer a ping afterwards.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from typing import Any

import bson
import pymongo
import pytest
from bson.codec_options import CodecOptions

from tests.conftest import ProxyProcess
from tests.rawbson import arr, bad, doc, op_msg

DB = "transparency"
_READ = CodecOptions(unicode_decode_error_handler="surrogateescape")


CLOSED: dict[str, Any] = {"<closed>": True}


def _recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def _reply(s: socket.socket) -> bytes | None:
    head = _recv_exact(s, 16)
    rest = None if head is None else _recv_exact(s, struct.unpack_from("<i", head)[0] - 16)
    return None if head is None or rest is None else head + rest


def exchange(port: int, message: bytes) -> dict[str, Any]:
    """Send one OP_MSG on a fresh socket: its reply's body, then a ping must answer on
    the same socket; or CLOSED when the server closes the connection instead (FerretDB
    does, for some commands with a repeated key: then so must the proxy)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(message)
        reply = _reply(s)
        if reply is None:
            return CLOSED
        assert struct.unpack_from("<i", reply, 8)[0] == struct.unpack_from("<i", message, 4)[0]
        body: dict[str, Any] = bson.decode(reply[21 : 21 + struct.unpack_from("<i", reply, 21)[0]], _READ)
        s.sendall(op_msg(doc(("ping", 1), ("$db", "admin")), 99))
        pong = _reply(s)
        assert pong is not None and bson.decode(pong[21:])["ok"] == 1, "the connection is unusable after"
    return body


def _comparable(reply: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in reply.items() if k not in ("$clusterTime", "operationTime")}
    cursor = out.get("cursor")
    if isinstance(cursor, dict) and cursor.get("id"):
        out["cursor"] = {**cursor, "id": "<non-zero>"}
    return out


Reset = Callable[[], None]


@pytest.fixture()
def reset(direct_client: pymongo.MongoClient) -> Iterator[Reset]:
    """Drop the test database and seed {_id: 1, v: 0} in transparency.c."""

    def run() -> None:
        direct_client.drop_database(DB)
        direct_client[DB]["c"].insert_one({"_id": 1, "v": 0, "w": 5})

    yield run
    direct_client.drop_database(DB)


def same_answer(message: bytes, ferretdb: Any, proxy: ProxyProcess, reset: Reset) -> dict[str, Any]:
    reset()
    direct = exchange(int(ferretdb.uri.rsplit(":", 1)[1]), message)
    reset()
    proxied = exchange(proxy.port, message)
    assert _comparable(proxied) == _comparable(direct), (direct, proxied)
    assert proxied.get("code") not in range(29001, 29007), proxied  # the server's answer, not the proxy's
    return direct


D = ("$db", DB)
CASES: dict[str, bytes] = {
    # issue 15, section 2: parts no rule reads, on an undeclared collection
    "update with $set twice": op_msg(
        doc(("update", "c"), ("updates", arr(doc(("q", doc(("_id", 1))), ("u", doc(("$set", doc(("a", 1))), ("$set", doc(("b", 2)))))))), D), 5
    ),
    "update with a field twice in $set": op_msg(
        doc(("update", "c"), ("updates", arr(doc(("q", doc(("_id", 1))), ("u", doc(("$set", doc(("v", 1), ("v", 2)))))))), D), 5
    ),
    "aggregate with $group _id repeating a key": op_msg(
        doc(("aggregate", "c"), ("pipeline", arr(doc(("$group", doc(("_id", doc(("v", "$v"), ("v", "$w")))))))), ("cursor", doc()), D), 5
    ),
    "createIndexes with a key repeating a field": op_msg(
        doc(("createIndexes", "c"), ("indexes", arr(doc(("key", doc(("v", -1), ("v", 1))), ("name", "v_twice")))), D), 5
    ),
    "insert of a document with two _id": op_msg(doc(("insert", "c"), ("documents", arr(doc(("_id", 7), ("_id", 8), ("x", 1)))), D), 5),
    "insert of two _id in a kind-1 sequence": op_msg(doc(("insert", "c"), D), 5, documents=[doc(("_id", 7), ("_id", 8))]),
    "find with a projection repeating a key": op_msg(
        doc(("find", "c"), ("filter", doc(("_id", 1))), ("projection", doc(("v", 1), ("v", 0))), D), 5
    ),
    "find with a filter repeating a key": op_msg(doc(("find", "c"), ("filter", doc(("v", 0), ("v", 1))), D), 5),
    "insert of a string that is not UTF-8": op_msg(doc(("insert", "c"), ("documents", arr(doc(("_id", 9), ("s", bad(b"x\xff"))))), D), 5),
    "create of a collection whose name is not UTF-8": op_msg(doc(("create", bad(b"c\xff")), D), 5),
    "renameCollection to a name that is not UTF-8": op_msg(
        doc(("renameCollection", f"{DB}.c"), ("to", bad(f"{DB}.d\xff".encode("latin-1"))), ("$db", "admin")), 5
    ),
    # section 3: malformed commands on namespaces the policy does not govern
    "aggregate without a pipeline": op_msg(doc(("aggregate", "c"), ("cursor", doc()), D), 5),
    "aggregate with a pipeline that is a document": op_msg(doc(("aggregate", "c"), ("pipeline", doc(("$match", doc()))), ("cursor", doc()), D), 5),
    "insert with a kind-1 sequence it does not take": op_msg(doc(("insert", "c"), D), 5, docs=[doc(("_id", 3))]),
    "find with a filter that is a string": op_msg(doc(("find", "c"), ("filter", "x"), D), 5),
}


@pytest.mark.parametrize("name", list(CASES))
def test_the_proxy_answers_as_the_server_does(
    name: str, ferretdb: Any, blog_proxy: ProxyProcess, reset: Reset
) -> None:
    same_answer(CASES[name], ferretdb, blog_proxy, reset)


def test_a_projection_repeat_on_a_declared_collection_is_the_servers_too(
    ferretdb: Any, blog_proxy: ProxyProcess, direct_client: pymongo.MongoClient
) -> None:
    """blog.blog_posts is declared: its filter is read (and targets), its projection is not."""
    message = op_msg(
        doc(("find", "blog_posts"), ("filter", doc(("author", "a"), ("title", "t"))), ("projection", doc(("body", 1), ("body", 0))), ("$db", "blog")), 5
    )
    direct = exchange(int(ferretdb.uri.rsplit(":", 1)[1]), message)
    proxied = exchange(blog_proxy.port, message)
    assert _comparable(proxied) == _comparable(direct)


def test_the_same_repeat_in_a_filter_of_a_declared_collection_is_refused(blog_proxy: ProxyProcess) -> None:
    """The positive control: where the verdict reads, the proxy answers, not the server."""
    message = op_msg(doc(("find", "blog_posts"), ("filter", doc(("author", "a"), ("title", "t"), ("title", "u"))), ("$db", "blog")), 5)
    reply = exchange(blog_proxy.port, message)
    assert (reply["ok"], reply["code"], reply["codeName"]) == (0, 29005, "ScalyProtocolError")
