"""``workers: 2``: a supervisor and two worker processes on one port, against the real
FerretDB. Which worker holds a connection is read from /proc (the worker process
whose file descriptors include the server side of that TCP connection)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from scalyproxy.backend import FerretDB
from tests.conftest import ROOT, ProxyProcess
from tests.integration.test_ops import (
    admin_of,
    http,
    log_events,
    scrape,
    start_proxy,
    value,
    wait_for_event,
)
from tests.integration.test_ops_drift import DRIFT_CONFIG, catalogue
from tests.reliability.helpers import connect, op_msg, recv_message, reply_doc
from tests.reliability.test_tls import make_ca

__all__ = ["catalogue", "start_proxy"]  # the fixtures, imported for this module's tests

CONFIG = """\
listen: 127.0.0.1:0
upstream: {upstream}
admin_listen: 127.0.0.1:0
workers: 2
policy:
  unknown_namespaces: allow
  rules: {{unindexed_query: off}}
collections:
  fleet.items:
    structure: {{owner: string, n: int}}
    indexes:
      - fields: [owner]
        shard_key: true
"""

BROKEN = """\
listen: 127.0.0.1:0
upstream: {upstream}
admin_listen: 127.0.0.1:0
workers: 2
read_only: perhaps
"""


def _inodes_of(pid: int) -> set[str]:
    out = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def _server_inode(proxy_port: int, client_port: int) -> str | None:
    """The inode of the proxy's side of the connection from ``client_port``."""
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            parts = line.split()
            local, remote, inode = parts[1], parts[2], parts[9]
            if int(local.split(":")[1], 16) == proxy_port and int(remote.split(":")[1], 16) == client_port:
                return inode
    return None


def worker_pids(p: ProxyProcess) -> list[int]:
    started = [e for e in log_events(p) if e["event"] == "started"]
    return [int(pid) for pid in started[0]["pids"]]


def owner(p: ProxyProcess, s: socket.socket, pids: list[int]) -> int:
    """The pid of the worker serving socket ``s``."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        inode = _server_inode(p.port, s.getsockname()[1])
        for pid in pids:
            if inode is not None and inode in _inodes_of(pid):
                return pid
        time.sleep(0.05)
    raise AssertionError("no worker holds the connection")


def ping(s: socket.socket, request_id: int) -> dict[str, Any]:
    s.sendall(op_msg({"ping": 1, "$db": "admin"}, request_id=request_id))
    return reply_doc(recv_message(s))


def command(s: socket.socket, body: dict[str, Any], request_id: int) -> dict[str, Any]:
    s.sendall(op_msg(body, request_id=request_id))
    return reply_doc(recv_message(s))


@pytest.fixture()
def fleet(start_proxy: Callable[..., ProxyProcess], ferretdb: FerretDB) -> ProxyProcess:
    return start_proxy(CONFIG.format(upstream=ferretdb.uri), name="fleet.yaml")


@pytest.fixture()
def spread(fleet: ProxyProcess) -> Iterator[dict[int, socket.socket]]:
    """One open connection on each worker: {worker pid: socket}."""
    pids = worker_pids(fleet)
    assert len(pids) == 2 and len(set(pids)) == 2
    by_pid: dict[int, socket.socket] = {}
    extra: list[socket.socket] = []
    try:
        for _ in range(64):
            s = connect(fleet.port)
            pid = owner(fleet, s, pids)
            if pid in by_pid:
                extra.append(s)
            else:
                by_pid[pid] = s
            if len(by_pid) == 2:
                break
        assert len(by_pid) == 2, "64 connections all went to one worker"
        for s in extra:  # only one connection per worker stays open during the test
            s.close()
        extra.clear()
        yield by_pid
    finally:
        for s in [*extra, *by_pid.values()]:
            s.close()


def test_fleet_announces_one_port_and_runs_two_workers(fleet: ProxyProcess) -> None:
    pids = worker_pids(fleet)
    started = [e for e in log_events(fleet) if e["event"] == "worker_started"]
    assert sorted(e["worker"] for e in started) == [0, 1]
    assert {e["listen"] for e in started} == {f"127.0.0.1:{fleet.port}"}
    assert fleet.proc is not None and fleet.proc.pid not in pids
    status, _, body = http(admin_of(fleet) + "/readyz")
    doc = json.loads(body)
    assert status == 200 and [w["state"] for w in doc["workers"]] == ["up", "up"]
    m = scrape(admin_of(fleet))
    assert value(m, "scalyproxy_workers") == 2 and value(m, "scalyproxy_workers_up") == 2


def test_killed_worker_is_restarted_and_the_other_keeps_its_connections(
    fleet: ProxyProcess, spread: dict[int, socket.socket]
) -> None:
    victim, survivor = sorted(spread)
    assert ping(spread[survivor], 1)["ok"] == 1
    os.kill(victim, signal.SIGKILL)
    exited = wait_for_event(fleet, "worker_exited")
    assert exited["pid"] == victim and exited["status"] == "killed by SIGKILL" and exited["restart_in_s"] == 0
    restarted = wait_for_event(fleet, "worker_restarted")
    assert restarted["worker"] == exited["worker"] and restarted["pid"] != victim
    for i in range(2, 12):  # the survivor's connection was never touched
        assert ping(spread[survivor], i)["ok"] == 1
    assert spread[victim].recv(1) == b""  # the killed worker's connection is gone with it
    admin = admin_of(fleet)
    deadline = time.monotonic() + 10
    while http(admin + "/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    status, _, body = http(admin + "/readyz")
    assert status == 200, body
    m = scrape(admin)
    assert value(m, "scalyproxy_worker_restarts_total", worker=str(exited["worker"])) == 1
    assert value(m, "scalyproxy_workers_up") == 2
    with connect(fleet.port) as s:  # new connections are served
        assert ping(s, 99)["ok"] == 1


def test_a_worker_that_keeps_dying_backs_off_and_readyz_says_so(fleet: ProxyProcess) -> None:
    admin = admin_of(fleet)
    first = worker_pids(fleet)[1]
    os.kill(first, signal.SIGKILL)
    again = wait_for_event(fleet, "worker_restarted", worker=1)
    os.kill(again["pid"], signal.SIGKILL)  # a second death within STABLE_S of its start
    status, _, body = http(admin + "/readyz")
    doc = json.loads(body)
    assert status == 503 and "worker 1" in doc["reason"], doc
    second = wait_for_event(fleet, "worker_exited", count=2, worker=1)
    assert second["deaths_in_a_row"] == 2 and second["restart_in_s"] == 0.5
    wait_for_event(fleet, "worker_restarted", count=2, worker=1)
    status, _, body = http(admin + "/healthz")
    assert status == 200 and body.startswith("ok")


def test_a_bad_file_on_sighup_changes_no_worker_and_a_good_one_every_worker(
    fleet: ProxyProcess, spread: dict[int, socket.socket], ferretdb: FerretDB
) -> None:
    assert fleet.proc is not None
    admin = admin_of(fleet)
    find = {"find": "items", "filter": {"n": 1}, "$db": "fleet"}  # no shard key: refused
    for s in spread.values():
        assert command(s, find, 1)["codeName"] == "ScalyGlobalQuery"
    fleet.config_path.write_text(BROKEN.format(upstream=ferretdb.uri))
    fleet.proc.send_signal(signal.SIGHUP)
    failed = wait_for_event(fleet, "config_reload_failed", trigger="sighup")
    assert failed["errors"] == 1
    time.sleep(0.5)
    assert not [e for e in log_events(fleet) if e["event"] in ("worker_config_applied", "config_reloaded")]
    for s in spread.values():  # every worker still enforces the old rules
        assert command(s, find, 2)["codeName"] == "ScalyGlobalQuery"
    m = scrape(admin)
    assert value(m, "scalyproxy_config_reloads_total", outcome="failure") == 1
    assert value(m, "scalyproxy_config_reloads_total", outcome="success") == 0
    assert value(m, "scalyproxy_config_generation") == 1
    # a good file: every worker applies it, the fleet counts one reload
    fleet.config_path.write_text(CONFIG.format(upstream=ferretdb.uri).replace("rules: {unindexed_query: off}",
                                                                                "rules: {global_query: off, unindexed_query: off}"))
    fleet.proc.send_signal(signal.SIGHUP)
    wait_for_event(fleet, "config_reloaded", trigger="sighup")
    applied = [e for e in log_events(fleet) if e["event"] == "worker_config_applied"]
    assert sorted(e["worker"] for e in applied) == [0, 1] and {e["generation"] for e in applied} == {2}
    for s in spread.values():
        assert command(s, find, 3)["ok"] == 1
    m = scrape(admin)
    assert value(m, "scalyproxy_config_reloads_total", outcome="success") == 1
    assert value(m, "scalyproxy_config_generation") == 2


def test_metrics_report_and_profile_merge_the_workers(
    fleet: ProxyProcess, spread: dict[int, socket.socket]
) -> None:
    admin = admin_of(fleet)
    per_worker = {pid: 0 for pid in spread}
    request_id = 10
    for round_ in range(3):
        for pid, s in spread.items():
            for _ in range(round_ + 1):
                request_id += 1
                doc = command(s, {"find": "items", "filter": {"owner": "ann"}, "$db": "fleet"}, request_id)
                assert doc["ok"] == 1
                request_id += 1
                doc = command(s, {"find": "items", "filter": {"n": 5}, "$db": "fleet"}, request_id)
                assert doc["codeName"] == "ScalyGlobalQuery"
                per_worker[pid] += 1
    total = sum(per_worker.values())
    assert all(per_worker.values())  # traffic on both workers
    m = scrape(admin)
    assert value(m, "scalyproxy_commands_total", command="find", namespace="fleet.items", verdict="allowed") == total
    assert value(m, "scalyproxy_commands_total", command="find", namespace="fleet.items", verdict="refused") == total
    assert value(m, "scalyproxy_refusals_total", rule="global_query", namespace="fleet.items") == total
    assert value(m, "scalyproxy_round_trip_seconds_count", command="find") == total
    deadline = time.monotonic() + 5  # the extra connections spread() closed may still be closing on their worker
    while value(m, "scalyproxy_client_connections") != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
        m = scrape(admin)
    assert value(m, "scalyproxy_client_connections") == 2
    status, _, body = http(admin + "/report")
    report = json.loads(body)
    assert status == 200 and report["workers"] == 2
    rows = [e for e in report["entries"] if e["namespace"] == "fleet.items"]
    assert len(rows) == 1 and rows[0]["count"] == rows[0]["refused"] == total
    status, _, body = http(admin + "/profile")
    profile = json.loads(body)
    assert status == 200 and profile["workers"] == 2
    finds = [r for r in profile["rows"] if r["namespace"] == "fleet.items" and r["command"] == "find"]
    assert len(finds) == 2  # one shape allowed, one refused: each row holds both workers' commands
    assert sorted(r["count"] for r in finds) == [total, total]
    assert {json.dumps(r["outcomes"], sort_keys=True) for r in finds} == {
        json.dumps({"allowed": total}), json.dumps({"refused:global_query": total})}


def test_sigterm_drains_every_worker(fleet: ProxyProcess, spread: dict[int, socket.socket]) -> None:
    assert fleet.proc is not None
    pids = list(spread)
    fleet.proc.send_signal(signal.SIGTERM)
    assert fleet.proc.wait(20) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    stopped = [e for e in log_events(fleet) if e["event"] == "stopped"]
    assert sorted(e.get("worker", -1) for e in stopped) == [-1, 0, 1]


def test_a_port_held_by_another_program_refuses_the_fleet(tmp_path: Path, ferretdb: FerretDB) -> None:
    """A listener without SO_REUSEPORT owns the port: the supervisor says so and exits 1
    (no worker is left behind)."""
    config = tmp_path / "fleet.yaml"
    config.write_text(CONFIG.format(upstream=ferretdb.uri))
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "scalyproxy", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "worker_started" not in proc.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_healthz_is_503_while_no_worker_is_up_and_200_once_one_is_back(
    start_proxy: Callable[..., ProxyProcess], ferretdb: FerretDB, tmp_path: Path
) -> None:
    """Every worker dies at start again (the listener's key was taken away, so each new
    worker cannot load it): /healthz is 503 while none is up, /readyz names them; the key
    back, a worker comes up and /healthz is 200 again."""
    make_ca(tmp_path, "server")  # a self-signed certificate for the listener
    key, moved = tmp_path / "server.key", tmp_path / "server.key.away"
    p = start_proxy(CONFIG.format(upstream=ferretdb.uri)
                    + f"tls:\n  cert_file: {tmp_path / 'server.pem'}\n  key_file: {key}\n", name="fleet.yaml")
    admin = admin_of(p)
    status, _, body = http(admin + "/healthz")
    assert status == 200 and body.startswith("ok: 2/2 workers up"), body
    key.rename(moved)
    for pid in worker_pids(p):
        os.kill(pid, signal.SIGKILL)
    for index in (0, 1):  # the restart at once fails: the next one backs off
        wait_for_event(p, "worker_start_failed", worker=index)
        wait_for_event(p, "worker_exited", worker=index, deaths_in_a_row=2)
    status, _, body = http(admin + "/healthz")
    assert status == 503, body
    assert body.startswith("no worker up (") and "worker 0 " in body and "worker 1 " in body, body
    status, _, body = http(admin + "/readyz")
    doc = json.loads(body)
    assert status == 503 and doc["ready"] is False, doc
    assert "worker 0 (" in doc["reason"] and "worker 1 (" in doc["reason"], doc
    assert all(w["state"] != "up" and w["last_exit"] and "tls.key_file: file not found" in w["error"]
               for w in doc["workers"]), doc
    assert value(scrape(admin), "scalyproxy_workers_up") == 0
    moved.rename(key)
    deadline = time.monotonic() + 20  # the next start, after at most a few seconds of backing off
    while (status := http(admin + "/healthz")[0]) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    status, _, body = http(admin + "/healthz")
    assert status == 200 and body.startswith("ok: ") and "/2 workers up" in body, body
    while http(admin + "/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    status, _, body = http(admin + "/readyz")
    assert status == 200 and [w["state"] for w in json.loads(body)["workers"]] == ["up", "up"], body
    restarted = [e for e in log_events(p) if e["event"] == "worker_restarted"]
    assert sorted({e["worker"] for e in restarted}) == [0, 1]
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with ctx.wrap_socket(connect(p.port)) as s:  # served again, over TLS
        assert ping(s, 1)["ok"] == 1


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie is dead: only its exit status is left)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False


def test_strict_drift_refuses_the_fleet_as_it_refuses_one_process(
    tmp_path: Path, ferretdb: FerretDB, catalogue: Any
) -> None:
    """``drift_check: strict`` and a declared shard key the cluster does not have (the
    catalogue stands in for mongos': tests/integration/test_ops_drift.py): the supervisor
    exits 1 with the single process's ``start_refused`` reason, and no worker is left."""
    config = tmp_path / "strict.yaml"
    config.write_text(DRIFT_CONFIG.format(mode="strict") + "workers: 2\n")

    def run(*extra: str) -> tuple[subprocess.CompletedProcess[str], list[dict[str, Any]]]:
        done = subprocess.run(
            [sys.executable, "-m", "scalyproxy", "run", "--config", str(config), "--listen", "127.0.0.1:0",
             "--upstream", ferretdb.uri, *extra],
            cwd=ROOT, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        return done, [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]

    one, one_events = run("--workers", "1")
    assert one.returncode == 1
    (one_refused,) = [e for e in one_events if e["event"] == "start_refused"]
    assert one_refused["reason"].startswith("drift check (strict): 4 shard key mismatch(es)")
    fleet, events = run()
    assert fleet.returncode == 1, fleet.stderr
    assert "Point any driver at" not in fleet.stdout  # the fleet never announced itself
    (refused,) = [e for e in events if e["event"] == "start_refused"]
    assert "worker" not in refused  # the supervisor's line
    assert one_refused["reason"] in refused["reason"]
    assert f"scalyproxy: {refused['reason']}" in fleet.stderr
    failed = [e for e in events if e["event"] == "worker_start_failed"]
    assert [e["worker"] for e in failed] == [0]  # worker 0 runs the check for the fleet
    started = [e for e in events if e["event"] == "worker_started"]
    assert [e["worker"] for e in started] == [1]  # worker 1 had started: it is stopped again
    pids = [e["pid"] for e in failed + started]
    assert len(set(pids)) == 2
    assert not [pid for pid in pids if _alive(pid)]


def _on_worker(p: ProxyProcess, pid: int) -> socket.socket:
    """A connection served by the worker ``pid`` (the kernel picks the worker by a hash)."""
    for _ in range(64):
        s = connect(p.port)
        if owner(p, s, [pid, *[q for q in _worker_pids_now(p) if q != pid]]) == pid:
            return s
        s.close()
    raise AssertionError(f"64 connections, none on worker pid {pid}")


def _worker_pids_now(p: ProxyProcess) -> list[int]:
    """The pids of the workers running now (from /readyz)."""
    return [int(w["pid"]) for w in json.loads(http(admin_of(p) + "/readyz")[2])["workers"] if w["state"] == "up"]


def _profiled(path: Path, namespace: str) -> int:
    """The commands on ``namespace`` in a file sink (0 when the file is not there)."""
    if not path.exists():
        return 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return sum(r.get("count", 0) for r in rows if r.get("namespace") == namespace)


def test_a_sighup_that_changes_workers_applies_the_rest_and_keeps_the_count(
    start_proxy: Callable[..., ProxyProcess], ferretdb: FerretDB, tmp_path: Path
) -> None:
    """``workers`` is restart-only, as ``profile.sink`` is: a reload that changes them (and a
    rule) applies the rule in every worker, keeps two workers and the running sink, and the
    supervisor logs ``reload_restart_required`` once, as one process does. A worker started
    later (one that died) runs the same: the new rule, the running sink."""
    running_sink, new_sink = tmp_path / "profile.jsonl", tmp_path / "new-profile.jsonl"
    text = CONFIG.format(upstream=ferretdb.uri) + f"profile:\n  sink: file:{running_sink}\n  flush_interval_s: 0.2\n"
    p = start_proxy(text, name="fleet.yaml")
    assert p.proc is not None
    admin = admin_of(p)
    pids = worker_pids(p)
    find = {"find": "items", "filter": {"n": 1}, "$db": "fleet"}  # no shard key: refused until the reload
    changed = (text.replace("workers: 2", "workers: 3")
               .replace("rules: {unindexed_query: off}", "rules: {global_query: off, unindexed_query: off}")
               .replace(str(running_sink), str(new_sink)))
    assert changed.count("workers: 3") == 1 and str(new_sink) in changed
    p.config_path.write_text(changed)
    p.proc.send_signal(signal.SIGHUP)
    reloaded = wait_for_event(p, "config_reloaded", trigger="sighup")
    assert reloaded["workers"] == 2 and reloaded["workers_restarted"] == 0
    (restart,) = [e for e in log_events(p) if e["event"] == "reload_restart_required"]
    assert restart["fields"] == ["workers", "profile.sink"] and "worker" not in restart
    applied = [e for e in log_events(p) if e["event"] == "worker_config_applied"]
    assert sorted(e["worker"] for e in applied) == [0, 1] and {e["generation"] for e in applied} == {2}
    for pid in pids:  # every worker applies the rule
        with _on_worker(p, pid) as s:
            assert command(s, find, 1)["ok"] == 1
    m = scrape(admin)
    assert value(m, "scalyproxy_workers") == 2 and value(m, "scalyproxy_workers_up") == 2
    assert len([e for e in log_events(p) if e["event"] == "worker_started"]) == 2  # no worker was added
    assert _worker_pids_now(p) == pids
    # a worker started after the reload: the new rule, the running sink, the fleet still two
    os.kill(pids[1], signal.SIGKILL)
    fresh = wait_for_event(p, "worker_restarted", worker=1)["pid"]
    deadline = time.monotonic() + 10
    while http(admin + "/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _worker_pids_now(p) == [pids[0], fresh]
    with _on_worker(p, fresh) as s:
        assert command(s, find, 2)["ok"] == 1
        assert command(s, {"find": "fresh", "filter": {"owner": "x"}, "$db": "fleet"}, 3)["ok"] == 1
    deadline = time.monotonic() + 10
    while _profiled(running_sink, "fleet.fresh") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _profiled(running_sink, "fleet.fresh") == 1 and not new_sink.exists()
    assert value(scrape(admin), "scalyproxy_workers") == 2
