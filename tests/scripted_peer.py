"""A scripted MongoDB wire peer, for what the real test server cannot show.

FerretDB neither compresses nor streams exhaust replies, and a real server
cannot be told to die in the middle of a reply. This small server of ours
answers OP_MSG / OP_QUERY hellos like a mongos, records every message it
receives byte for byte, and otherwise replies as the test scripts it. It is
never used where the real server can show the behaviour.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import bson
from bson.codec_options import CodecOptions

from scalyproxy.wire import header as wh
from scalyproxy.wire.framer import Frame, Framer
from scalyproxy.wire.op_compressed import decompress_message
from scalyproxy.wire.op_msg import encode_op_msg
from scalyproxy.wire.op_query import encode_op_reply

HELLO_REPLY: dict[str, Any] = {
    "ismaster": True,
    "isWritablePrimary": True,
    "msg": "isdbgrid",
    "maxBsonObjectSize": 16 * 1024 * 1024,
    "maxMessageSizeBytes": 48_000_000,
    "maxWriteBatchSize": 100_000,
    "minWireVersion": 0,
    "maxWireVersion": 21,
    "ok": 1.0,
}

# A handler gets (peer, conn socket, frame, decoded body) and returns the bytes to send (or None).
Handler = Callable[["ScriptedPeer", socket.socket, Frame, dict[str, Any]], bytes | None]


#: The peer reads what the proxy forwards, which may repeat a key or hold bytes that
#: are not UTF-8 (the server answers those): read leniently, never refused.
_READ = CodecOptions(unicode_decode_error_handler="surrogateescape")


def _body_of(frame: Frame) -> dict[str, Any]:
    try:
        return _decoded_body(frame)
    except Exception:  # noqa: BLE001 - bytes this peer cannot read: an empty body
        return {}


def _decoded_body(frame: Frame) -> dict[str, Any]:
    data = bytes(frame.data)
    op = frame.header.op_code
    if op == wh.OP_COMPRESSED:
        data = decompress_message(frame, 48_000_000)
        op = struct.unpack_from("<i", data, 12)[0]
    if op == wh.OP_MSG:
        # flags (4) then the kind-0 section
        assert data[20] == 0
        length = struct.unpack_from("<i", data, 21)[0]
        return bson.decode(data[21 : 21 + length], _READ)
    if op == wh.OP_QUERY:
        pos = 20
        pos = data.index(b"\x00", pos) + 1 + 8
        length = struct.unpack_from("<i", data, pos)[0]
        return bson.decode(data[pos : pos + length], _READ)
    return {}


def ok_reply(frame: Frame, body: dict[str, Any], request_id: int = 1) -> bytes:
    if frame.header.op_code == wh.OP_QUERY:
        return encode_op_reply([body], request_id=request_id, response_to=frame.header.request_id)
    return encode_op_msg(body, request_id=request_id, response_to=frame.header.request_id)


def default_handler(peer: ScriptedPeer, conn: socket.socket, frame: Frame, body: dict[str, Any]) -> bytes | None:
    name = next(iter(body), "").lower()
    if name in ("hello", "ismaster"):
        reply = dict(HELLO_REPLY)
        if peer.compressors and "compression" in body:
            chosen = [c for c in body["compression"] if c in peer.compressors]
            if chosen:
                reply["compression"] = chosen
        return ok_reply(frame, reply)
    if frame.header.op_code == wh.OP_MSG and struct.unpack_from("<I", bytes(frame.data), 16)[0] & 2:
        return None  # moreToCome: no reply
    return ok_reply(frame, {"ok": 1.0, "n": 1})


@dataclass
class ScriptedPeer:
    """A threaded TCP server on 127.0.0.1:<free port>."""

    handler: Handler = default_handler
    compressors: tuple[str, ...] = ()
    received: list[bytes] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _sock: socket.socket | None = None
    _threads: list[threading.Thread] = field(default_factory=list)
    _conns: list[socket.socket] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> ScriptedPeer:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        s.settimeout(0.2)
        self._sock = s
        self.port = s.getsockname()[1]
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept_loop(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _serve(self, conn: socket.socket) -> None:
        framer = Framer()
        try:
            conn.settimeout(0.2)  # inside the try: stop() may have closed it already
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                framer.feed(data)
                while (frame := framer.next_frame()) is not None:
                    raw = bytes(frame.data)
                    self.received.append(raw)
                    body = _body_of(frame)
                    self.bodies.append(body)
                    out = self.handler(self, conn, frame, body)
                    if out:
                        conn.sendall(out)
        except OSError:
            return
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._sock is not None:
            self._sock.close()
        for c in self._conns:
            try:
                c.close()
            except OSError:
                pass
        for t in self._threads:
            t.join(2)

    def __enter__(self) -> ScriptedPeer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
