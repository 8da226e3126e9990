"""A scripted upstream for R7 that serves 48 MB replies to many connections from one thread.

FerretDB cannot send a reply larger than 16 MB, and tests/scripted_peer.py uses
a thread per connection (too many for 1,000 slowloris clients). This one is a
single selector loop: it answers the handshake and ``ping`` like a mongos, and a
``find`` on the collection ``big`` with one OP_MSG reply of just under
48,000,000 bytes (the default maxMessageSizeBytes), written without blocking
as fast as the proxy reads it.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections import deque
from typing import Any

import bson

from scalyproxy.wire import Framer
from tests.scripted_peer import HELLO_REPLY, _body_of, ok_reply

BIG_SIZE = 47_900_000


def _big_reply() -> bytes:
    pad = "x" * (BIG_SIZE - 200)
    body = bson.encode({"cursor": {"id": bson.Int64(0), "ns": "r7.big", "firstBatch": [{"pad": pad}]}, "ok": 1.0})
    return struct.pack("<iiii", 16 + 5 + len(body), 1, 0, 2013) + b"\x00\x00\x00\x00\x00" + body


class _Conn:
    __slots__ = ("sock", "framer", "out")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.framer = Framer()
        self.out: deque[memoryview] = deque()


class BigReplyPeer:
    def __init__(self) -> None:
        self.big = memoryview(_big_reply())
        self.sel = selectors.DefaultSelector()
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=2048)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        self.sel.register(self.listener, selectors.EVENT_READ)
        self.stop_flag = threading.Event()
        self.big_requests = 0
        self.thread = threading.Thread(target=self._loop, daemon=True)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def __enter__(self) -> BigReplyPeer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_flag.set()
        self.thread.join(5)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self.sel.close()

    def _loop(self) -> None:
        while not self.stop_flag.is_set():
            for key, events in self.sel.select(0.05):
                if key.fileobj is self.listener:
                    self._accept()
                    continue
                conn: _Conn = key.data
                if events & selectors.EVENT_READ and not self._read(conn):
                    continue
                if events & selectors.EVENT_WRITE:
                    self._write(conn)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        sock.setblocking(False)
        self.sel.register(sock, selectors.EVENT_READ, _Conn(sock))

    def _close(self, conn: _Conn) -> None:
        self.sel.unregister(conn.sock)
        conn.sock.close()

    def _read(self, conn: _Conn) -> bool:
        try:
            data = conn.sock.recv(65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return False
        conn.framer.feed(data)
        while (frame := conn.framer.next_frame()) is not None:
            self._answer(conn, frame, _body_of(frame))
        self._write(conn)
        return True

    def _answer(self, conn: _Conn, frame: Any, body: dict[str, Any]) -> None:
        name = next(iter(body), "").lower()
        rid = frame.header.request_id
        if name == "find" and body.get("find") == "big":
            self.big_requests += 1
            conn.out.append(memoryview(struct.pack("<iii", len(self.big), 7, rid)))
            conn.out.append(self.big[12:])
        elif name in ("hello", "ismaster"):
            conn.out.append(memoryview(ok_reply(frame, dict(HELLO_REPLY))))
        else:
            conn.out.append(memoryview(ok_reply(frame, {"ok": 1.0})))

    def _write(self, conn: _Conn) -> None:
        try:
            while conn.out:
                sent = conn.sock.send(conn.out[0])
                if sent < len(conn.out[0]):
                    conn.out[0] = conn.out[0][sent:]
                    break
                conn.out.popleft()
        except BlockingIOError:
            pass
        except OSError:
            self._close(conn)
            return
        want = selectors.EVENT_READ | (selectors.EVENT_WRITE if conn.out else 0)
        self.sel.modify(conn.sock, want, conn)
