"""Shared pieces of the reliability tests: raw wire messages, sockets, RSS, latency.

``STRESS=1`` in the environment selects the long versions (``scripts/stress``);
:func:`scaled` picks a count or a duration accordingly. Figures a test measures
go through :func:`report`: printed, and appended as one JSON line to the file
named by ``RELIABILITY_REPORT`` when set (``scripts/stress`` collects them for
docs/reliability.md).
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bson
from crc32c import crc32c

STRESS = os.environ.get("STRESS", "") not in ("", "0")
ROOT = Path(__file__).resolve().parents[2]

OP_REPLY, OP_UPDATE, OP_INSERT, OP_QUERY, OP_GET_MORE = 1, 2001, 2002, 2004, 2005
OP_DELETE, OP_KILL_CURSORS, OP_COMMAND, OP_COMPRESSED, OP_MSG = 2006, 2007, 2010, 2012, 2013
PROTOCOL_ERROR, UNSUPPORTED_OPERATION = 29005, 29006


def scaled(short: Any, long: Any) -> Any:
    """``long`` under STRESS=1, else ``short``."""
    return long if STRESS else short


def report(row: str, **figures: Any) -> None:
    """Print a test's figures; append them to $RELIABILITY_REPORT (JSON lines) if set."""
    record = {"row": row, "stress": STRESS, **figures}
    print(json.dumps(record))
    path = os.environ.get("RELIABILITY_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


# -- messages, built byte by byte (independent of the codec's encoders) ----------------


def header(length: int, request_id: int, op_code: int, response_to: int = 0) -> bytes:
    return struct.pack("<iiii", length, request_id, response_to, op_code)


def message(op_code: int, payload: bytes, request_id: int = 1) -> bytes:
    return header(16 + len(payload), request_id, op_code) + payload


def op_msg_raw(sections: bytes, request_id: int = 1, flags: int = 0, checksum: bool = False) -> bytes:
    """An OP_MSG from raw section bytes; ``checksum`` appends a correct CRC-32C."""
    if checksum:
        flags |= 1
    msg = message(OP_MSG, struct.pack("<I", flags) + sections, request_id)
    if checksum:
        msg = struct.pack("<i", len(msg) + 4) + msg[4:]
        msg += struct.pack("<I", crc32c(msg))
    return msg


def body_section(doc: dict[str, Any] | bytes) -> bytes:
    return b"\x00" + (doc if isinstance(doc, bytes) else bson.encode(doc))


def seq_section(name: str, docs: list[dict[str, Any]]) -> bytes:
    payload = name.encode() + b"\x00" + b"".join(bson.encode(d) for d in docs)
    return b"\x01" + struct.pack("<i", 4 + len(payload)) + payload


def op_msg(body: dict[str, Any], request_id: int = 1, flags: int = 0, **seqs: list[dict[str, Any]]) -> bytes:
    sections = body_section(body) + b"".join(seq_section(k, v) for k, v in seqs.items())
    return op_msg_raw(sections, request_id, flags)


def op_query(namespace: str, query: dict[str, Any], request_id: int = 1, flags: int = 0) -> bytes:
    payload = struct.pack("<i", flags) + namespace.encode() + b"\x00" + struct.pack("<ii", 0, -1)
    return message(OP_QUERY, payload + bson.encode(query), request_id)


def hello_msg(request_id: int = 1, compression: list[str] | None = None) -> bytes:
    body: dict[str, Any] = {"hello": 1, "$db": "admin"}
    if compression is not None:
        body["compression"] = compression
    return op_msg(body, request_id)


# -- sockets -------------------------------------------------------------------------------


def connect(port: int, timeout: float = 10) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by the proxy")
        buf += chunk
    return bytes(buf)


def recv_message(sock: socket.socket) -> bytes:
    head = recv_exact(sock, 16)
    length = struct.unpack_from("<i", head)[0]
    assert 16 <= length <= 48_000_000, f"bad reply length {length}"
    return head + recv_exact(sock, length - 16)


def reply_doc(msg: bytes) -> dict[str, Any]:
    """The first document of an OP_MSG or OP_REPLY reply."""
    op = struct.unpack_from("<i", msg, 12)[0]
    if op == OP_MSG:
        assert msg[20] == 0
        size = struct.unpack_from("<i", msg, 21)[0]
        return bson.decode(msg[21 : 21 + size])
    assert op == OP_REPLY, f"unexpected reply opCode {op}"
    size = struct.unpack_from("<i", msg, 36)[0]
    return bson.decode(msg[36 : 36 + size])


def response_to(msg: bytes) -> int:
    return int(struct.unpack_from("<i", msg, 8)[0])


def error_or_close(sock: socket.socket, request_id: int, timeout: float = 5) -> str:
    """Read what the proxy does with a bad message: 'closed', or 'error <code>'.

    Anything else (a success reply, a reply to another request, silence) fails.
    A reply is allowed to be followed by a close.
    """
    sock.settimeout(timeout)
    try:
        msg = recv_message(sock)
    except (ConnectionError, OSError) as exc:
        if isinstance(exc, TimeoutError):
            raise AssertionError("neither an error reply nor a close within the timeout") from exc
        return "closed"
    doc = reply_doc(msg)
    assert response_to(msg) == request_id, (response_to(msg), request_id, doc)
    assert doc.get("ok") == 0, doc
    assert "errorLabels" not in doc, doc
    return f"error {doc.get('code')}"


def is_closed(sock: socket.socket, timeout: float) -> bool:
    """Whether the peer closes the socket within ``timeout`` (bytes read meanwhile are dropped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True
    return False


# -- the proxy process ---------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmHWM for pid {pid}")


def write_config(path: Path, upstream: str = "mongodb://127.0.0.1:1", **limits: Any) -> Path:
    """An open config (unknown namespaces allowed) with the given limits."""
    values = {
        "max_connections": 5000,
        "idle_timeout_s": 600,
        "message_read_timeout_s": 5,
        "connect_timeout_s": 2,
        **limits,
    }
    lines = [
        "listen: 127.0.0.1:27017",
        f"upstream: {upstream}",
        "policy:",
        "  unknown_namespaces: allow",
        "limits:",
        *[f"  {k}: {v}" for k, v in values.items()],
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- latency of well-behaved clients ----------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ping_latencies(port: int, clients: int, requests: int, db: str = "admin") -> list[float]:
    """``clients`` threads, each one raw connection doing ``requests`` pings in turn;
    the latency of every ping (seconds). A wrong responseTo or an error fails."""
    results: list[list[float]] = [[] for _ in range(clients)]
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            with connect(port) as s:
                out = results[index]
                for i in range(requests):
                    rid = index * 1_000_000 + i + 1
                    msg = op_msg({"ping": 1, "$db": db}, rid)
                    t0 = time.perf_counter()
                    s.sendall(msg)
                    reply = recv_message(s)
                    out.append(time.perf_counter() - t0)
                    assert response_to(reply) == rid
                    assert reply_doc(reply).get("ok") == 1
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    if errors:
        raise errors[0]
    return [x for r in results for x in r]


def summary(latencies: list[float]) -> dict[str, float]:
    return {
        "n": len(latencies),
        "p50_ms": round(statistics.median(latencies) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
    }


@contextmanager
def deadline(seconds: float, what: str) -> Iterator[None]:
    """Fail if the block takes longer than ``seconds`` (checked at its end)."""
    start = time.monotonic()
    yield
    took = time.monotonic() - start
    assert took <= seconds, f"{what} took {took:.1f}s (allowed {seconds}s)"
