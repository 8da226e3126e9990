"""Issue 15, section 2, proved against the recording upstream: each boundary that moved
(a repeated key or a string that is not UTF-8 is refused only where the verdict
reads) is no bypass.

For every place the verdict reads (filters and queries, update and replacement
documents, inserted documents, the pipeline stages the targeting walks, $lookup
sub-pipelines, the comment read for the marker, bulkWrite's ops, explain's inner
command), the repeat on the DECLARED blog.blog_posts is refused
(ScalyProtocolError) and nothing of it reaches the upstream; the very same
repeat on the undeclared blog.other is forwarded byte for byte. Namespace
fields and the keys of the stages the walk reads are strict everywhere. The
connection stays usable after each refusal.
"""

from __future__ import annotations

import pytest

from tests.conftest import ProxyProcess
from tests.reliability.cases import PING
from tests.reliability.conftest import Upstream
from tests.reliability.helpers import (
    body_section,
    connect,
    error_or_close,
    op_msg_raw,
    recv_message,
    reply_doc,
    response_to,
)
from tests.strict_cases import ALWAYS_STRICT, DECLARED, READ_WHEN_DECLARED, UNDECLARED, UNREAD

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

PROTOCOL = 29005


def with_id(message: bytes, request_id: int) -> bytes:
    return message[:4] + request_id.to_bytes(4, "little", signed=True) + message[8:]


def refused_and_still_usable(port: int, message: bytes) -> None:
    with connect(port) as s:
        s.sendall(with_id(message, 7))
        assert error_or_close(s, 7) == f"error {PROTOCOL}"
        s.sendall(op_msg_raw(body_section(PING), 9))
        reply = recv_message(s)
        assert response_to(reply) == 9 and reply_doc(reply)["ok"] == 1


def forwarded_as_sent(port: int, message: bytes, upstream: Upstream) -> None:
    sent = with_id(message, 8)
    with connect(port) as s:
        s.sendall(sent)
        reply = recv_message(s)  # the scripted peer answers {ok: 1}
        assert response_to(reply) == 8 and reply_doc(reply)["ok"] == 1
    got = upstream.new_messages()
    assert got == [sent], [m[:40] for m in got]


@pytest.mark.parametrize("name", list(READ_WHEN_DECLARED))
def test_a_repeat_the_verdict_reads_never_reaches_the_upstream(name: str, guarded: ProxyProcess, upstream: Upstream) -> None:
    message = READ_WHEN_DECLARED[name](DECLARED)
    refused_and_still_usable(guarded.port, message)
    got = upstream.new_messages()
    assert len(got) == 1 and with_id(message, 7) not in got  # the ping only


@pytest.mark.parametrize("name", list(READ_WHEN_DECLARED))
def test_the_same_repeat_on_an_undeclared_namespace_is_forwarded(name: str, guarded: ProxyProcess, upstream: Upstream) -> None:
    forwarded_as_sent(guarded.port, READ_WHEN_DECLARED[name](UNDECLARED), upstream)


@pytest.mark.parametrize("name", list(ALWAYS_STRICT))
def test_namespace_fields_and_walked_stages_are_strict_everywhere(name: str, guarded: ProxyProcess, upstream: Upstream) -> None:
    refused_and_still_usable(guarded.port, ALWAYS_STRICT[name])
    assert len(upstream.new_messages()) == 1  # the ping only


@pytest.mark.parametrize("name", list(UNREAD))
def test_what_no_rule_reads_is_forwarded(name: str, guarded: ProxyProcess, upstream: Upstream) -> None:
    forwarded_as_sent(guarded.port, UNREAD[name], upstream)
