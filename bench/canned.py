"""A minimal MongoDB wire server that answers every command at once, from canned replies.

    .venv/bin/python -m bench.canned [--host 127.0.0.1] [--port 0]

Prints ``listening <port>`` once it accepts connections, then serves until
SIGTERM/SIGINT. It reads only what it needs to choose a reply: the header, the
flag bits and the command name (the first key of the body); for writes it
counts the documents of the kind-1 sections (``{n: k, ok: 1}``). ``hello`` and
``isMaster`` get a mongos-like reply (OP_REPLY for the legacy OP_QUERY form),
``find`` and ``getMore`` a one-document cursor, everything else ``{ok: 1}``.
A request with ``moreToCome`` gets no reply. It exists so that the benchmark
measures the proxy's own cost, not the backend's. Not a MongoDB: no storage.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import socket
import struct
from typing import cast

import uvloop

from bench import messages as m

_HEADER = m.HEADER
_INT = struct.Struct("<i")
_REPLY_PREFIX = struct.Struct("<iiiiIB")  # header, flagBits, section kind 0
_OP_REPLY_PREFIX = struct.Struct("<iiiiiqii")  # header, responseFlags, cursorID, startingFrom, numberReturned
WRITES = frozenset({b"insert", b"update", b"delete"})
HELLOS = frozenset({b"hello", b"ismaster", b"isMaster"})
CURSORS = frozenset({b"find", b"getMore", b"aggregate"})


class Canned:
    """The reply bodies, built once."""

    def __init__(self) -> None:
        self.hello = m.hello_reply_body()
        self.cursor = m.cursor_reply_body()
        self.ok = m.OK_BODY
        self.writes = {n: m.write_reply_body(n) for n in range(0, 2)}
        self.next_id = 0

    def op_msg(self, response_to: int, body: bytes) -> bytes:
        self.next_id = (self.next_id + 1) & 0x7FFFFFFF
        return _REPLY_PREFIX.pack(21 + len(body), self.next_id, response_to, m.OP_MSG, 0, 0) + body

    def op_reply(self, response_to: int, body: bytes) -> bytes:
        self.next_id = (self.next_id + 1) & 0x7FFFFFFF
        return _OP_REPLY_PREFIX.pack(36 + len(body), self.next_id, response_to, m.OP_REPLY, 8, 0, 0, 1) + body

    def reply(self, message: bytes | bytearray | memoryview) -> bytes | None:
        """The reply to one whole request (None: moreToCome, no reply)."""
        _len, request_id, _rto, op_code = _HEADER.unpack_from(message, 0)
        if op_code == m.OP_QUERY:  # the legacy handshake
            return self.op_reply(request_id, self.hello)
        if op_code != m.OP_MSG:
            return self.op_msg(request_id, self.ok)
        if _INT.unpack_from(message, 16)[0] & m.FLAG_MORE_TO_COME:
            return None
        name = bytes(message[26 : message.index(0, 26)])
        if name in CURSORS:
            body = self.cursor
        elif name in WRITES:
            n = m.count_documents(message)
            body = self.writes.get(n) or m.write_reply_body(n)
        elif name in HELLOS:
            body = self.hello
        else:
            body = self.ok
        return self.op_msg(request_id, body)


class CannedConnection(asyncio.Protocol):
    __slots__ = ("canned", "transport", "buf")

    def __init__(self, canned: Canned) -> None:
        self.canned = canned
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self.buf and len(data) >= 4 and _INT.unpack_from(data, 0)[0] == len(data):
            reply = self.canned.reply(data)  # the common case: one whole request
            if reply is not None and self.transport is not None:
                self.transport.write(reply)
            return
        buf = self.buf
        buf += data
        out = []
        pos = 0
        while len(buf) - pos >= 4:
            length = _INT.unpack_from(buf, pos)[0]
            if length < 16 or len(buf) - pos < length:
                break
            reply = self.canned.reply(buf[pos : pos + length])
            if reply is not None:
                out.append(reply)
            pos += length
        if pos:
            del buf[:pos]
        if out and self.transport is not None:
            self.transport.writelines(out)


async def serve(host: str, port: int) -> None:
    canned = Canned()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: CannedConnection(canned), host, port, backlog=4096)
    print(f"listening {server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="canned-reply MongoDB wire server for the benchmark")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
