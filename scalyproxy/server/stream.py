"""Walks the upstream→client byte stream message by message, without buffering it.

Replies are forwarded chunk by chunk as they arrive (a 47 MB reply is never held
whole); this tracker only reads each message header to know where messages
end, so that the proxy can

- slip its own error replies in between two messages (``inject``),
- drop a reply to a request that asked for none (``drop_ids``: a ``moreToCome``
  request; real servers send nothing, FerretDB v1 answers anyway and would
  desynchronise the driver),
- pair replies with requests (``replied_to``, for round-trip times),
- capture the one reply it must read whole: the answer to the client's hello.

A header split across two chunks is held back until it is complete, so that
nothing of a message is forwarded before the tracker knows whether to drop it.
Pure: no I/O.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from scalyproxy.wire.errors import ProtocolError

_HEADER = struct.Struct("<iiii")
Chunk = bytes | bytearray | memoryview
MAX_DROP_IDS = 1024
_NO_IDS: frozenset[int] = frozenset()  # shared until a connection needs its own set (idle memory)


class _TrackerFields:
    """The fields :meth:`whole` reads, and :meth:`whole`: the pure-Python base of
    :class:`ReplyTracker`. With the C extension ``_scan.TrackerLane`` takes its place (the
    same fields and method, in C), so that the relay's C lane reads them without a Python
    call (see scalyproxy/_scan.c)."""

    __slots__ = ("remaining", "header", "injections", "max_size", "_drop_ids", "_capture_ids")

    remaining: int
    header: bytes | bytearray
    injections: list[bytes]
    max_size: int
    _drop_ids: set[int] | frozenset[int]
    _capture_ids: set[int] | frozenset[int]

    def whole(self, data: Chunk) -> int | None:
        """The responseTo of ``data`` if it is exactly one whole message to forward as
        it is: the common case of request/response traffic, in a few steps.

        The chunk is then consumed and nothing is recorded (the caller pairs the
        reply itself); None: nothing was consumed and :meth:`feed` takes the chunk.
        """
        n = len(data)
        if self.remaining or self.header or n < 16 or self.injections:
            return None
        header: tuple[int, int, int, int] = _HEADER.unpack_from(data, 0)
        length, _rid, response_to, _op = header
        if (length != n or n > self.max_size or response_to in self._drop_ids
                or response_to in self._capture_ids):
            return None
        return response_to


if TYPE_CHECKING:
    _TrackerBase = _TrackerFields
else:
    try:
        from scalyproxy._scan import TrackerLane as _TrackerBase
    except ImportError:  # the pure-Python install
        _TrackerBase = _TrackerFields


class ReplyTracker(_TrackerBase):
    """Message boundaries of a byte stream, and what of it to forward."""

    # with the fields of the base: 10,000 idle connections must stay cheap
    __slots__ = ("dropping", "capture", "captured", "replied_to", "ended", "response_to", "completed")

    def __init__(self, max_size: int) -> None:
        self.remaining = 0  # bytes of the current message body still to come
        self.header: bytes | bytearray = b""  # a header split across chunks (held back)
        self.dropping = False  # the current message is not forwarded
        self.capture: bytearray | None = None
        self._capture_ids: set[int] | frozenset[int] = _NO_IDS
        self.captured: list[bytes] = []
        self._drop_ids: set[int] | frozenset[int] = _NO_IDS
        self.max_size = max_size
        self.replied_to: list[int] = []  # responseTo of each message whose header was read
        self.injections: list[bytes] = []  # our own replies, sent at the next boundary
        self.ended = 0  # messages completed by the last feed
        self.response_to = 0  # responseTo of the message being read
        self.completed: list[int] = []  # responseTo of each forwarded message the last feed completed

    @property
    def capture_ids(self) -> set[int]:
        """Request ids whose reply is captured whole (the client's hello)."""
        if not isinstance(self._capture_ids, set):
            self._capture_ids = set()
        return self._capture_ids

    @property
    def drop_ids(self) -> set[int]:
        """Request ids whose reply, if one comes, is dropped (``moreToCome`` requests)."""
        if not isinstance(self._drop_ids, set):
            self._drop_ids = set()
        return self._drop_ids

    def at_boundary(self) -> bool:
        return self.remaining == 0 and not self.header

    def feed(self, data: Chunk) -> list[Chunk]:
        """Consume a chunk; return the pieces to forward to the client, in order."""
        response_to = self.whole(data)
        if response_to is not None:
            self.ended = 1
            self.response_to = response_to
            self.replied_to.append(response_to)
            completed = self.completed
            completed.clear()
            completed.append(response_to)
            return [data]
        n = len(data)
        out: list[Chunk] = []
        seg = 0  # start of the piece of ``data`` not yet emitted
        pos = 0
        self.ended = 0
        if self.completed:
            self.completed.clear()
        while pos < n:
            if self.remaining:
                take = min(self.remaining, n - pos)
                if self.capture is not None:
                    self.capture += data[pos : pos + take]
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    seg = self._end_message(data, out, seg, pos)
                continue
            if not self.header and n - pos >= 16:
                length, _rid, response_to, _op = _HEADER.unpack_from(data, pos)
                header_start = pos
                pos += 16
                held = b""
            else:
                if not self.header and pos > seg:  # emit what precedes a split header
                    out.append(data[seg:pos])
                take = min(16 - len(self.header), n - pos)
                self.header += data[pos : pos + take]
                pos += take
                seg = pos  # the header's bytes are held, not emitted from ``data``
                if len(self.header) < 16:
                    break
                length, _rid, response_to, _op = _HEADER.unpack_from(self.header, 0)
                header_start = pos
                held = bytes(self.header)
            self._begin_message(length, response_to, held or data[header_start : header_start + 16])
            if self.dropping:
                if header_start > seg:
                    out.append(data[seg:header_start])
                seg = pos
            elif held:
                out.append(held)
            if self.remaining == 0:
                seg = self._end_message(data, out, seg, pos)
        if seg < n and not self.dropping:
            out.append(data if seg == 0 else data[seg:n])
        return out

    def expect_no_reply(self, request_id: int) -> None:
        """Drop a reply to this request if one comes (a bounded window of ids)."""
        ids = self.drop_ids
        if len(ids) >= MAX_DROP_IDS:  # real servers never reply: forget one
            ids.pop()
        ids.add(request_id)

    def _begin_message(self, length: int, response_to: int, header: Chunk) -> None:
        if length < 16 or length > self.max_size:
            raise ProtocolError(
                f"upstream sent a message of length {length} (allowed 16..{self.max_size})",
                kind="bad_length",
                field="messageLength",
            )
        self.header = b""
        self.remaining = length - 16
        self.response_to = response_to
        if response_to in self._drop_ids:
            self._drop_ids = _forget(self._drop_ids, response_to)
            self.dropping = True
            return
        self.replied_to.append(response_to)
        if response_to in self._capture_ids:
            self._capture_ids = _forget(self._capture_ids, response_to)
            self.capture = bytearray(header)

    def _end_message(self, data: Chunk, out: list[Chunk], seg: int, pos: int) -> int:
        """A message ended at ``pos``: emit pending injections there; return the new segment start."""
        self.ended += 1
        if self.capture is not None:
            self.captured.append(bytes(self.capture))
            self.capture = None
        if self.dropping:
            self.dropping = False
            return pos
        self.completed.append(self.response_to)
        if self.injections:
            if pos > seg:
                out.append(data[seg:pos])
            out.extend(self.injections)
            self.injections.clear()
            return pos
        return seg


def _forget(ids: set[int] | frozenset[int], request_id: int) -> set[int] | frozenset[int]:
    """``ids`` without ``request_id``; the shared empty set once none is left."""
    if isinstance(ids, set):
        ids.discard(request_id)
    return ids or _NO_IDS
