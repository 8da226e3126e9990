"""The hostile inputs of R1 and R2, shared by the tests and the attacker process."""

from __future__ import annotations

import json
import struct
import zlib

from tests.reliability.helpers import (
    OP_COMMAND,
    OP_COMPRESSED,
    OP_DELETE,
    OP_GET_MORE,
    OP_INSERT,
    OP_KILL_CURSORS,
    OP_QUERY,
    OP_REPLY,
    OP_UPDATE,
    body_section,
    message,
    op_msg_raw,
    seq_section,
)
from tests.vectors import bson_corpus_files

PING = {"ping": 1, "$db": "admin"}
FIND = {"find": "blog_posts", "filter": {"author": "a", "title": "t"}, "$db": "blog"}


def decode_errors() -> list[tuple[str, bytes]]:
    cases = []
    for path in bson_corpus_files():
        for case in json.loads(path.read_text()).get("decodeErrors", []):
            cases.append((f"{path.stem}: {case['description']}", bytes.fromhex(case["bson"])))
    return cases


DECODE_ERRORS = decode_errors()


def bad_op_msgs() -> dict[str, bytes]:
    body = body_section(PING)
    seq = seq_section("documents", [{"_id": 1}])
    good = op_msg_raw(body, 7)
    crc_ok = op_msg_raw(body, 7, checksum=True)
    return {
        "no body": op_msg_raw(seq, 7),
        "empty sections": op_msg_raw(b"", 7),
        "two bodies": op_msg_raw(body + body, 7),
        "duplicate sequence ids": op_msg_raw(body_section({"insert": "c", "$db": "d"}) + seq + seq, 7),
        "sequence id colliding with a body field": op_msg_raw(
            body_section({"insert": "c", "documents": [], "$db": "d"}) + seq, 7
        ),
        "sequence id colliding with a dotted body path": op_msg_raw(
            body_section({"insert": "c", "a": {"b": 1}, "$db": "d"}) + seq_section("a.b", [{"x": 1}]), 7
        ),
        "unknown section kind 2": op_msg_raw(body + b"\x02" + seq[1:], 7),
        "unknown section kind 255": op_msg_raw(b"\xff" + body[1:], 7),
        "body overruns the message": op_msg_raw(b"\x00" + struct.pack("<i", 500) + body[5:], 7),
        "body shorter than 5 bytes": op_msg_raw(b"\x00\x03\x00\x00", 7),
        "sequence overruns the message": op_msg_raw(body + b"\x01" + struct.pack("<i", 900) + seq[5:], 7),
        "sequence size below 5": op_msg_raw(body + b"\x01" + struct.pack("<i", 2) + seq[5:], 7),
        "sequence id without NUL": op_msg_raw(body + b"\x01" + struct.pack("<i", 8) + b"abcd", 7),
        "sequence id not UTF-8": op_msg_raw(body + b"\x01" + struct.pack("<i", 7) + b"\xff\xfe\x00", 7),
        "short flags": message(2013, b"\x00\x00", 7),
        "no flags": message(2013, b"", 7),
        "unknown required flag bit 2": op_msg_raw(body, 7, flags=1 << 2),
        "unknown required flag bit 15": op_msg_raw(body, 7, flags=1 << 15),
        "bad checksum": crc_ok[:-1] + bytes([crc_ok[-1] ^ 0xFF]),
        "checksum flag without room": op_msg_raw(b"", 7, flags=1),
        "the body's last bytes replaced by garbage": good[:-3] + b"\x01\x02\x03",
        "body with trailing garbage in the section": op_msg_raw(body + b"\x00\x00", 7),
    }


def other_opcodes() -> dict[str, bytes]:
    legacy_payload = struct.pack("<i", 0) + b"blog.blog_posts\x00" + body_section({"author": "a"})[1:]
    return {
        "unknown opcode 9999": message(9999, b"\x00" * 20, 7),
        "unknown opcode 0": message(0, b"", 7),
        "unknown opcode -1": message(-1, b"\x00" * 4, 7),
        "OP_REPLY from a client": message(OP_REPLY, b"\x00" * 20, 7),
        "OP_UPDATE": message(OP_UPDATE, legacy_payload + body_section({"$set": {"x": 1}})[1:], 7),
        "OP_INSERT": message(OP_INSERT, legacy_payload, 7),
        "OP_QUERY on a collection": message(OP_QUERY, legacy_payload[:4] + b"blog.blog_posts\x00" + struct.pack("<ii", 0, 1) + body_section({"author": "a"})[1:], 7),
        "OP_GET_MORE": message(OP_GET_MORE, struct.pack("<i", 0) + b"blog.blog_posts\x00" + struct.pack("<iq", 10, 12345), 7),
        "OP_DELETE": message(OP_DELETE, legacy_payload, 7),
        "OP_KILL_CURSORS": message(OP_KILL_CURSORS, struct.pack("<iiq", 0, 1, 12345), 7),
        "OP_COMMAND": message(OP_COMMAND, b"blog\x00find\x00" + body_section(FIND)[1:] + body_section({})[1:], 7),
        "OP_COMPRESSED with an unknown compressor": message(OP_COMPRESSED, struct.pack("<iiB", 2013, 10, 9) + b"x" * 10, 7),
        "OP_COMPRESSED wrapping OP_COMPRESSED": message(OP_COMPRESSED, struct.pack("<iiB", OP_COMPRESSED, 10, 0) + b"x" * 10, 7),
        "OP_COMPRESSED with a wrong uncompressedSize": message(
            OP_COMPRESSED, struct.pack("<iiB", 2013, 1000, 2) + zlib.compress(b"\x00" * 10), 7
        ),
        "OP_COMPRESSED zlib not decompressing": message(OP_COMPRESSED, struct.pack("<iiB", 2013, 10, 2) + b"notzlib!", 7),
        "OP_COMPRESSED of a bad OP_MSG": message(
            OP_COMPRESSED, struct.pack("<iiB", 2013, 6, 0) + b"\x00\x00\x00\x00\x02\x00", 7
        ),
    }


NEGATIVE = {**bad_op_msgs(), **other_opcodes()}




#: Legacy writes: their sender reads no reply, so a refusal closes the connection.
NO_REPLY = frozenset({"OP_INSERT", "OP_UPDATE", "OP_DELETE", "OP_KILL_CURSORS"})


def refusable() -> dict[str, bytes]:
    """Every kind of message the codec refuses although its frame is sound (request id
    7): the negative cases that expect a reply, plus a repeated or undecodable name or
    $db, bad BSON in a kind-1 document, no $db, and a compressed refusal."""
    from scalyproxy.wire import compress_message
    from tests.rawbson import bad, doc, op_msg

    return {
        **{k: v for k, v in NEGATIVE.items() if k not in NO_REPLY},
        "two $db": op_msg(doc(("ping", 1), ("$db", "admin"), ("$db", "x")), 7),
        "the name twice": op_msg(doc(("find", "a"), ("find", "b"), ("$db", "blog")), 7),
        "a $db that is not UTF-8": op_msg(doc(("ping", 1), ("$db", bad(b"\xff"))), 7),
        "invalid BSON in a kind-1 document": op_msg(doc(("insert", "c"), ("$db", "d")), 7, documents=[b"\x07\x00\x00\x00\x08a\x00"]),
        "no $db": op_msg(doc(("ping", 1)), 7),
        "compressed: two $db": compress_message(op_msg(doc(("ping", 1), ("$db", "admin"), ("$db", "x")), 7), 2),
    }


REFUSABLE = refusable()
