"""The relay's C fast path: a targeted command (find, insert, update, delete,
findAndModify, count, distinct, aggregate) is allowed on its bytes, forwarded
unchanged and counted like any command, whole or framed from pieces; anything
else still goes through the engine."""

from __future__ import annotations

from typing import Any

import pytest

from bench import messages as m
from bench.bench_relay import NullTransport
from bench.canned import Canned
from scalyproxy.admin.events import AdminHooks
from scalyproxy.admin.metrics import Metrics
from scalyproxy.admin.report import ShadowReport
from scalyproxy.config import load_config, load_config_text
from scalyproxy.policy import Engine
from scalyproxy.server import relay as relay_module
from scalyproxy.server.proxy import Proxy
from scalyproxy.server.relay import ClientConnection, UpstreamConnection
from scalyproxy.wire.documents import HAVE_SCAN
from tests.conftest import BLOG_CONFIG

pytestmark = pytest.mark.skipif(not HAVE_SCAN, reason="the C extension is not built")


class Recorder(NullTransport):
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        self.written: list[bytes] = []

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def writelines(self, data: Any) -> None:
        self.written.extend(bytes(d) for d in data)


class Host:
    address = "127.0.0.1:1"


class Wired:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cfg = load_config(BLOG_CONFIG)
        self.metrics = Metrics(cfg.collections)
        self.proxy = Proxy(cfg, AdminHooks(self.metrics, ShadowReport(cfg.report_size)))
        self.decided: list[str] = []
        engine = self.proxy.engine
        real = engine.decide

        def counting(cmd: Any) -> Any:
            self.decided.append(cmd.name)
            return real(cmd)

        monkeypatch.setattr(engine, "decide", counting)
        self.client = ClientConnection(self.proxy)
        self.to_client = Recorder()
        self.client.transport = self.to_client  # type: ignore[assignment]
        self.upstream = UpstreamConnection(self.client, Host())  # type: ignore[arg-type]
        self.to_upstream = Recorder()
        self.upstream.transport = self.to_upstream  # type: ignore[assignment]
        self.client.upstream = self.upstream

    def count(self, command: str, verdict: str) -> float:
        return self.metrics.commands.get((command, "blog.blog_posts", verdict))


def test_targeted_commands_skip_the_engine_and_go_up_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    w = Wired(monkeypatch)
    find = m.with_request_id(m.find_by_key(1), 11)
    insert = m.with_request_id(m.insert_one(2), 12)
    w.client.data_received(find)
    w.client.data_received(insert)
    assert w.to_upstream.written == [find, insert]
    assert w.decided == []
    assert w.count("find", "allowed") == 1 and w.count("insert", "allowed") == 1
    canned = Canned()
    w.upstream.data_received(canned.op_msg(11, canned.cursor))
    w.upstream.data_received(canned.op_msg(12, canned.writes[1]))
    assert len(w.to_client.written) == 2
    assert w.metrics.round_trip_seconds.count(("find",)) == 1
    assert w.metrics.round_trip_seconds.count(("insert",)) == 1
    assert w.metrics.proxy_seconds.count() == 2
    assert not w.client.sent_at


TARGETED = [("update", "writes"), ("delete", "writes"), ("findAndModify", "ok"), ("count", "ok"),
            ("distinct", "ok"), ("aggregate", "cursor")]  # fmt: skip


@pytest.mark.parametrize(("command", "reply"), TARGETED)
def test_every_targeted_command_goes_up_byte_for_byte(monkeypatch: pytest.MonkeyPatch, command: str, reply: str) -> None:
    w = Wired(monkeypatch)
    sent = [m.with_request_id(m.targeted(command, i), 70 + i) for i in range(3)]
    w.client.data_received(sent[0])
    w.client.data_received(sent[1][:25])  # one in pieces: framed, then decided in C too
    w.client.data_received(sent[1][25:] + sent[2])
    assert w.to_upstream.written == sent  # the original bytes, one write each
    assert w.decided == []
    assert w.count(command, "allowed") == 3
    canned = Canned()
    body = {"writes": canned.writes[1], "ok": canned.ok, "cursor": canned.cursor}[reply]
    for i in range(3):
        w.upstream.data_received(canned.op_msg(70 + i, body))
    assert len(w.to_client.written) == 3
    assert w.metrics.round_trip_seconds.count((command,)) == 3
    assert not w.client.sent_at


KEY = {"author": "user001", "title": "t000001"}


def test_untargeted_forms_of_the_new_commands_go_to_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    w = Wired(monkeypatch)
    statement = m.bson.encode({"q": {"author": "x"}, "u": {"$set": {"body": "b"}}})
    w.client.data_received(m.op_msg({"update": m.COLLECTION, "$db": m.DB}, {"updates": [statement]}, request_id=81))
    change = m.bson.encode({"q": KEY, "u": {"$set": {"author": "y"}}})
    w.client.data_received(m.op_msg({"update": m.COLLECTION, "$db": m.DB}, {"updates": [change]}, request_id=82))
    lookup = [{"$match": KEY}, {"$lookup": {"from": "x", "localField": "a", "foreignField": "b", "as": "c"}}]
    aggregate = m.op_msg({"aggregate": m.COLLECTION, "pipeline": lookup, "cursor": {}, "$db": m.DB}, request_id=83)
    w.client.data_received(aggregate)
    assert w.decided == ["update", "update", "aggregate"]
    assert w.to_upstream.written == [aggregate]  # the updates were refused: error replies to the client
    assert w.count("update", "refused") == 2 and w.count("aggregate", "allowed") == 1
    assert len(w.to_client.written) == 2


def test_a_message_in_pieces_takes_the_fast_path_too(monkeypatch: pytest.MonkeyPatch) -> None:
    w = Wired(monkeypatch)
    find = m.with_request_id(m.find_by_key(1), 21)
    w.client.data_received(find[:10])
    w.client.data_received(find[10:] + find[:30])  # the end of one, the start of the next
    w.client.data_received(find[30:])
    assert w.to_upstream.written == [find, find]
    assert w.decided == [] and w.count("find", "allowed") == 2


def test_other_commands_still_go_through_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    w = Wired(monkeypatch)
    untargeted = m.op_msg({"find": m.COLLECTION, "filter": {"author": "x"}, "$db": m.DB}, request_id=31)
    w.client.data_received(untargeted)
    assert w.decided == ["find"]
    assert w.to_upstream.written == []  # refused: the error reply went to the client
    assert len(w.to_client.written) == 1 and b"errmsg" in w.to_client.written[0]
    assert w.count("find", "refused") == 1


def test_unacknowledged_insert_on_the_fast_path_expects_no_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    w = Wired(monkeypatch)
    w0 = m.op_msg({"insert": m.COLLECTION, "$db": m.DB, "writeConcern": {"w": 0}},
                  {"documents": [m.bson.encode(m.post(1))]}, request_id=41, flags=m.FLAG_MORE_TO_COME)
    w.client.data_received(w0)
    assert w.to_upstream.written == [w0] and w.decided == []
    assert 41 in w.client.tracker.drop_ids and 41 not in w.client.sent_at
    canned = Canned()
    w.upstream.data_received(canned.op_msg(41, canned.writes[1]))  # FerretDB v1 answers anyway
    assert w.to_client.written == []  # dropped: the driver expects nothing


def test_without_the_extension_the_engine_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(relay_module, "fast_decide", None)
    w = Wired(monkeypatch)
    find = m.with_request_id(m.find_by_key(1), 51)
    w.client.data_received(find)
    assert w.to_upstream.written == [find] and w.decided == ["find"]
    assert w.count("find", "allowed") == 1


def test_the_table_follows_a_reloaded_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    w = Wired(monkeypatch)
    text = BLOG_CONFIG.read_text().replace("deny_commands: []", "deny_commands: [find]")
    w.proxy.engine = Engine.from_config(load_config_text(text))
    w.client.data_received(m.with_request_id(m.find_by_key(1), 61))
    assert w.to_upstream.written == []  # denied now, by the new engine
    assert w.metrics.commands.get(("find", "none", "refused")) == 1  # denied before any namespace is read
