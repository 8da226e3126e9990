"""The command view the policy engine reads, built from one request frame.

``command_view(frame)`` accepts an OP_MSG, an OP_QUERY on ``<db>.$cmd`` (the
legacy handshake) or an OP_COMPRESSED wrapping either. It decodes the body
and leaves kind-1 document sequences as bytes until someone reads them. With
the C extension (``scalyproxy._scan``) an ordinary clean OP_MSG is viewed in
one C call, and every kind-1 document is scanned before the view exists,
whether or not the policy ever reads it; without it, sequences are validated
when first read. Invalid BSON is refused. A repeated key or a string that is
not UTF-8 is refused in the command's name and ``$db``; anywhere else the
document is decoded as a :class:`~scalyproxy.wire.ambiguous.LenientDocument`,
whose doubtful parts raise ``AmbiguousRead`` only when read (docs/wire.md,
"Strict where the verdict reads"). The frame itself is never modified, so the
relay can forward ``frame.data`` untouched.

Everything else raises ProtocolError: ``kind="unsupported_opcode"``
(non-fatal, with ``request_id``) for legacy and unknown opcodes and for OP_QUERY
outside ``<db>.$cmd``, so the relay can refuse with a reply and keep the
connection; other kinds for malformed messages.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final, NamedTuple, Protocol, overload

# pymongo's C functions, called directly: bson.decode would add a Python frame,
# an isinstance check and a cast() call to every message.
from bson import _bson_to_dict, _dict_to_bson

from scalyproxy.wire.ambiguous import (
    KEY_DOUBTS,
    AmbiguousRead,
    LenientDocument,
    decode_command_document,
    decode_command_run,
)
from scalyproxy.wire.documents import (
    DECODE_OPTIONS,
    ENCODE_OPTIONS,
    Buffer,
    decode_document,
    decode_run,
)
from scalyproxy.wire.errors import ProtocolError

try:
    from scalyproxy import _scan
except ImportError:  # pragma: no cover - built by `pip install` wherever there is a C compiler
    _scan = None  # type: ignore[assignment]
from scalyproxy.wire.framer import Frame
from scalyproxy.wire.header import (
    DEFAULT_MAX_MESSAGE_SIZE,
    HEADER_SIZE,
    OP_COMPRESSED,
    OP_MSG,
    OP_QUERY,
    op_name,
)
from scalyproxy.wire.op_compressed import decompress_message
from scalyproxy.wire.op_msg import (
    FLAG_EXHAUST_ALLOWED,
    FLAG_MORE_TO_COME,
    check_sequence_names,
    parse_op_msg,
)
from scalyproxy.wire.op_query import QUERY_FLAG_EXHAUST, parse_op_query

#: header, flagBits, first section kind, body size
_unpack_prefix: Final = struct.Struct("<iiiiIBi").unpack_from
#: Flag bits that let an OP_MSG take the fast path: no checksum, no unknown required bit.
_NOT_FAST_FLAGS: Final = 0xFFFF & ~FLAG_MORE_TO_COME
_BODY_AT: Final = HEADER_SIZE + 5
_tuple_new = tuple.__new__
_int32_at: Final = struct.Struct("<i").unpack_from


class CommandView(NamedTuple):
    """A request as the policy engine sees it. Immutable.

    ``body`` is the decoded command document (for an OP_QUERY wrapped as
    ``{$query: {...}, ...}``, the inner command); ``sequences`` maps kind-1
    identifiers to their documents, decoded (strictly) on first access;
    ``message`` is the uncompressed message bytes the view was read from.
    """

    name: str
    db: str
    body: Mapping[str, Any]
    sequences: Mapping[str, Sequence[Mapping[str, Any]]]
    request_id: int
    op_code: int
    flags: int
    compressor_id: int | None
    legacy: bool
    message: Buffer

    def __repr__(self) -> str:  # no document values (they end up in logs)
        return (
            f"CommandView(name={self.name!r}, db={self.db!r}, request_id={self.request_id}, "
            f"op_code={self.op_code}, flags=0x{self.flags:x}, sequences={list(self.sequences)!r}, "
            f"compressor_id={self.compressor_id}, legacy={self.legacy})"
        )

    @property
    def more_to_come(self) -> bool:
        """The client expects no reply (OP_MSG moreToCome, e.g. w:0 writes)."""
        return not self.legacy and bool(self.flags & FLAG_MORE_TO_COME)

    @property
    def exhaust_allowed(self) -> bool:
        """The client accepts several replies (OP_MSG exhaustAllowed, OP_QUERY Exhaust)."""
        if self.legacy:
            return bool(self.flags & QUERY_FLAG_EXHAUST)
        return bool(self.flags & FLAG_EXHAUST_ALLOWED)


#: A scanned kind-1 run longer than this is decoded this many bytes at a time on
#: each pass over it, never whole (a 47 MB insert holds ~1 MB of decoded documents).
RUN_CHUNK: Final = 1 << 20


class DocumentRun(Sequence[dict[str, Any]]):
    """The documents of a kind-1 section the C scanner has already validated.

    Up to :data:`RUN_CHUNK` bytes it is decoded once, on first use, and kept.
    A longer run is decoded about RUN_CHUNK bytes at a time while it is iterated
    and nothing decoded is kept, so the documents of a large insert never exist
    all at once; indexing decodes the one document asked for. Compares equal to
    a list of the same documents.
    """

    __slots__ = ("_raw", "_offset", "_what", "_docs", "_bounds")

    def __init__(self, raw: memoryview, offset: int, what: str) -> None:
        self._raw = raw
        self._offset = offset
        self._what = what
        self._docs: list[dict[str, Any]] | None = None
        self._bounds: list[int] | None = None  # start of each document, then the end

    @property
    def raw(self) -> memoryview:
        """The documents' bytes (already scanned)."""
        return self._raw

    def _all(self) -> list[dict[str, Any]]:
        if self._docs is None:
            self._docs = decode_run(self._raw, offset=self._offset, what=self._what)
        return self._docs

    def _starts(self) -> list[int]:
        if self._bounds is None:
            raw, pos, bounds = self._raw, 0, [0]
            while pos < len(raw):
                pos += _int32_at(raw, pos)[0]
                bounds.append(pos)
            self._bounds = bounds
        return self._bounds

    def __iter__(self) -> Iterator[dict[str, Any]]:
        if len(self._raw) <= RUN_CHUNK:
            yield from self._all()
            return
        bounds, first = self._starts(), 0
        while first < len(bounds) - 1:
            last = first + 1  # at least one document per chunk, however large
            while last < len(bounds) - 1 and bounds[last + 1] - bounds[first] <= RUN_CHUNK:
                last += 1
            a, b = bounds[first], bounds[last]
            yield from decode_run(
                self._raw[a:b], offset=self._offset + a, what=self._what
            )
            first = last

    def __len__(self) -> int:
        if len(self._raw) <= RUN_CHUNK:
            return len(self._all())
        return len(self._starts()) - 1

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if len(self._raw) <= RUN_CHUNK:
            return self._all()[index]
        bounds = self._starts()
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(bounds) - 1))]
        position = range(len(bounds) - 1)[index]  # IndexError, negative indexes, as a list
        a, b = bounds[position], bounds[position + 1]
        return decode_run(self._raw[a:b], offset=self._offset + a, what=self._what)[0]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DocumentRun | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # like a list

    def __repr__(self) -> str:
        return f"DocumentRun({len(self._raw)} bytes)"


class LazySequences(Mapping[str, Sequence[Mapping[str, Any]]]):
    """Kind-1 document sequences, each decoded and validated when first read
    (or, when the C scanner has validated them already, a :class:`DocumentRun`).

    ``decoded`` holds sequences the careful path has already decoded (those the
    scanner did not prove clean: their documents may be :class:`LenientDocument`).
    """

    __slots__ = ("_message", "_spans", "_decoded", "_checked")

    def __init__(
        self,
        message: Buffer,
        spans: dict[str, tuple[int, int]],
        checked: bool = False,
        decoded: dict[str, Sequence[Mapping[str, Any]]] | None = None,
    ) -> None:
        self._message = message
        self._spans = spans
        self._decoded: dict[str, Sequence[Mapping[str, Any]]] = decoded or {}
        self._checked = checked  # already scanned: valid BSON, no repeated key

    def __getitem__(self, name: str) -> Sequence[Mapping[str, Any]]:
        docs = self._decoded.get(name)
        if docs is None:
            start, stop = self._spans[name]
            view = memoryview(self._message)[start:stop]
            what = f"kind-1 section {name!r}"
            if self._checked:
                docs = DocumentRun(view, start, what)
            else:
                docs = decode_command_run(view, offset=start, what=what)
            self._decoded[name] = docs
        return docs

    def __iter__(self) -> Iterator[str]:
        return iter(self._spans)

    def __len__(self) -> int:
        return len(self._spans)

    def raw(self, name: str) -> memoryview:
        """The undecoded documents of one sequence."""
        start, stop = self._spans[name]
        return memoryview(self._message)[start:stop]

    def __repr__(self) -> str:
        return f"LazySequences({list(self._spans)!r})"


NO_SEQUENCES: Final[Mapping[str, Sequence[Mapping[str, Any]]]] = LazySequences(b"", {})


def _python_command_view(
    frame: Frame, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
) -> CommandView:
    """The command carried by a request frame; raises ProtocolError (see module doc)."""
    data = frame.data
    # Fast path, in as few Python steps as possible, for the common case: an
    # OP_MSG whose only section is a canonical body (no checksum, no sequence).
    # It only ever accepts; anything unusual, wrong or failing takes the careful
    # path below, which says what is wrong.
    try:
        length, request_id, _rto, op_code, flags, kind, size = _unpack_prefix(data)
        if (
            op_code == OP_MSG
            and not flags & _NOT_FAST_FLAGS
            and not kind
            and size + _BODY_AT == length == len(data)
        ):
            raw = data[_BODY_AT:]
            body: dict[str, Any] = _bson_to_dict(raw, DECODE_OPTIONS)
            canonical = _dict_to_bson(body, False, ENCODE_OPTIONS, False) == raw
            name = next(iter(body), None)
            db = body.get("$db")
            if canonical and name is not None and type(db) is str and db:
                fields = (
                    name,
                    db,
                    body,
                    NO_SEQUENCES,
                    request_id,
                    OP_MSG,
                    flags,
                    None,
                    False,
                    data,
                )
                return _tuple_new(CommandView, fields)
    except Exception:
        pass
    return _careful_view(frame, max_message_size)


def _careful_view(frame: Frame, max_message_size: int) -> CommandView:
    data = frame.data
    header = frame.header
    try:
        return _view(data, header.op_code, max_message_size)
    except ProtocolError as exc:
        raise exc.with_request(header.request_id, exc.op_code or header.op_code) from None


class _ViewFunction(Protocol):
    def __call__(
        self, frame: Frame, /, *, max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    ) -> CommandView: ...


#: ``command_view(frame, *, max_message_size=48_000_000) -> CommandView``: the
#: command carried by a request frame; raises ProtocolError (see the module doc).
#: With the C extension, one C call for an ordinary OP_MSG (scanned, decoded and
#: built in C), which hands anything else to the careful Python path.
command_view: _ViewFunction = _python_command_view
if _scan is not None:
    _scan.configure(
        CommandView,
        NO_SEQUENCES,
        LazySequences,
        _bson_to_dict,
        DECODE_OPTIONS,
        _careful_view,
        DEFAULT_MAX_MESSAGE_SIZE,
    )
    command_view = _scan.command_view


def _view(
    data: Buffer, op_code: int, max_message_size: int, compressor_id: int | None = None
) -> CommandView:
    if op_code == OP_MSG:
        return _op_msg_view(data, compressor_id)
    if op_code == OP_QUERY:
        return _op_query_view(data, compressor_id)
    if op_code == OP_COMPRESSED and compressor_id is None:
        inner = decompress_message(data, max_message_size)
        compressor = data[HEADER_SIZE + 8]
        return _view(inner, struct.unpack_from("<i", inner, 12)[0], max_message_size, compressor)
    raise ProtocolError(
        f"{op_name(op_code)} ({op_code}) is not relayed: the proxy reads OP_MSG commands "
        "(and OP_QUERY only for the legacy hello handshake)",
        kind="unsupported_opcode",
        field="opCode",
        offset=12,
        op_code=op_code,
    )


def _op_msg_view(data: Buffer, compressor_id: int | None) -> CommandView:
    layout = parse_op_msg(data)
    start, stop = layout.body
    body = decode_command_document(memoryview(data)[start:stop], offset=start, what="the command body")
    name, db = _name_and_db(body)
    sequences = NO_SEQUENCES
    if layout.sequences:
        check_sequence_names(body, layout.sequences)
        decoded: dict[str, Sequence[Mapping[str, Any]]] = {}
        if _scan is not None:  # every document is validated now, read by the policy or not
            whole = memoryview(data)
            for ident, (a, b) in layout.sequences.items():
                if _scan.scan_run(whole[a:b])[0] != "ok":
                    # raises for invalid BSON; else the documents, lenient where in doubt
                    decoded[ident] = decode_command_run(whole[a:b], offset=a, what=f"kind-1 section {ident!r}")
        sequences = LazySequences(data, layout.sequences, _scan is not None, decoded)
    request_id = struct.unpack_from("<i", data, 4)[0]
    view = (name, db, body, sequences, request_id, OP_MSG, layout.flags, compressor_id, False, data)
    return _tuple_new(CommandView, view)


def _op_query_view(data: Buffer, compressor_id: int | None) -> CommandView:
    layout = parse_op_query(data)
    request_id = struct.unpack_from("<i", data, 4)[0]
    database, _dot, collection = layout.namespace.partition(".")
    if not database or collection != "$cmd":
        raise ProtocolError(
            f"OP_QUERY on {layout.namespace!r} is not relayed: only <db>.$cmd commands "
            "(the legacy hello handshake) are read; use OP_MSG",
            kind="unsupported_opcode",
            field="fullCollectionName",
            offset=HEADER_SIZE + 4,
            op_code=OP_QUERY,
        )
    start, stop = layout.query
    body = unwrap_query(
        decode_document(memoryview(data)[start:stop], offset=start, what="the command body")
    )
    if not body:
        raise _command_error("the OP_QUERY command document is empty")
    name = next(iter(body))
    return CommandView(
        name,
        database,
        body,
        NO_SEQUENCES,
        request_id,
        OP_QUERY,
        layout.flags,
        compressor_id,
        True,
        data,
    )


def unwrap_query(query: dict[str, Any]) -> dict[str, Any]:
    """The command inside a legacy ``{$query: {...}, $readPreference: ...}`` wrapper."""
    if query and next(iter(query)) == "$query" and isinstance(query["$query"], dict):  # strict: dicts
        inner: dict[str, Any] = query["$query"]
        return inner
    return query


def _name_and_db(body: Mapping[str, Any]) -> tuple[str, str]:
    """The command's name and database, read strictly whatever the rest: a repeated
    or undecodable first key, a repeated ``$db`` or one that is not UTF-8 is refused."""
    if isinstance(body, LenientDocument):
        fields, doubt = body.unchecked(), body.doubt
        name = next(iter(fields), None)
        if name is not None and doubt.get(name, 0) & KEY_DOUBTS:
            raise AmbiguousRead(name, doubt[name])
        if "$db" in doubt:
            raise AmbiguousRead("$db", doubt["$db"])
    else:
        fields = body
        name = next(iter(body), None)
    if name is None:
        raise _command_error("the command body is empty (a command is named by its first key)")
    db = fields.get("$db")
    if type(db) is not str or not db:
        raise _command_error(f"the {name!r} command has no usable $db (got {db!r})", "$db")
    return name, db


def _command_error(reason: str, field: str | None = None) -> ProtocolError:
    return ProtocolError(reason, kind="bad_command", field=field)
