"""The shadow report: LRU bounds, grouping by (rule, namespace, appName, shape), the table."""

from __future__ import annotations

from typing import Any

import pytest

from scalyproxy.admin.report import MAX_APP_NAME, ShadowReport, format_table


def _record(report: ShadowReport, shape: str | None = '{"a":"int"}', app: str | None = "web",
            rule: str = "global_query", enforced: bool = False, now: float = 1000.0,
            namespace: str = "db.c") -> None:
    report.record(rule=rule, namespace=namespace, app=app, shape=shape, command="find",
                  code_name="ScalyGlobalQuery", reason="no shard key", enforced=enforced, now=now)


def test_same_key_counts_once_with_first_and_last_seen() -> None:
    r = ShadowReport(10)
    _record(r, now=1000.0)
    _record(r, now=1001.5, enforced=True)
    _record(r, now=1003.25)
    [entry] = r.as_json()["entries"]
    assert (entry["count"], entry["refused"], entry["warned"]) == (3, 1, 2)
    assert entry["first_seen"] == "1970-01-01T00:16:40.000Z"
    assert entry["last_seen"] == "1970-01-01T00:16:43.250Z"


@pytest.mark.parametrize("field", ["shape", "app", "rule", "namespace"])
def test_each_key_part_separates_entries(field: str) -> None:
    r = ShadowReport(10)
    _record(r)
    other: dict[str, Any] = {field: "something else"}
    _record(r, **other)
    assert r.as_json()["size"] == 2


def test_lru_evicts_the_least_recently_seen() -> None:
    r = ShadowReport(2)
    _record(r, shape="s1", now=1)
    _record(r, shape="s2", now=2)
    _record(r, shape="s1", now=3)  # s1 is now the most recent
    _record(r, shape="s3", now=4)  # s2 goes
    doc = r.as_json()
    assert {e["shape"] for e in doc["entries"]} == {"s1", "s3"}
    assert doc["evicted"] == 1 and doc["capacity"] == 2
    r.resize(1)
    assert [e["shape"] for e in r.as_json()["entries"]] == ["s3"]
    assert r.as_json()["evicted"] == 2


def test_entries_sorted_by_count() -> None:
    r = ShadowReport(10)
    _record(r, shape="rare")
    for _ in range(3):
        _record(r, shape="often")
    assert [e["shape"] for e in r.as_json()["entries"]] == ["often", "rare"]


def test_long_app_names_are_cut() -> None:
    r = ShadowReport(10)
    _record(r, app="x" * 1000)
    _record(r, app="x" * 2000)
    [entry] = r.as_json()["entries"]
    assert entry["app"] == "x" * MAX_APP_NAME and entry["count"] == 2


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ShadowReport(0)


def test_table() -> None:
    r = ShadowReport(10)
    _record(r, shape='{"title":"string"}')
    _record(r, shape='{"title":"string"}', enforced=True)
    _record(r, shape=None, app=None, rule="read_only")
    lines = format_table(r.as_json()).splitlines()
    assert lines[0].split() == ["COUNT", "REFUSED", "WARNED", "RULE", "NAMESPACE", "APP", "COMMAND", "LAST",
                                "SEEN", "SHAPE"]
    assert lines[1].split()[:6] == ["2", "1", "1", "global_query", "db.c", "web"]
    assert lines[1].endswith('{"title":"string"}')
    assert lines[2].split()[3] == "read_only" and lines[2].split()[5] == "-" and lines[2].endswith("-")
    assert lines[3].startswith("2 shape(s) since ")


def test_empty_table_says_so() -> None:
    assert format_table(ShadowReport(5).as_json()).startswith("nothing refused or warned yet")
