"""Cuts a byte stream into whole messages, h11 style: ``feed(data)``, then
``next_frame()`` until it returns None (it needs more bytes).

* ``messageLength`` is read from the first 4 bytes and checked
  (16 <= n <= ``max_message_size``) before any buffer is sized from it.
* A message lying whole inside a fed chunk is handed out without copying: the
  chunk itself when the message is the whole chunk, else a slice (a bytes copy
  below 64 KiB, where copying is cheaper than a view; a memoryview above).
* A message spread over several chunks is copied once into a bytearray
  pre-sized to its messageLength, so a 47 MB message costs ~1x its size.
* At most one incomplete message is held; no byte is scanned twice.
"""

from __future__ import annotations

import struct
from collections import deque
from typing import Final, NamedTuple

from scalyproxy.wire.header import DEFAULT_MAX_MESSAGE_SIZE, HEADER_STRUCT, Header, check_length

_VIEW_THRESHOLD: Final = 64 * 1024
_int32_at = struct.Struct("<i").unpack_from
_unpack_header = HEADER_STRUCT.unpack_from
_tuple_new = tuple.__new__

Data = bytes | bytearray | memoryview


class Frame(NamedTuple):
    """One whole message: its parsed header and exactly its original bytes (header included).

    Immutable; a NamedTuple rather than a frozen dataclass because building it
    costs less than half as much, and the framer builds one per message.
    """

    header: Header
    data: Data


def make_frame(data: Data) -> Frame:
    """A Frame for a whole message held in ``data`` (its header is parsed, not checked)."""
    return _tuple_new(Frame, (_tuple_new(Header, _unpack_header(data, 0)), data))


class Framer:
    """Incremental message framer for one direction of one connection."""

    __slots__ = (
        "max_message_size",
        "_chunks",
        "_pos",
        "_pending",
        "_partial",
        "_expected",
        "_offset",
    )

    def __init__(self, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE) -> None:
        self.max_message_size = max_message_size
        self._chunks: deque[bytes] = deque()  # fed bytes not yet framed
        self._pos = 0  # start of the unframed part of _chunks[0]
        self._pending = 0  # unframed bytes in _chunks
        self._partial: bytearray | None = None  # the incomplete message being filled
        self._expected = 0  # its announced length
        self._offset = 0  # stream offset of the next unframed byte (for error messages)

    @property
    def in_progress(self) -> bool:
        """Some bytes of a message that is not yet complete are buffered."""
        return self._partial is not None or self._pending > 0

    @property
    def buffered(self) -> int:
        """Bytes held: unframed input plus the filled part of an incomplete message."""
        return self._pending + (len(self._partial) if self._partial is not None else 0)

    def feed(self, data: Data) -> None:
        """Add bytes received from the peer (copied only if given a mutable buffer)."""
        if type(data) is not bytes:
            data = bytes(data)
        if data:
            self._chunks.append(data)
            self._pending += len(data)

    def next_frame(self) -> Frame | None:
        """The next whole message, or None if more bytes are needed.

        Raises a fatal ProtocolError(kind="bad_length") for a messageLength
        outside 16..max_message_size; the stream cannot be resynchronised.
        """
        if self._partial is not None:
            return self._fill_partial()
        if self._pending < 4:
            return None
        chunk = self._chunks[0]
        pos = self._pos
        if len(chunk) - pos >= 16:  # the usual case: the header is in the first chunk
            header = _tuple_new(Header, _unpack_header(chunk, pos))
            length = header[0]
            if length < 16 or length > self.max_message_size:
                check_length(length, self.max_message_size, self._offset)
            end = pos + length
            if end < len(chunk) and length < _VIEW_THRESHOLD:  # more follows: a small copy
                self._pos = end
                self._pending -= length
                self._offset += length
                return _tuple_new(Frame, (header, chunk[pos:end]))
            if end <= len(chunk):
                return _tuple_new(Frame, (header, self._slice(chunk, pos, end)))
        elif len(chunk) - pos >= 4:
            length = _int32_at(chunk, pos)[0]
        else:
            length = _int32_at(self._peek_length(), 0)[0]
        check_length(length, self.max_message_size, self._offset)
        # Spread over several chunks: one buffer that grows only as bytes arrive.
        # Never sized from the announced length up front: a hostile peer that
        # announces 48 MB and sends 16 bytes must cost 16 bytes, not 48 MB (a
        # zero-filled bytearray(length) would touch every page). Appending to a
        # bytearray over-allocates by 1/8 and large blocks grow in place
        # (realloc/mremap), so a 47 MB message costs about 1.1x its size.
        self._partial = bytearray()
        self._expected = length
        return self._fill_partial()

    def _slice(self, chunk: bytes, pos: int, end: int) -> Data:
        """chunk[pos:end] without copying what need not be, and consume it."""
        data: Data
        if pos == 0 and end == len(chunk):
            data = chunk
        elif end - pos < _VIEW_THRESHOLD:
            data = chunk[pos:end]
        else:
            data = memoryview(chunk)[pos:end]
        self._consume(chunk, end)
        return data

    def _consume(self, chunk: bytes, end: int) -> None:
        self._pending -= end - self._pos
        self._offset += end - self._pos
        if end == len(chunk):
            self._chunks.popleft()
            self._pos = 0
        else:
            self._pos = end

    def _fill_partial(self) -> Frame | None:
        buf = self._partial
        assert buf is not None
        chunks = self._chunks
        expected = self._expected
        while chunks and len(buf) < expected:
            chunk = chunks[0]
            pos = self._pos
            take = min(len(chunk) - pos, expected - len(buf))
            buf += memoryview(chunk)[pos : pos + take]
            self._consume(chunk, pos + take)
        if len(buf) < expected:
            return None
        self._partial = None
        return _tuple_new(Frame, (_tuple_new(Header, _unpack_header(buf, 0)), buf))

    def _peek_length(self) -> bytes:
        """The 4 length bytes when they straddle chunks (nothing is moved)."""
        head = b""
        pos = self._pos
        for chunk in self._chunks:
            head += chunk[pos : pos + 4 - len(head)]
            if len(head) == 4:
                break
            pos = 0
        return head
