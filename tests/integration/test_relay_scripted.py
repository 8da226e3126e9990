"""Relay paths the real test server cannot show (compression, exhaust, a peer
dying mid-reply), against the scripted peer in tests/scripted_peer.py."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import bson
import pytest
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, ConnectionFailure

from scalyproxy.wire.framer import Frame
from scalyproxy.wire.op_compressed import compress_message
from scalyproxy.wire.op_msg import encode_op_msg
from tests.conftest import BLOG_CONFIG, ProxyProcess
from tests.scripted_peer import ScriptedPeer, default_handler, ok_reply

MORE_TO_COME = 1 << 1
EXHAUST_ALLOWED = 1 << 16


def recv_message(sock: socket.socket) -> bytes:
    buf = b""
    while len(buf) < 16:
        chunk = sock.recv(16 - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    length = struct.unpack_from("<i", buf)[0]
    while len(buf) < length:
        chunk = sock.recv(length - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def reply_body(message: bytes) -> dict[str, Any]:
    assert struct.unpack_from("<i", message, 12)[0] == 2013
    assert message[20] == 0
    return bson.decode(message[21:])


def hello(sock: socket.socket, compressors: list[str]) -> dict[str, Any]:
    sock.sendall(encode_op_msg({"hello": 1, "compression": compressors, "$db": "admin"}, request_id=1))
    return reply_body(recv_message(sock))


@pytest.mark.parametrize("compressor,cid", [("snappy", 1), ("zlib", 2), ("zstd", 3)])
def test_compressed_message_forwarded_byte_identical(
    proxy_factory: Callable[..., ProxyProcess], compressor: str, cid: int
) -> None:
    with ScriptedPeer(compressors=(compressor,)) as peer:
        p = proxy_factory(BLOG_CONFIG, upstream=peer.uri)
        with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
            assert hello(s, [compressor]).get("compression") == [compressor]
            # a targeted find: allowed, so the compressed bytes go upstream untouched
            plain = encode_op_msg(
                {"find": "blog_posts", "filter": {"author": "a", "title": "t"}, "$db": "blog"}, request_id=7
            )
            packed = compress_message(plain, cid)
            s.sendall(packed)
            reply = recv_message(s)
            assert struct.unpack_from("<i", reply, 8)[0] == 7
            assert peer.received[-1] == packed
            # a global find: the proxy decompressed it, saw it, refused it; nothing went upstream
            before = len(peer.received)
            bad = compress_message(
                encode_op_msg({"find": "blog_posts", "filter": {"author": "a"}, "$db": "blog"}, request_id=8), cid
            )
            s.sendall(bad)
            refusal = recv_message(s)
            body = reply_body(refusal)
            assert struct.unpack_from("<i", refusal, 8)[0] == 8
            assert body["codeName"] == "ScalyGlobalQuery" and body["ok"] == 0
            assert len(peer.received) == before


def test_exhaust_reply_stream_reaches_client(proxy_factory: Callable[..., ProxyProcess]) -> None:
    sent: list[bytes] = []

    def handler(peer: ScriptedPeer, conn: socket.socket, frame: Frame, body: dict[str, Any]) -> bytes | None:
        if "getMore" not in body:
            return default_handler(peer, conn, frame, body)
        rid = frame.header.request_id
        for i in range(3):
            flags = MORE_TO_COME if i < 2 else 0
            cursor_id = 0 if i == 2 else 99
            msg = encode_op_msg(
                {"cursor": {"id": bson.Int64(cursor_id), "ns": "blog.blog_posts", "nextBatch": [{"i": i}]}, "ok": 1.0},
                request_id=100 + i,
                response_to=rid,
                flags=flags,
            )
            rid = 100 + i
            sent.append(msg)
            conn.sendall(msg)
            time.sleep(0.05)
        return None

    with ScriptedPeer(handler=handler) as peer:
        p = proxy_factory(BLOG_CONFIG, upstream=peer.uri)
        with socket.create_connection(("127.0.0.1", p.port), timeout=10) as s:
            hello(s, [])
            s.sendall(
                encode_op_msg(
                    {"getMore": bson.Int64(99), "collection": "blog_posts", "$db": "blog"},
                    request_id=50,
                    flags=EXHAUST_ALLOWED,
                )
            )
            got = [recv_message(s) for _ in range(3)]
    assert got == sent
    assert [reply_body(m)["cursor"]["nextBatch"][0]["i"] for m in got] == [0, 1, 2]


def test_upstream_closing_mid_reply_gives_clean_error(proxy_factory: Callable[..., ProxyProcess]) -> None:
    def handler(peer: ScriptedPeer, conn: socket.socket, frame: Frame, body: dict[str, Any]) -> bytes | None:
        if "find" not in body:
            return default_handler(peer, conn, frame, body)
        full = ok_reply(frame, {"cursor": {"id": bson.Int64(0), "ns": "x.y", "firstBatch": [{"a": "b" * 500}]}, "ok": 1.0})
        conn.sendall(full[: len(full) // 2])
        conn.shutdown(socket.SHUT_RDWR)
        conn.close()
        raise OSError("closed on purpose")

    with ScriptedPeer(handler=handler) as peer:
        p = proxy_factory(BLOG_CONFIG, upstream=peer.uri)
        c: MongoClient = MongoClient(p.uri, serverSelectionTimeoutMS=5000, socketTimeoutMS=20_000,
                                     retryReads=False, directConnection=True)
        try:
            started = time.monotonic()
            with pytest.raises((AutoReconnect, ConnectionFailure)):
                c.x.y.find_one({"a": 1})
            assert time.monotonic() - started < 5  # an error, not a hang until the socket timeout
        finally:
            c.close()
