"""Nothing secret is logged: SCRAM payloads, passwords, keys, and document values
(the proxy logs query shapes with values replaced by type names; config
``log_values`` is false by default).

FerretDB (embedded) has no authentication, so the SASL conversation goes to
the recording peer: what matters is what the proxy writes to its log while the
bytes pass through, at the most verbose level (debug), for forwarded and
refused commands and for protocol errors alike.
"""

from __future__ import annotations

import base64
import struct
from collections.abc import Callable
from pathlib import Path

import bson
import pytest

from tests.conftest import BLOG_CONFIG, ProxyProcess
from tests.reliability.helpers import (
    body_section,
    connect,
    error_or_close,
    op_msg,
    op_msg_raw,
    recv_message,
)
from tests.scripted_peer import ScriptedPeer

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

SECRETS = {
    "sasl": b"n,,n=alice,r=SECRET-NONCE-4f9a1c",
    "password": "SECRET-PASSWORD-77c2",
    "key": "SECRET-KEY-0b1d",
    "value": "SECRET-VALUE-5e8f",
    "nested": "SECRET-NESTED-93aa",
}


@pytest.fixture(scope="module")
def debug_proxy(
    proxy_factory: Callable[..., ProxyProcess], peer: ScriptedPeer, tmp_path_factory: pytest.TempPathFactory
) -> ProxyProcess:
    path: Path = tmp_path_factory.mktemp("logs") / "debug.yaml"
    path.write_text(BLOG_CONFIG.read_text() + "log_level: debug\nlog_values: false\n")
    return proxy_factory(path, upstream=peer.uri)


def forwarded(port: int, msg: bytes) -> None:
    with connect(port) as s:
        s.sendall(msg)
        recv_message(s)


def refused(port: int, msg: bytes, rid: int) -> None:
    with connect(port) as s:
        s.sendall(msg)
        assert error_or_close(s, rid) != ""


def test_no_secret_reaches_the_log(debug_proxy: ProxyProcess) -> None:
    port = debug_proxy.port
    sasl = bson.Binary(SECRETS["sasl"])
    forwarded(port, op_msg({"hello": 1, "speculativeAuthenticate": {"saslStart": 1, "mechanism": "SCRAM-SHA-256",
                                                                  "payload": sasl, "db": "admin"}, "$db": "admin"}, 1))
    forwarded(port, op_msg({"saslStart": 1, "mechanism": "SCRAM-SHA-256", "payload": sasl, "$db": "admin"}, 2))
    forwarded(port, op_msg({"saslContinue": 1, "conversationId": 1, "payload": bson.Binary(SECRETS["key"].encode()),
                            "$db": "admin"}, 3))
    forwarded(port, op_msg({"createUser": "alice", "pwd": SECRETS["password"], "roles": [], "$db": "admin"}, 4))
    forwarded(port, op_msg({"authenticate": 1, "user": "alice", "key": SECRETS["key"], "$db": "admin"}, 5))
    # refused by the policy: the log names the rule and the query's shape
    refused(port, op_msg({"find": "blog_posts", "filter": {"author": SECRETS["value"],
                                                            "x": {"$in": [SECRETS["nested"]]}}, "$db": "blog"}, 6), 6)
    refused(port, op_msg({"insert": "blog_posts", "$db": "blog"}, 7,
                         documents=[{"author": SECRETS["value"], "title": 5, "body": SECRETS["nested"]}]), 7)
    refused(port, op_msg({"update": "blog_posts", "$db": "blog"}, 8,
                         updates=[{"q": {"author": SECRETS["value"]}, "u": {"$set": {"body": SECRETS["nested"]}}}]), 8)
    # refused by the codec: a duplicate key, and a broken document carrying the secret
    dup = bson.encode({"find": "blog_posts", "filter": {"author": SECRETS["value"]}, "$db": "blog"})
    dup = struct.pack("<i", len(dup) + len(dup[4:-1]) ) + dup[4:-1] + dup[4:-1] + b"\x00"
    refused(port, op_msg_raw(body_section(dup), 9), 9)
    broken = bytearray(bson.encode({"find": "blog_posts", "filter": {"author": SECRETS["value"]}, "$db": "blog"}))
    broken[-2] = 0x7  # the $db string loses its NUL
    refused(port, op_msg_raw(body_section(bytes(broken)), 10), 10)
    log = debug_proxy.log_text()
    assert '"refused"' in log and '"protocol_error"' in log, "the refusals were not logged at all"
    for name, secret in SECRETS.items():
        raw = secret if isinstance(secret, bytes) else secret.encode()
        for form in (raw, base64.b64encode(raw), raw.hex().encode()):
            assert form.decode() not in log, f"the {name} secret appears in the log"
