"""Hot reload (file changes and SIGHUP) and the read-only switch, on a running proxy.

One MongoClient is kept open across each reload: the new policy must apply to
the next command of connections that are already open.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

import pytest
from pymongo.errors import OperationFailure

from tests.conftest import ProxyProcess
from tests.integration.test_ops import (
    Client,
    admin_of,
    client,
    log_events,
    scrape,
    start_proxy,
    value,
    wait_for_event,
)

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

__all__ = ["start_proxy"]  # the fixture, imported for this module's tests

BASE = """\
listen: 127.0.0.1:0
upstream: mongodb://127.0.0.1:1
admin_listen: 127.0.0.1:0
read_only: {read_only}
policy:
  unknown_namespaces: allow
  rules: {{unindexed_query: off}}
collections:
  reload.other:
    indexes:
      - fields: [k]
        shard_key: true
"""

NEW_RULE = """\
  reload.items:
    indexes:
      - fields: [owner]
        shard_key: true
"""

BROKEN = """\
listen: 127.0.0.1:0
upstream: mongodb://127.0.0.1:1
admin_listen: 127.0.0.1:0
read_only: perhaps
collections:
  reload.items:
    indexes:
      - fields: [owner]
        shard_key: true
        unique: very
"""


def _config(read_only: bool = False, items_rule: bool = False) -> str:
    return BASE.format(read_only=str(read_only).lower()) + (NEW_RULE if items_rule else "")


def _config_path(proxy: ProxyProcess) -> Path:
    return proxy.config_path


def test_new_rule_applies_to_open_connections(
    start_proxy: Callable[..., ProxyProcess], direct_client: Client
) -> None:
    direct_client.reload.items.drop()
    direct_client.reload.items.insert_one({"owner": "ann", "n": 1})
    p = start_proxy(_config())
    admin = admin_of(p)
    c = client(p, "reload-app", maxPoolSize=1)
    try:
        assert (c.reload.items.find_one({"n": 1}) or {}).get("owner") == "ann"  # not declared yet: allowed
        _config_path(p).write_text(_config(items_rule=True))
        wait_for_event(p, "config_reloaded", trigger="file_changed")
        with pytest.raises(OperationFailure) as exc:  # same client, same connection, next command
            c.reload.items.find_one({"n": 1})
        assert exc.value.code == 29001
        assert (c.reload.items.find_one({"owner": "ann"}) or {}).get("n") == 1
        assert (c.reload.items.find_one({"n": 1}, comment="scaly:allow-global") or {}).get("owner") == "ann"
    finally:
        c.close()
    m = scrape(admin)
    assert value(m, "scalyproxy_config_reloads_total", outcome="success") == 1
    assert value(m, "scalyproxy_config_generation") == 2
    assert value(m, "scalyproxy_refusals_total", rule="global_query", namespace="reload.items") == 1


def test_broken_file_keeps_the_running_rules(start_proxy: Callable[..., ProxyProcess]) -> None:
    p = start_proxy(_config(items_rule=True))
    admin = admin_of(p)
    c = client(p, "broken-app")
    try:
        _config_path(p).write_text(BROKEN)
        failed = wait_for_event(p, "config_reload_failed")
        assert failed["errors"] == 2
        errors = [e for e in log_events(p) if e["event"] == "config_error"]
        assert sorted((e["line"], e["key"]) for e in errors) == [
            (4, "read_only"), (10, "collections.reload.items.indexes.0.unique")
        ]
        assert p.proc is not None and p.proc.poll() is None  # still up
        with pytest.raises(OperationFailure) as exc:  # the old rules: still enforced, read_only still off
            c.reload.items.find_one({"n": 1})
        assert exc.value.code == 29001
        c.reload.items.insert_one({"owner": "bob"})
        m = scrape(admin)
        assert value(m, "scalyproxy_config_reloads_total", outcome="failure") == 1
        assert value(m, "scalyproxy_config_reloads_total", outcome="success") == 0
        assert value(m, "scalyproxy_config_generation") == 1
        _config_path(p).write_text(_config())  # fixed: the next change is applied
        wait_for_event(p, "config_reloaded", trigger="file_changed")
        assert c.reload.items.find_one({"owner": "bob"}) is not None
        assert c.reload.items.count_documents({}) >= 1  # reload.items is no longer declared
    finally:
        c.close()


def test_sighup_reloads(start_proxy: Callable[..., ProxyProcess]) -> None:
    p = start_proxy(_config())
    admin = admin_of(p)
    assert p.proc is not None
    p.proc.send_signal(signal.SIGHUP)  # the file did not change: only the signal reloads
    line = wait_for_event(p, "config_reloaded", trigger="sighup")
    assert line["generation"] == 2
    assert value(scrape(admin), "scalyproxy_config_generation") == 2
    assert not [e for e in log_events(p) if e["event"] == "config_reloaded" and e["trigger"] != "sighup"]


def test_restart_only_settings_keep_running_values(start_proxy: Callable[..., ProxyProcess]) -> None:
    p = start_proxy(_config())
    admin = admin_of(p)
    _config_path(p).write_text(_config().replace("admin_listen: 127.0.0.1:0", "admin_listen: 127.0.0.1:1"))
    line = wait_for_event(p, "reload_restart_required")
    assert line["fields"] == ["admin_listen"]
    assert scrape(admin)  # the admin listener still answers where it was
    c = client(p, "restart-only")
    try:
        assert c.admin.command("ping")["ok"] == 1.0
    finally:
        c.close()


def test_read_only_is_hot_reloadable(start_proxy: Callable[..., ProxyProcess], direct_client: Client) -> None:
    direct_client.reload.ro.drop()
    p = start_proxy(_config())
    admin = admin_of(p)
    c = client(p, "ro-app", maxPoolSize=1)
    try:
        c.reload.ro.insert_one({"_id": 1})
        _config_path(p).write_text(_config(read_only=True))
        wait_for_event(p, "config_reloaded", read_only=True)
        for write in (
            lambda: c.reload.ro.insert_one({"_id": 2}),
            lambda: c.reload.ro.update_one({"_id": 1}, {"$set": {"x": 1}}),
            lambda: c.reload.ro.delete_many({}),
            lambda: c.reload.ro.drop(),
        ):
            with pytest.raises(OperationFailure) as exc:
                write()
            assert exc.value.code == 29004
            assert exc.value.details is not None and exc.value.details["codeName"] == "ScalyCommandDenied"
        assert c.reload.ro.find_one({"_id": 1}) == {"_id": 1}  # reads still work
        assert value(scrape(admin), "scalyproxy_read_only") == 1
        line = wait_for_event(p, "refused", rule="read_only")
        assert line["app"] == "ro-app" and line["command"] == "insert"
        _config_path(p).write_text(_config(read_only=False))
        wait_for_event(p, "config_reloaded", read_only=False)
        c.reload.ro.insert_one({"_id": 3})
    finally:
        c.close()
    assert sorted(d["_id"] for d in direct_client.reload.ro.find()) == [1, 3]
    assert value(scrape(admin), "scalyproxy_read_only") == 0
