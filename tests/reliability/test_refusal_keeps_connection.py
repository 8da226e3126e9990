"""Issue 15, section 1, over real sockets: a refusal never costs the client its connection.

For each kind of message the proxy refuses although it knows where the message
ends (every codec refusal with a sound frame, a policy refusal, a repeated key in
a part the verdict reads), the client sends it, then a ``ping`` on the same
socket: the refused request gets an error reply to its own id, the ping answers
``{ok: 1}``. Only the legacy writes (no reply is ever read for them) and a lost
framing close. The upstream is the recording scripted peer: it shows that only
the pings arrived.
"""

from __future__ import annotations

import socket

import pytest

from tests.conftest import ProxyProcess
from tests.rawbson import doc, op_msg
from tests.reliability.cases import DECODE_ERRORS, NEGATIVE, NO_REPLY, PING, REFUSABLE
from tests.reliability.conftest import Upstream
from tests.reliability.helpers import (
    body_section,
    connect,
    error_or_close,
    header,
    is_closed,
    op_msg_raw,
    recv_message,
    reply_doc,
    response_to,
)

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

PROTOCOL, UNSUPPORTED, GLOBAL = 29005, 29006, 29001
TWICE = doc(("author", "a"), ("title", "t"), ("title", doc(("$ne", "t"))))

MORE_REFUSALS = {
    "a global query (policy)": (op_msg(doc(("find", "blog_posts"), ("filter", doc(("author", "a"))), ("$db", "blog")), 7), GLOBAL),
    "a repeated key in a filter the verdict reads": (op_msg(doc(("find", "blog_posts"), ("filter", TWICE), ("$db", "blog")), 7), PROTOCOL),
    "OP_QUERY beyond the handshake": (NEGATIVE["OP_QUERY on a collection"], UNSUPPORTED),
}


def ping_answers(s: socket.socket, request_id: int = 9) -> None:
    s.sendall(op_msg_raw(body_section(PING), request_id))
    reply = recv_message(s)
    assert response_to(reply) == request_id and reply_doc(reply)["ok"] == 1


@pytest.mark.parametrize("name", list(REFUSABLE))
def test_each_codec_refusal_then_a_ping_on_the_same_socket(name: str, guarded: ProxyProcess, upstream: Upstream) -> None:
    with connect(guarded.port) as s:
        s.sendall(REFUSABLE[name])
        outcome = error_or_close(s, 7)
        assert outcome in (f"error {PROTOCOL}", f"error {UNSUPPORTED}"), outcome
        ping_answers(s)
    assert len(upstream.new_messages()) == 1  # the ping only


@pytest.mark.parametrize("name", list(MORE_REFUSALS))
def test_policy_refusals_then_a_ping_on_the_same_socket(name: str, guarded: ProxyProcess, upstream: Upstream) -> None:
    message, code = MORE_REFUSALS[name]
    with connect(guarded.port) as s:
        s.sendall(message)
        assert error_or_close(s, 7) == f"error {code}"
        ping_answers(s)
    assert len(upstream.new_messages()) == 1


def test_every_bson_decode_error_on_one_connection(guarded: ProxyProcess, upstream: Upstream) -> None:
    """The bson-corpus decodeErrors as command bodies, one after another on one socket."""
    assert DECODE_ERRORS, "the bson-corpus is missing"
    with connect(guarded.port) as s:
        for i, (name, raw) in enumerate(DECODE_ERRORS):
            s.sendall(op_msg_raw(b"\x00" + raw, 1000 + i))
            assert error_or_close(s, 1000 + i) == f"error {PROTOCOL}", name
        ping_answers(s)
    assert len(upstream.new_messages()) == 1


def test_a_refused_more_to_come_request_is_unanswered_and_the_connection_stays(
    guarded: ProxyProcess, upstream: Upstream
) -> None:
    refused = op_msg(doc(("insert", "c"), ("$db", "d"), ("$db", "e")), 7, flags=2)
    with connect(guarded.port) as s:
        s.sendall(refused)
        ping_answers(s)  # the first reply on the socket is the ping's
    assert len(upstream.new_messages()) == 1


@pytest.mark.parametrize("name", sorted(NO_REPLY))
def test_a_legacy_write_is_answered_by_a_close(name: str, guarded: ProxyProcess, upstream: Upstream) -> None:
    with connect(guarded.port) as s:
        s.sendall(NEGATIVE[name])
        assert error_or_close(s, 7) == "closed"
    upstream.assert_nothing()


def test_a_length_prefix_out_of_bounds_closes(guarded: ProxyProcess, upstream: Upstream) -> None:
    with connect(guarded.port) as s:
        s.sendall(header(12, 7, 2013) + b"\x00" * 8)
        assert is_closed(s, 5)
    upstream.assert_nothing()
