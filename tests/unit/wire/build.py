"""Byte-level builders for test messages, written independently of the codec's
encoders (like the server's OpMsgBytes test helper), plus the bson-corpus cases."""

from __future__ import annotations

import json
import struct
from typing import Any

import bson
from crc32c import crc32c

from tests.vectors import bson_corpus_files

BODY = 0
SEQUENCE = 1
CHECKSUM = 1


def doc(*elements: bytes) -> bytes:
    """A BSON document from raw elements (allows what bson.encode cannot: repeated keys)."""
    body = b"".join(elements)
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def el_int(key: str, value: int) -> bytes:
    return b"\x10" + key.encode() + b"\x00" + struct.pack("<i", value)


def el_str(key: str, value: str) -> bytes:
    raw = value.encode()
    return b"\x02" + key.encode() + b"\x00" + struct.pack("<i", len(raw) + 1) + raw + b"\x00"


def el_doc(key: str, value: bytes) -> bytes:
    return b"\x03" + key.encode() + b"\x00" + value


def el_array(key: str, value: bytes) -> bytes:
    return b"\x04" + key.encode() + b"\x00" + value


def sized(ident: str | bytes, *docs: bytes, nul: bool = True, add: int = 0) -> bytes:
    """A kind-1 payload: int32 size, identifier (NUL unless told), documents."""
    name = ident.encode() if isinstance(ident, str) else ident
    payload = name + (b"\x00" if nul else b"") + b"".join(docs)
    return struct.pack("<i", 4 + len(payload) + add) + payload


def op_msg(
    flags: int, *parts: bytes | int, request_id: int = 7, checksum: bool = False, add: int = 0
) -> bytes:
    """An OP_MSG from flags and parts (an int part is a section kind byte)."""
    payload = struct.pack("<I", flags) + b"".join(
        bytes([p]) if isinstance(p, int) else p for p in parts
    )
    length = 16 + len(payload) + (4 if checksum else 0)
    message = struct.pack("<iiii", length + add, request_id, 0, 2013) + payload
    if checksum:
        message += struct.pack("<I", crc32c(message))
    return message


def raw_message(op_code: int, payload: bytes, request_id: int = 7) -> bytes:
    return struct.pack("<iiii", 16 + len(payload), request_id, 0, op_code) + payload


def ping(**extra: Any) -> bytes:
    return bson.encode({"ping": 1, "$db": "admin", **extra})


def corpus_cases(section: str) -> list[tuple[str, dict[str, Any]]]:
    """(file: description, case) for every case of a section in every corpus file."""
    cases = []
    for path in bson_corpus_files():
        data = json.loads(path.read_text())
        for case in data.get(section, []):
            cases.append((f"{path.name}: {case['description']}", case))
    return cases
