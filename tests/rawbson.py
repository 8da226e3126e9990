"""BSON and OP_MSG bytes that drivers cannot send: repeated keys, strings and keys
that are not UTF-8. Written by hand (values other than documents, arrays and bad
strings are encoded by pymongo), independently of the codec under test.

    doc(("find", "c"), ("filter", doc(("a", 1), ("a", 2))), ("$db", "blog"))
    doc((b"k\\xff", 1), ("s", bad(b"x\\xfe")))
"""

from __future__ import annotations

import struct
from typing import Any

import bson


class Doc(bytes):
    """An encoded document (embedded as type 0x03)."""


class Arr(bytes):
    """An encoded array (embedded as type 0x04)."""


class Bad(bytes):
    """The raw bytes of a string value that need not be UTF-8 (type 0x02)."""


def bad(raw: bytes) -> Bad:
    return Bad(raw)


def _key(key: str | bytes) -> bytes:
    return (key if isinstance(key, bytes) else key.encode()) + b"\x00"


def element(key: str | bytes, value: Any) -> bytes:
    if isinstance(value, Doc):
        return b"\x03" + _key(key) + value
    if isinstance(value, Arr):
        return b"\x04" + _key(key) + value
    if isinstance(value, Bad):
        return b"\x02" + _key(key) + struct.pack("<i", len(value) + 1) + value + b"\x00"
    encoded = bson.encode({"k": value})  # type byte, "k\0", value bytes
    return encoded[4:5] + _key(key) + encoded[7:-1]


def doc(*pairs: tuple[str | bytes, Any]) -> Doc:
    body = b"".join(element(k, v) for k, v in pairs)
    return Doc(struct.pack("<i", len(body) + 5) + body + b"\x00")


def arr(*values: Any) -> Arr:
    return Arr(doc(*((str(i), v) for i, v in enumerate(values))))


def op_msg(body: bytes, request_id: int = 1, flags: int = 0, **sequences: list[bytes]) -> bytes:
    """An OP_MSG: the body, then one kind-1 section per keyword (raw documents)."""
    sections = b"\x00" + body
    for name, docs in sequences.items():
        payload = name.encode() + b"\x00" + b"".join(docs)
        sections += b"\x01" + struct.pack("<i", 4 + len(payload)) + payload
    payload = struct.pack("<I", flags) + sections
    return struct.pack("<iiii", 16 + len(payload), request_id, 0, 2013) + payload
