"""A refusal never costs the client its connection (issue 15, section 1), on the real
relay objects driven in memory: every message the codec refuses with a sane frame
is answered (or, with moreToCome, skipped) and the next message on the same
connection is read and forwarded; only legacy writes, which read no reply, and a
lost framing close the connection. The socket-level twin is
tests/reliability/test_refusal_keeps_connection.py."""

from __future__ import annotations

import struct

import pytest

from scalyproxy.wire import compress_message
from tests.fuzz.memrelay import MemoryRelay, captured_logs
from tests.rawbson import arr, doc, op_msg
from tests.reliability.cases import NEGATIVE, NO_REPLY, PING, REFUSABLE
from tests.reliability.helpers import body_section, op_msg_raw, reply_doc, response_to

FOLLOW_UP = op_msg_raw(body_section(PING), 9)
CASES = REFUSABLE


def refused_then_ping(first: bytes, *, together: bool) -> MemoryRelay:
    relay = MemoryRelay()
    if together:
        relay.from_client(first + FOLLOW_UP)
    else:
        relay.from_client(first)
        relay.from_client(FOLLOW_UP)
    return relay


@pytest.mark.parametrize("together", [False, True], ids=["two chunks", "one chunk"])
@pytest.mark.parametrize("name", list(CASES))
def test_a_refusal_is_answered_and_the_next_message_is_read(name: str, together: bool) -> None:
    with captured_logs(level="warning") as logs:
        relay = refused_then_ping(CASES[name], together=together)
    assert not relay.closed, name
    reply = relay.to_client
    assert response_to(reply) == 7 and len(reply) == struct.unpack_from("<i", reply)[0]  # one reply
    body = reply_doc(reply)
    assert body["ok"] == 0 and body["code"] in (29005, 29006) and "errorLabels" not in body
    assert relay.to_upstream == FOLLOW_UP  # the ping, and only it, went on
    (event,) = [e for e in logs.events() if e["event"] == "protocol_error"]
    assert event["outcome"] == "answered" and event["request_id"] == 7


@pytest.mark.parametrize("name", sorted(NO_REPLY))
def test_a_legacy_write_is_closed_on(name: str) -> None:
    """OP_INSERT & co. read no reply: closing is the only signal left to their sender."""
    relay = refused_then_ping(NEGATIVE[name], together=True)
    assert relay.closed and relay.to_client == b"" and relay.to_upstream == b""


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "compressed"])
def test_a_refused_more_to_come_request_gets_no_reply_and_the_connection_stays(compressed: bool) -> None:
    refused = op_msg(doc(("insert", "c"), ("$db", "d"), ("$db", "e")), 7, flags=2)
    if compressed:
        refused = compress_message(refused, 1)
    with captured_logs(level="warning") as logs:
        relay = refused_then_ping(refused, together=True)
    assert not relay.closed and relay.to_client == b"" and relay.to_upstream == FOLLOW_UP
    (event,) = [e for e in logs.events() if e["event"] == "protocol_error"]
    assert event["outcome"] == "unanswered"


def test_a_refusal_by_the_policy_keeps_the_connection_too() -> None:
    relay = MemoryRelay()
    refused = op_msg_raw(body_section({"find": "blog_posts", "filter": {"author": "a"}, "$db": "blog"}), 7)
    relay.from_client(refused + FOLLOW_UP)
    assert not relay.closed and reply_doc(relay.to_client)["code"] == 29001
    assert relay.to_upstream == FOLLOW_UP


def test_a_lost_framing_closes() -> None:
    relay = MemoryRelay()
    relay.from_client(struct.pack("<iiii", 5, 7, 0, 2013) + FOLLOW_UP)
    assert relay.closed and relay.to_upstream == b""


def test_the_reply_to_a_legacy_query_is_an_op_reply() -> None:
    relay = refused_then_ping(NEGATIVE["OP_GET_MORE"], together=True)
    assert struct.unpack_from("<i", relay.to_client, 12)[0] == 1  # OP_REPLY
    assert reply_doc(relay.to_client)["code"] == 29006


def test_pings_in_between_refusals_all_go_through() -> None:
    relay = MemoryRelay()
    stream = b"".join(CASES[name] + FOLLOW_UP for name in CASES)
    relay.from_client(stream)
    assert not relay.closed
    assert relay.to_upstream == FOLLOW_UP * len(CASES)
    count, pos, out = 0, 0, relay.to_client
    while pos < len(out):
        count += 1
        pos += struct.unpack_from("<i", out, pos)[0]
    assert count == len(CASES)


def test_a_hello_whose_compression_list_is_in_doubt_is_refused() -> None:
    """The proxy rewrites the compression list, so it reads it strictly."""
    relay = MemoryRelay()
    hello = op_msg(doc(("hello", 1), ("compression", arr("zlib")), ("compression", arr("lz4")), ("$db", "admin")), 7)
    relay.from_client(hello + FOLLOW_UP)
    assert not relay.closed and reply_doc(relay.to_client)["code"] == 29005
    assert relay.to_upstream == FOLLOW_UP


def test_a_hello_with_client_metadata_in_doubt_goes_through_unnamed() -> None:
    """The application name is only for logs: one in doubt is not noted, the hello is forwarded."""
    relay = MemoryRelay()
    client = doc(("application", doc(("name", "a"), ("name", "b"))))
    hello = op_msg(doc(("hello", 1), ("client", client), ("$db", "admin")), 7)
    relay.from_client(hello)
    assert relay.to_upstream == hello and relay.to_client == b"" and relay.conn.app_name is None
    named = op_msg(doc(("hello", 1), ("client", doc(("application", doc(("name", "shop"),))),), ("$db", "admin")), 8)
    relay.from_client(named)
    assert relay.conn.app_name == "shop"


def test_an_empty_command_name_goes_to_the_server() -> None:
    """It once cost the connection (an IndexError in the relay); the server answers it."""
    relay = MemoryRelay()
    nameless = op_msg(doc(("", 1), ("$db", "admin")), 7)
    with captured_logs() as logs:
        relay.from_client(nameless)
    assert not relay.closed and relay.to_upstream == nameless
    assert not [e for e in logs.events() if e["event"] == "internal_error"]
