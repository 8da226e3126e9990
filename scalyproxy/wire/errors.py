"""The codec's one exception family.

Every way a byte stream can be wrong ends as a :class:`ProtocolError` that says
what was wrong and where (byte offset in the message, field), carries a short
``kind`` usable as a metric label, and tells the relay whether the stream can
still be trusted (``fatal``) and which request to answer (``request_id``,
``op_code``).
"""

from __future__ import annotations

from typing import Final

#: The ``kind`` labels the codec uses (a closed set, fit for metric labels).
KINDS: Final = frozenset(
    {
        "bad_length",  # messageLength outside 16..max, or a frame not matching its header
        "bad_header",  # a header field that makes no sense (e.g. a nested OP_COMPRESSED)
        "bad_section",  # OP_MSG sections / OP_QUERY / OP_REPLY layout is wrong
        "bad_flags",  # unknown required OP_MSG flag bits, or the flags field is cut short
        "bad_checksum",  # the CRC-32C of a checksumPresent message does not match
        "bad_bson",  # a document the strict BSON decoder refuses
        "duplicate_key",  # one document with the same key twice, at any depth
        "bad_command",  # a command document without a name or a usable $db
        "unsupported_opcode",  # legacy or unknown opcodes, OP_QUERY outside <db>.$cmd
        "compression",  # OP_COMPRESSED that cannot be (de)compressed safely
    }
)


class ProtocolError(Exception):
    """Bytes that are not a message the proxy may read one single way.

    ``fatal`` is True when the byte stream can no longer be cut into messages (a
    length prefix out of bounds, a header that cannot be read); the relay then
    closes. Every other error is about one whole message: the relay answers
    ``request_id`` with an error reply (none for a ``moreToCome`` request) and
    reads on. (The MongoDB server closes the connection on an unknown section
    kind, an unknown required flag bit or a checksum mismatch; the proxy knows
    where such a message ends, so it answers instead.)
    """

    def __init__(
        self,
        reason: str,
        *,
        kind: str,
        offset: int | None = None,
        field: str | None = None,
        request_id: int | None = None,
        op_code: int | None = None,
        fatal: bool = False,
    ) -> None:
        self.reason = reason
        self.kind = kind
        self.offset = offset
        self.field = field
        self.request_id = request_id
        self.op_code = op_code
        self.fatal = fatal
        super().__init__(self._message())

    def _message(self) -> str:
        where = []
        if self.field is not None:
            where.append(f"field {self.field!r}")
        if self.offset is not None:
            where.append(f"byte {self.offset}")
        return f"{self.reason} ({', '.join(where)})" if where else self.reason

    def __str__(self) -> str:
        return self._message()

    def with_request(self, request_id: int, op_code: int) -> ProtocolError:
        """Fill in the request this error belongs to (if not yet known); return self."""
        if self.request_id is None:
            self.request_id = request_id
        if self.op_code is None:
            self.op_code = op_code
        return self
