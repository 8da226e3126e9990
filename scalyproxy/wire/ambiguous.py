"""Documents that two readers could read two ways, decoded so that only reading
the doubtful part fails.

A key repeated within one document, or a string (key or value) that is not
valid UTF-8, is read one way by the proxy (a Python dict keeps the last of two
equal keys; a string must be decoded) and possibly another by the server (it
sees both keys, or the raw bytes). That matters only where the proxy's verdict
reads; everywhere else the original bytes go to the server, which answers for
itself. So the codec decodes such a document leniently into a
:class:`LenientDocument`, a read-only mapping that remembers its doubtful keys
and raises :class:`AmbiguousRead` (a :class:`ProtocolError`) when one is read:

* ``doc[key]``, ``doc.get(key)`` of a doubtful key; ``key in doc`` and
  iteration reach a key only when the key itself is doubtful (repeated, or not
  UTF-8): a key whose *value* holds an undecodable string is there once and
  can be listed, not read;
* ``len(doc)`` when a key is repeated (the server counts both);
* equality, ``dict(doc)``, encoding: they iterate and read every value.

Every other key reads normally. The policy engine turns the exception into a
refusal (docs/wire.md, "Strict where the verdict reads"). A document without
any doubt, at any depth, is returned as the plain dict the strict decoder
gives, so clean messages never meet this class.

Names of namespaces are the one exception (:func:`name_field`): a collection
name that is not UTF-8 cannot be one the config declares, so it reads as an
undeclared namespace instead of failing; a repeated one still fails.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any, Final

from bson import _bson_to_dict
from bson.code import Code
from bson.codec_options import CodecOptions
from bson.dbref import DBRef
from bson.regex import Regex

from scalyproxy.wire.documents import DECODE_OPTIONS, Buffer, decode_document, decode_sequence
from scalyproxy.wire.errors import ProtocolError

try:
    from scalyproxy import _scan
except ImportError:  # pragma: no cover - built by `pip install` wherever there is a C compiler
    _scan = None  # type: ignore[assignment]

#: Why a key is doubtful (bits of :attr:`LenientDocument.doubt`).
REPEATED: Final = 1  # the key appears more than once in its document
BAD_KEY: Final = 2  # the key is not valid UTF-8
BAD_VALUE: Final = 4  # the value holds a string that is not valid UTF-8 (outside nested documents)
#: Doubts that make the key itself unreadable (iteration and ``in`` stop there).
KEY_DOUBTS: Final = REPEATED | BAD_KEY

_int32_at = struct.Struct("<i").unpack_from


class AmbiguousRead(ProtocolError):
    """The policy read a part of the command that the proxy and the server could
    read differently (a repeated key, a string that is not UTF-8)."""

    def __init__(self, key: str, reasons: int) -> None:
        shown = key.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
        if reasons & REPEATED:
            why, kind = f"has the key '{shown}' twice", "duplicate_key"
        elif reasons & BAD_KEY:
            why, kind = f"has a key that is not valid UTF-8 ('{shown}')", "bad_bson"
        else:
            why, kind = f"has a string that is not valid UTF-8 under the key '{shown}'", "bad_bson"
        super().__init__(
            f"the command {why}, in a part the proxy reads for its verdict; "
            "the proxy and the server could read it differently",
            kind=kind,
            field=shown,
        )


def _undecodable(text: str) -> bool:
    """Whether a decoded string came from bytes that are not UTF-8 (lone surrogates,
    which the ``surrogateescape`` handler gives and strict UTF-8 never decodes to)."""
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _bad_value(value: Any) -> bool:
    """An undecodable string in a value, not counting nested documents (they guard
    themselves) but counting those that a decoded object hides (code scope, DBRef)."""
    cls = value.__class__
    if cls is str:
        return _undecodable(value)
    if cls is list:
        return any(_bad_value(v) for v in value)
    if cls is Code:
        return _undecodable(value) or (value.scope is not None and has_doubt(value.scope))
    if cls is Regex:
        return isinstance(value.pattern, str) and _undecodable(value.pattern)
    if cls is DBRef:
        return _bad_value(value.collection) or _bad_value(value.database) or has_doubt(value.as_doc())
    return isinstance(value, str) and _undecodable(value)


class LenientDocument(MutableMapping[str, Any]):
    """A document decoded leniently (see the module doc). Filled by pymongo's decoder
    through ``__setitem__`` (pymongo wants a MutableMapping); read-only for everyone
    else by convention."""

    __slots__ = ("_data", "_doubt")

    def __init__(self) -> None:
        self._data: dict[str, Any] = {}
        self._doubt: dict[str, int] | None = None

    # -- filled by the decoder ----------------------------------------------------

    def __setitem__(self, key: str, value: Any) -> None:
        data = self._data
        reasons = REPEATED if key in data else 0
        if _undecodable(key):
            reasons |= BAD_KEY
        if _bad_value(value):
            reasons |= BAD_VALUE
        if reasons:
            if self._doubt is None:
                self._doubt = {}
            self._doubt[key] = self._doubt.get(key, 0) | reasons
        if not reasons & REPEATED:
            data[key] = value

    def __delitem__(self, key: str) -> None:  # pymongo's DBRef conversion (never reached with a doubt)
        del self._data[key]

    # -- read by the policy --------------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        doubt = self._doubt
        if doubt is not None:
            if key in doubt:
                raise AmbiguousRead(key, doubt[key])
            if key == "$ref":  # a doubtful document never becomes a DBRef: it stays readable as is
                raise KeyError(key)
        return self._data[key]

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        doubt = self._doubt
        if doubt is not None and isinstance(key, str) and doubt.get(key, 0) & KEY_DOUBTS:
            raise AmbiguousRead(key, doubt[key])
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        if self._doubt is None:
            return iter(self._data)
        return self._checked_keys()

    def _checked_keys(self) -> Iterator[str]:
        doubt = self._doubt
        assert doubt is not None
        for key in self._data:
            if doubt.get(key, 0) & KEY_DOUBTS:
                raise AmbiguousRead(key, doubt[key])
            yield key

    def __len__(self) -> int:
        doubt = self._doubt
        if doubt is not None:
            for key, reasons in doubt.items():
                if reasons & REPEATED:
                    raise AmbiguousRead(key, reasons)
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:  # keys only: document values never reach a log line
        return f"LenientDocument(keys={list(self._data)!r}, doubtful={sorted(self._doubt or ())!r})"

    # -- for the codec (no check) ------------------------------------------------------

    @property
    def doubt(self) -> Mapping[str, int]:
        """Doubtful keys and why (bits REPEATED, BAD_KEY, BAD_VALUE)."""
        return self._doubt or {}

    def unchecked(self) -> Mapping[str, Any]:
        """The decoded keys and values, doubtful ones included (a repeated key: its first value)."""
        return self._data


#: How a command document that failed the strict checks is decoded again: same as
#: documents.DECODE_OPTIONS but with :class:`LenientDocument` and undecodable
#: bytes kept as lone surrogates (``surrogateescape``), so they can be told apart.
LENIENT_OPTIONS: Final[CodecOptions[Any]] = DECODE_OPTIONS.with_options(
    document_class=LenientDocument, unicode_decode_error_handler="surrogateescape"
)


def has_doubt(value: Any) -> bool:
    """Whether a decoded value holds a doubtful key or string at any depth."""
    if isinstance(value, LenientDocument):
        return value._doubt is not None or any(has_doubt(v) for v in value._data.values())
    if value.__class__ is list:
        return any(has_doubt(v) for v in value)
    if isinstance(value, Mapping):
        return any(has_doubt(v) for v in value.values())
    return _bad_value(value)


def name_field(doc: Mapping[str, Any], key: str) -> Any:
    """``doc.get(key)`` for a field that names a namespace: a string that is not
    UTF-8 is returned as decoded (it cannot name a declared namespace); a repeated
    key still raises :class:`AmbiguousRead`."""
    if doc.__class__ is LenientDocument:  # not isinstance: an ABC check, on every command
        assert isinstance(doc, LenientDocument)
        if doc.doubt.get(key, 0) == BAD_VALUE and doc.unchecked()[key].__class__ is str:
            return doc.unchecked()[key]
    return doc.get(key)


# -- decoding -------------------------------------------------------------------------


def decode_command_document(
    buf: Buffer, *, offset: int = 0, what: str = "document"
) -> dict[str, Any] | LenientDocument:
    """One document of a command: the strict dict when it is clean; a
    :class:`LenientDocument` when its only faults are repeated keys or strings that
    are not UTF-8; otherwise ProtocolError(kind="bad_bson")."""
    if _scan is not None:
        answer = _scan.scan_document(buf)
        if answer == "ok":
            return decode_document(buf, offset=offset, what=what)
        lenient = _decode_lenient(buf, offset, what)
        if has_doubt(lenient):
            return lenient
        if answer == "too_deep":  # the scanner gave up; the decoder found nothing doubtful
            return decode_document(buf, offset=offset, what=what)
        # the scanner found a fault the lenient decoder does not explain: fail closed
        raise ProtocolError(f"{what} is not valid BSON", kind="bad_bson", offset=offset)
    try:
        return decode_document(buf, offset=offset, what=what)
    except ProtocolError as strict:
        lenient = _decode_lenient(buf, offset, what)
        if has_doubt(lenient):
            return lenient
        raise strict from None


def decode_command_run(
    buf: Buffer, *, offset: int = 0, what: str = "sequence"
) -> list[dict[str, Any] | LenientDocument]:
    """The documents of a kind-1 section, each as :func:`decode_command_document` gives it."""
    if _scan is None:
        try:
            return list(decode_sequence(buf, offset=offset, what=what))
        except ProtocolError:
            pass  # a repeated key or a bad string somewhere: document by document below
    docs: list[dict[str, Any] | LenientDocument] = []
    pos, end = 0, len(buf)
    while pos < end:
        size = _int32_at(buf, pos)[0] if end - pos >= 4 else 0
        if size < 5 or size > end - pos:
            raise ProtocolError(f"{what} holds invalid BSON", kind="bad_bson", offset=offset + pos)
        docs.append(
            decode_command_document(buf[pos : pos + size], offset=offset + pos, what=f"{what}[{len(docs)}]")
        )
        pos += size
    return docs


def _decode_lenient(buf: Buffer, offset: int, what: str) -> LenientDocument:
    try:
        doc: LenientDocument = _bson_to_dict(buf, LENIENT_OPTIONS)
    except Exception as exc:  # the C decoder raises InvalidBSON, and more on odd input
        raise ProtocolError(f"{what} is not valid BSON: {exc}", kind="bad_bson", offset=offset) from exc
    return doc
