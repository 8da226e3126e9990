"""Repeated refusal/warning lines are counted, not written one by one (``log_repeats_s``):
``Proxy.report_refusal`` and ``Proxy.flush_repeats`` with an injected clock, the log in
memory. The hooks (metrics, /report) still see every finding."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from scalyproxy.config import load_config
from scalyproxy.policy import Finding
from scalyproxy.server.hooks import Hooks
from scalyproxy.server.proxy import Proxy
from scalyproxy.server.relay import ClientConnection
from scalyproxy.server.repeats import RepeatTable
from tests.fuzz.memrelay import BLOG_CONFIG, LogSink, captured_logs

GLOBAL = Finding("global_query", 29001, "ScalyGlobalQuery", "find on blog.blog_posts without the shard key",
                 "blog.blog_posts", "find", '{"title":"string"}')
OTHER_SHAPE = replace(GLOBAL, shape='{"body":"string"}')
UNINDEXED = Finding("unindexed_query", 29002, "ScalyUnindexedQuery", "no index", "blog.blog_posts", "find",
                    '{"title":"string"}')


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingHooks(Hooks):
    def __init__(self) -> None:
        self.findings: list[tuple[str, bool]] = []

    def finding(self, conn: Any, view: Any, finding: Any, enforced: bool) -> None:
        self.findings.append((finding.rule, enforced))


class Wired:
    """A proxy (never started) whose repeat table reads ``clock``, and connections to it."""

    def __init__(self, log_repeats_s: float = 1.0, max_identities: int = 4096, log_values: bool = False) -> None:
        cfg = replace(load_config(BLOG_CONFIG), log_repeats_s=log_repeats_s, log_values=log_values)
        self.hooks = CountingHooks()
        self.proxy = Proxy(cfg, self.hooks)
        self.clock = Clock()
        self.proxy.repeats = RepeatTable(self.clock, max_identities)

    def conn(self, peer: str = "10.0.0.1:5000", app: str | None = "shop", user: str | None = None) -> ClientConnection:
        conn = ClientConnection(self.proxy)
        conn.peer, conn.app_name, conn.user = peer, app, user
        return conn

    def report(self, conn: ClientConnection, finding: Finding = GLOBAL, enforced: bool = True, times: int = 1) -> None:
        for _ in range(times):
            self.proxy.report_refusal(conn, None, finding, enforced)  # type: ignore[arg-type]


def findings(logs: LogSink) -> list[dict[str, Any]]:
    return [e for e in logs.events() if e["event"] in ("refused", "warned")]


def test_the_first_line_is_written_at_once_and_repeats_are_counted() -> None:
    w = Wired()
    conn = w.conn()
    with captured_logs(level="warning") as logs:
        w.report(conn)
        (first,) = findings(logs)
        assert first["event"] == "refused" and first["rule"] == "global_query" and first["app"] == "shop"
        assert first["client"] == "10.0.0.1:5000" and first["shape"] == '{"title":"string"}'
        assert "repeats" not in first and "summary" not in first
        w.clock.now += 0.5
        w.report(conn, times=9)
        w.clock.now += 0.49  # 0.99 s after the first line: still within it
        w.report(conn)
        assert len(findings(logs)) == 1
    assert len(w.hooks.findings) == 11  # every finding reported, whatever the log wrote


def test_the_next_line_after_the_interval_carries_the_repeats() -> None:
    w = Wired(log_repeats_s=2.0)
    conn = w.conn()
    with captured_logs(level="warning") as logs:
        w.report(conn, times=5)  # one line, 4 counted
        w.clock.now += 2.0
        w.report(conn)  # the interval has passed: logged, with the 4
        w.report(conn, times=3)  # within 2 s of that line: counted again
        w.clock.now += 2.5
        w.report(conn)
    lines = findings(logs)
    assert [e.get("repeats") for e in lines] == [None, 4, 3]
    assert not any("summary" in e for e in lines)
    assert len(w.hooks.findings) == 10


def test_the_flush_writes_a_summary_of_pending_repeats_once_their_interval_passed() -> None:
    w = Wired()
    with captured_logs(level="warning") as logs:
        w.report(w.conn(user="ann"))
        w.clock.now += 0.1
        w.report(w.conn(peer="10.0.0.2:6000", user="bob"), times=6)
        w.proxy.flush_repeats()  # 0.1 s after the line: not yet
        assert len(findings(logs)) == 1
        w.clock.now += 0.9
        w.proxy.flush_repeats()
        lines = findings(logs)
        assert len(lines) == 2
        summary = lines[1]
        assert summary["event"] == "refused" and summary["summary"] is True and summary["repeats"] == 6
        assert summary["client"] == "10.0.0.2:6000" and summary["user"] == "bob"  # the last one's
        assert (summary["rule"], summary["namespace"], summary["command"], summary["shape"], summary["app"]) == (
            "global_query", "blog.blog_posts", "find", '{"title":"string"}', "shop")
        assert summary["code_name"] == "ScalyGlobalQuery" and summary["level"] == "warning"
        w.proxy.flush_repeats()  # nothing pending any more
        assert len(findings(logs)) == 2
        w.report(w.conn())  # within 1 s of the summary line: counted
        w.clock.now += 1.0
        w.report(w.conn())  # logged, carrying the one counted since the summary
        assert findings(logs)[-1]["repeats"] == 1 and "summary" not in findings(logs)[-1]


def test_the_flush_forgets_identities_with_nothing_pending() -> None:
    w = Wired()
    with captured_logs(level="warning") as logs:
        w.report(w.conn())
        w.report(w.conn(), times=2)
        w.clock.now += 1.0
        w.proxy.flush_repeats()  # the summary of 2
        assert len(w.proxy.repeats.seen) == 1
        w.clock.now += 1.0
        w.proxy.flush_repeats()  # nothing came since: stale
        assert w.proxy.repeats.seen == {}
        w.report(w.conn())
    assert [e.get("repeats") for e in findings(logs)] == [None, 2, None]


def test_identities_are_independent() -> None:
    w = Wired()
    shop, ledger = w.conn(app="shop"), w.conn(app="ledger")
    with captured_logs(level="warning") as logs:
        for _ in range(3):
            w.report(shop)
            w.report(ledger)  # another app
            w.report(shop, OTHER_SHAPE)  # another shape
            w.report(shop, UNINDEXED, enforced=False)  # another rule, and warned
            w.report(shop, enforced=False)  # the same finding warned, not refused
        assert len(findings(logs)) == 5
        w.clock.now += 1.0
        w.proxy.flush_repeats()
    lines = findings(logs)
    summaries = [e for e in lines if e.get("summary")]
    assert len(summaries) == 5 and all(e["repeats"] == 2 for e in summaries)
    assert {(e["event"], e["rule"], e["app"], e["shape"]) for e in summaries} == {
        (e["event"], e["rule"], e["app"], e["shape"]) for e in lines[:5]}
    assert sorted(e["event"] for e in summaries) == ["refused", "refused", "refused", "warned", "warned"]


def test_zero_logs_every_finding() -> None:
    w = Wired(log_repeats_s=0)
    conn = w.conn()
    with captured_logs(level="warning") as logs:
        w.report(conn, times=5)
        w.proxy.flush_repeats()
    assert len(findings(logs)) == 5 and not any("repeats" in e for e in findings(logs))
    assert w.proxy.repeats.seen == {}


def test_a_reload_to_zero_flushes_what_is_pending_at_the_next_sweep() -> None:
    w = Wired()
    with captured_logs(level="warning") as logs:
        w.report(w.conn(), times=4)
        w.proxy.config = replace(w.proxy.config, log_repeats_s=0.0)
        w.proxy.flush_repeats()  # no time has passed, but repeats are no longer summarised
        w.report(w.conn())
    assert [(e.get("repeats"), e.get("summary")) for e in findings(logs)] == [(None, None), (3, True), (None, None)]
    assert w.proxy.repeats.seen == {}


def test_the_table_is_bounded_and_a_full_table_logs_every_line() -> None:
    w = Wired(max_identities=2)
    with captured_logs(level="warning") as logs:
        w.report(w.conn(app="a"), times=3)
        w.report(w.conn(app="b"), times=3)
        w.report(w.conn(app="c"), times=3)  # no room: each one logged, as with log_repeats_s: 0
        assert [e["app"] for e in findings(logs)] == ["a", "b", "c", "c", "c"]
        assert len(w.proxy.repeats.seen) == 2
        w.clock.now += 1.0
        w.proxy.flush_repeats()  # summaries of a and b
        w.clock.now += 1.0
        w.proxy.flush_repeats()  # a and b are stale now: forgotten
        assert w.proxy.repeats.seen == {}
        w.report(w.conn(app="c"), times=3)  # room again: c is summarised too
    apps = [(e["app"], e.get("repeats")) for e in findings(logs)]
    assert apps[5:] == [("a", 2), ("b", 2), ("c", None)]


def test_stop_writes_every_pending_summary() -> None:
    w = Wired(log_repeats_s=60)
    with captured_logs(level="warning") as logs:
        w.report(w.conn(), times=3)
        w.report(w.conn(), UNINDEXED, enforced=False, times=2)
        asyncio.run(w.proxy.stop(grace_s=0))  # long before the interval has passed
    summaries = [e for e in findings(logs) if e.get("summary")]
    assert {(e["event"], e["repeats"]) for e in summaries} == {("refused", 2), ("warned", 1)}
    assert w.proxy.repeats.seen == {}


def test_log_values_stay_on_the_lines_written() -> None:
    w = Wired(log_values=True)
    conn = w.conn()
    view: Any = type("View", (), {"body": {"find": "blog_posts", "filter": {"title": "secret"}}, "sequences": {}})()
    with captured_logs(level="warning") as logs:
        for _ in range(3):
            w.proxy.report_refusal(conn, view, GLOBAL, True)
        w.clock.now += 1.0
        w.proxy.report_refusal(conn, view, GLOBAL, True)
    lines = findings(logs)
    assert len(lines) == 2 and all("secret" in e["values"] for e in lines) and lines[1]["repeats"] == 2


def test_nothing_is_counted_when_warnings_are_not_logged() -> None:
    w = Wired()
    with captured_logs(level="error") as logs:
        w.report(w.conn(), times=3)
    assert findings(logs) == [] and w.proxy.repeats.seen == {}
    assert len(w.hooks.findings) == 3
