"""The load generator: a separate process, driven line by line over stdin/stdout.

    .venv/bin/python -m bench.loadgen --target 127.0.0.1:PORT --workload find --connections 32

Each connection is a request/response loop (no pipelining) over a raw socket
(an asyncio Protocol on uvloop), sending prebuilt messages (see
:mod:`bench.messages`), so that the generator costs little per round trip.
Every connection sends a ``hello`` first, as drivers do.

Every reply is checked on its bytes: it must say ``ok: 1.0`` and carry no ``errmsg``
(no error, no write error), or else it counts as an error. With ``--workload mix`` the
commands follow :func:`bench.messages.mix_ring` (the kinds in a fixed interleaving by
their shares), and with ``--policy`` (the path applies the mix config) the global query
of kind ``refused`` must instead come back refused with ScalyGlobalQuery (code 29001).
The result counts the replies of each kind and the refusals.

Protocol with the orchestrator (one line each way):
  -> ``ready``                   all connections are open and handshaken
  <- ``go``                      start the loops (warm-up)
  <- ``mark``                    start counting: round trips and latencies from now
  <- ``stop``                    stop counting; the loops end
  -> ``{json}``                  the result (round trips, seconds, latency percentiles)

With ``--workload idle`` the connections only handshake, then stay open until
``stop``; the result says how many are open.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import struct
import sys
import time
from array import array
from collections.abc import Callable
from typing import Any, cast

import uvloop

from bench import messages as m

_INT = struct.Struct("<i")
RING = 1024

RING_MIX = 1000  # ten cycles of the mix's 100-command schedule
OK_1 = b"\x01ok\x00" + struct.pack("<d", 1.0)
GLOBAL_QUERY = b"\x10code\x00" + struct.pack("<i", 29001)  # ScalyGlobalQuery, as an int32 code


def _single(workload: str, build: Callable[[int], bytes], count: int) -> list[tuple[str, bytes]]:
    return [(workload, msg) for msg in m.ring(build, count)]


WORKLOADS: dict[str, Callable[[], list[tuple[str, bytes]]]] = {
    "insert": lambda: _single("insert", m.insert_one, RING),
    "find": lambda: _single("find", m.find_by_key, RING),
    "insert_many": lambda: _single("insert_many", m.insert_many, 4),
    "mix": lambda: m.mix_ring(RING_MIX),
    "idle": lambda: [],
}


class Stats:
    """Shared by the connections of one process."""

    def __init__(self) -> None:
        self.counting = False
        self.running = False
        self.count = 0
        self.latencies = array("q")
        self.errors = 0
        self.refused = 0
        self.kinds: array[int] = array("q")
        self.bad_reply = b""  # the first reply that failed its check (for the report)
        self.mark_at = 0.0
        self.stop_at = 0.0


class Client(asyncio.Protocol):
    """One connection: send, wait for the whole reply, record, send the next."""

    def __init__(self, plan: Plan, offset: int, stats: Stats, handshaken: asyncio.Future[None]) -> None:
        self.plan = plan
        self.messages = plan.messages
        self.index = offset
        self.stats = stats
        self.handshaken: asyncio.Future[None] | None = handshaken
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.want = 0  # length of the reply being read (0: not known yet)
        self.sent = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.transport.write(m.with_request_id(m.hello(), 0x7FFF0000))

    def send_next(self) -> None:
        messages = self.messages
        self.index = (self.index + 1) % len(messages)
        self.sent = time.perf_counter_ns()
        assert self.transport is not None
        self.transport.write(messages[self.index])

    def data_received(self, data: bytes) -> None:
        if not self.buf and len(data) >= 4 and _INT.unpack_from(data, 0)[0] == len(data):
            self.reply_done(data)
            return
        self.buf += data
        while len(self.buf) >= 4:
            length = _INT.unpack_from(self.buf, 0)[0]
            if len(self.buf) < length:
                return
            reply = bytes(self.buf[:length])
            del self.buf[:length]
            self.reply_done(reply)

    def reply_done(self, reply: bytes) -> None:
        if self.handshaken is not None:  # the hello reply
            self.handshaken.set_result(None)
            self.handshaken = None
            return
        stats = self.stats
        if stats.counting:
            stats.latencies.append(time.perf_counter_ns() - self.sent)
            stats.count += 1
            index = self.index
            plan = self.plan
            stats.kinds[plan.kind[index]] += 1
            if plan.refuse[index]:
                good = GLOBAL_QUERY in reply
                stats.refused += good
            else:
                good = OK_1 in reply and b"errmsg" not in reply
            if not good:
                stats.errors += 1
                if not stats.bad_reply:
                    stats.bad_reply = reply[:400]
        if stats.running:
            self.send_next()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.handshaken is not None and not self.handshaken.done():
            self.handshaken.set_exception(ConnectionError(f"closed before the handshake: {exc}"))
        elif self.stats.running:
            self.stats.errors += 1


def quantiles(samples: array[int], points: int = 1000) -> list[float]:
    """``points`` evenly spaced quantiles of the latencies, in ms (for merging processes)."""
    if not samples:
        return []
    ordered = sorted(samples)
    n = len(ordered)
    return [ordered[min(n - 1, int((i + 0.5) * n / points))] / 1e6 for i in range(points)]


class Plan:
    """The messages a connection cycles through, each with its kind and the reply it expects."""

    def __init__(self, ring: list[tuple[str, bytes]], policy: bool) -> None:
        self.names = sorted({kind for kind, _ in ring})
        self.messages = [msg for _, msg in ring]
        self.kind = [self.names.index(kind) for kind, _ in ring]
        self.refuse = [policy and kind == "refused" for kind, _ in ring]


async def open_all(host: str, port: int, count: int, plan: Plan, stats: Stats) -> list[Client]:
    loop = asyncio.get_running_loop()
    clients: list[Client] = []
    for start in range(0, count, 500):  # in waves, not to overflow the listen backlog
        wave = []
        for i in range(start, min(count, start + 500)):
            done: asyncio.Future[None] = loop.create_future()
            _, proto = await loop.create_connection(
                lambda i=i, done=done: Client(plan, (i * 37) % max(1, len(plan.messages)), stats, done), host, port)
            clients.append(proto)
            wave.append(done)
        await asyncio.wait_for(asyncio.gather(*wave), 60)
    return clients


async def run(args: argparse.Namespace) -> dict[str, Any]:
    host, _, port = args.target.rpartition(":")
    plan = Plan(WORKLOADS[args.workload](), args.policy)
    stats = Stats()
    stats.kinds.extend([0] * len(plan.names))
    clients = await open_all(host, int(port), args.connections, plan, stats)
    lines = Lines()
    say("ready")
    await lines.expect("go")
    if plan.messages:
        stats.running = True
        for c in clients:
            c.send_next()
    await lines.expect("mark")
    stats.counting, stats.mark_at = True, time.perf_counter()
    await lines.expect("stop")
    stats.counting, stats.running, stats.stop_at = False, False, time.perf_counter()
    open_now = sum(1 for c in clients if c.transport is not None and not c.transport.is_closing())
    for c in clients:
        if c.transport is not None:
            c.transport.close()
    return {
        "round_trips": stats.count,
        "seconds": stats.stop_at - stats.mark_at,
        "errors": stats.errors,
        "refused": stats.refused,
        "kinds": dict(zip(plan.names, stats.kinds, strict=True)),
        "bad_reply": stats.bad_reply.hex(),
        "open": open_now,
        "quantiles_ms": quantiles(stats.latencies),
    }


class Lines:
    """Lines from stdin, read by the event loop."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.pending = b""
        self.fd = sys.stdin.fileno()
        asyncio.get_running_loop().add_reader(self.fd, self._read)

    def _read(self) -> None:
        data = os.read(self.fd, 4096)
        if not data:  # the orchestrator is gone
            asyncio.get_running_loop().remove_reader(self.fd)
            self.queue.put_nowait("stop")
            return
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            self.queue.put_nowait(line.decode().strip())

    async def expect(self, word: str) -> None:
        while (got := await self.queue.get()) != word:
            if got == "stop":  # the orchestrator gave up
                raise SystemExit(1)


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description="benchmark load generator")
    parser.add_argument("--target", required=True, help="HOST:PORT")
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--policy", action="store_true",
                        help="the path applies the mix config: expect ScalyGlobalQuery for the mix's global query")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    say(json.dumps(uvloop.run(run(args))))


if __name__ == "__main__":
    main()
