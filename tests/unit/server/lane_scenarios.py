"""Byte sequences driven through a ClientConnection and its UpstreamConnection, in memory,
with every effect recorded: what is written each way, the hooks' calls and arguments, and
the connection's bookkeeping (sent_at, awaiting, counters) after each step.

The same scenarios run with the C lane (``_scan.ClientLane``, the default when the
extension is built) and, in a subprocess, with the Python bases (``run_python_bases``):
test_relay_lane.py compares the two records, which must be equal.

    python -m tests.unit.server.lane_scenarios [python|pure]   # prints the records as JSON
"""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
LANE_NAMES = ("ClientLane", "UpstreamLane", "TrackerLane", "lane_configure")


class Transport:
    """Records what is written, and closes when asked."""

    def __init__(self, name: str, log: list[Any]) -> None:
        self.name = name
        self.log = log
        self.closing = False

    def write(self, data: Any) -> None:
        self.log.append([self.name, "write", bytes(data).hex()])

    def writelines(self, data: Any) -> None:
        self.log.append([self.name, "writelines", [bytes(d).hex() for d in data]])

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.log.append([self.name, "close"])
        self.closing = True

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def pause_reading(self) -> None:
        self.log.append([self.name, "pause_reading"])

    def resume_reading(self) -> None:
        self.log.append([self.name, "resume_reading"])


def recording_hooks(log: list[Any], fail_on: set[int]) -> Any:
    from scalyproxy.server.hooks import Hooks

    class Recording(Hooks):
        """Each call with its arguments (seconds only checked: they are timings)."""

        def __init__(self) -> None:
            self.tags = 0

        def command(self, conn: Any, view: Any, verdict: Any, proxy_seconds: float, data: Any) -> Any:
            assert isinstance(proxy_seconds, float) and 0 <= proxy_seconds < 5
            request_id = int.from_bytes(bytes(data[4:8]), "little", signed=True)
            log.append(["command", view is None, None if view is None else view.name, verdict.command,
                        verdict.refusal is None, bytes(data).hex()])
            if request_id in fail_on:
                raise RuntimeError(f"a hook failed on {request_id}")
            self.tags += 1
            return f"tag{self.tags}:{verdict.command}"

        def round_trip(self, tag: Any, seconds: float) -> None:
            assert isinstance(seconds, float) and 0 <= seconds < 5
            log.append(["round_trip", tag])

        def protocol_error(self, kind: str) -> None:
            log.append(["protocol_error", kind])

        def client_closed(self, peer: str) -> None:
            log.append(["client_closed", peer])

        def upstream_closed(self, address: str) -> None:
            log.append(["upstream_closed", address])

        def handshake(self, conn: Any, view: Any) -> None:
            log.append(["handshake", view.name])

        def finding(self, conn: Any, view: Any, finding: Any, enforced: bool) -> None:
            log.append(["finding", view.name, enforced])

    return Recording()


class Host:
    address = "127.0.0.1:1"


def python_lane() -> tuple[Any, Any, Any]:
    """ClientConnection, UpstreamConnection and ReplyTracker rebuilt on their pure-Python
    bases, in this process: the same methods, the Python entry points."""
    from scalyproxy.server import relay, stream

    def rebuilt(cls: type, base: type) -> Any:
        namespace = {k: v for k, v in vars(cls).items()
                     if k not in ("__dict__", "__weakref__") and not isinstance(v, types.MemberDescriptorType)}
        return type(f"Py{cls.__name__}", (base,), namespace)

    return (rebuilt(relay.ClientConnection, relay._ClientFields),
            rebuilt(relay.UpstreamConnection, relay._UpstreamFields),
            rebuilt(stream.ReplyTracker, stream._TrackerFields))


class Run:
    """One client connection and its upstream connection, wired as ``_connect_upstream`` does
    (``python``: on the pure-Python bases, see :func:`python_lane`)."""

    def __init__(self, timeout_s: float = 0, fail_on: set[int] | None = None, connected: bool = True,
                 python: bool = False) -> None:
        from scalyproxy.config import load_config
        from scalyproxy.logs import log as logger
        from scalyproxy.server import relay, stream
        from scalyproxy.server.proxy import Proxy

        classes: tuple[Any, Any, Any] = (relay.ClientConnection, relay.UpstreamConnection, stream.ReplyTracker)
        client_class, upstream_class, tracker_class = python_lane() if python else classes

        logger.stream = io.StringIO()  # refusals are logged (a fresh buffer per run)
        cfg = load_config(ROOT / "config" / "blog.yaml")
        if timeout_s:
            cfg = dataclasses.replace(cfg, limits=dataclasses.replace(cfg.limits, upstream_timeout_s=timeout_s))
        self.log: list[Any] = []
        self.proxy = Proxy(cfg, recording_hooks(self.log, fail_on or set()))
        self.proxy.spawn = lambda coro: coro.close()  # type: ignore[method-assign]
        self.client: relay.ClientConnection = client_class(self.proxy)
        self.client.tracker = tracker_class(self.client.tracker.max_size)
        self.to_client = Transport("to_client", self.log)
        self.client.connection_made(self.to_client)
        self.upstream: relay.UpstreamConnection = upstream_class(self.client, Host())
        self.to_upstream = Transport("to_upstream", self.log)
        self.upstream.transport = self.to_upstream
        if connected:
            self.connect()

    def connect(self) -> None:
        self.client.upstream = self.upstream
        self.client._resume("upstream")
        self.client._process()

    def state(self) -> dict[str, Any]:
        c = self.client
        return {
            "sent_at": sorted([rid, tag] for rid, (_, tag) in c.sent_at.items()),
            "awaiting": list(c.awaiting),
            "closing": c.closing,
            "stream_offset": c.stream_offset,
            "bytes": [self.proxy.bytes_in, self.proxy.bytes_out],
            "message_started": c.message_started is not None,
            "busy": c.busy(),
            "framer": c._framer is not None,
            "max_message_size": c.max_message_size,
            "drop_ids": sorted(c.tracker._drop_ids),
            "capture_ids": sorted(c.tracker._capture_ids),
            "injections": len(c.tracker.injections),
            "at_boundary": c.tracker.at_boundary(),
        }


def _find(i: int, rid: int) -> bytes:
    from bench import messages as m

    return m.with_request_id(m.find_by_key(i), rid)


def _reply(rid: int, kind: str = "cursor") -> bytes:
    from bench.canned import Canned

    canned = Canned()
    body = {"cursor": canned.cursor, "write": canned.writes[1], "ok": canned.ok, "hello": canned.hello}[kind]
    return canned.op_msg(rid, body)


def _refused(rid: int) -> bytes:
    from bench import messages as m

    return m.op_msg({"find": m.COLLECTION, "filter": {"body": "x"}, "$db": m.DB}, request_id=rid)


def _w0(rid: int) -> bytes:
    import bson

    from bench import messages as m

    return m.op_msg({"insert": m.COLLECTION, "$db": m.DB, "writeConcern": {"w": 0}},
                    {"documents": [bson.encode(m.post(1))]}, request_id=rid, flags=m.FLAG_MORE_TO_COME)


Step = tuple[str, Any]


def scenarios() -> dict[str, tuple[dict[str, Any], list[Step]]]:
    """name -> (Run's arguments, steps). A step: ("c", bytes) from the client, ("u", bytes)
    from the upstream, ("upstream_closing", None), ("upstream_lost", None), ("close", None),
    ("client_lost", None), ("connect", None)."""
    from bench import messages as m

    find, insert = _find(1, 11), m.with_request_id(m.insert_one(2), 12)
    f21, f22 = _find(3, 21), _find(4, 22)
    r21, r22 = _reply(21), _reply(22)
    reply = _reply(31)
    ping = m.op_msg({"ping": 1, "$db": "admin"}, request_id=61)
    hello = m.with_request_id(m.hello(), 71)
    return {
        "whole message": ({}, [("c", find), ("u", _reply(11)), ("c", insert), ("u", _reply(12, "write"))]),
        "split message": ({}, [("c", find[:25]), ("c", find[25:]), ("u", _reply(11))]),
        "split header": ({}, [("c", find[:7]), ("c", find[7:] + insert[:3]), ("c", insert[3:]),
                              ("u", _reply(11)), ("u", _reply(12, "write"))]),
        "two messages in one chunk": ({}, [("c", f21 + f22), ("u", r21 + r22)]),
        "replies out of order": ({}, [("c", f21), ("c", f22), ("u", r22), ("u", r21), ("u", _reply(99))]),
        "moreToCome": ({}, [("c", _w0(41)), ("u", _reply(41, "write")), ("c", find), ("u", _reply(11))]),
        "moreToCome reply split": ({}, [("c", _w0(42)), ("u", _reply(42, "write")[:9]),
                                        ("u", _reply(42, "write")[9:] + _reply(99))]),
        "reply split": ({}, [("c", _find(5, 31)), ("u", reply[:10]), ("u", reply[10:30]), ("u", reply[30:])]),
        "reply while an injection is queued": ({}, [
            ("c", _find(5, 31)), ("u", reply[:20]), ("c", _refused(32)), ("u", reply[20:]),
            ("c", _find(6, 33)), ("c", _refused(34)), ("u", _reply(33)),
        ]),
        "injection queued, then a whole reply": ({}, [
            ("c", _find(5, 31)), ("c", _find(6, 35)), ("u", reply[:20]), ("c", _refused(32)),
            ("u", reply[20:]), ("u", _reply(35)),
        ]),
        "engine decides": ({}, [("c", ping), ("u", _reply(61, "ok")), ("c", _refused(62)), ("c", find),
                                ("u", _reply(11))]),
        "handshake": ({}, [("c", hello), ("u", _reply(71, "hello")), ("c", find), ("u", _reply(11))]),
        "upstream closing": ({}, [("c", find), ("upstream_closing", None), ("c", _find(2, 13)),
                                  ("u", _reply(11)), ("upstream_lost", None), ("c", _find(3, 14))]),
        "closing client": ({}, [("c", find), ("close", None), ("c", _find(2, 13)), ("u", _reply(11)),
                                ("client_lost", None)]),
        "client lost": ({}, [("c", find), ("client_lost", None), ("u", _reply(11))]),
        "a hook fails": ({"fail_on": {13}}, [("c", find), ("c", _find(2, 13)), ("c", _find(3, 14)),
                                             ("u", _reply(11))]),
        "upstream_timeout_s": ({"timeout_s": 5}, [("c", f21), ("c", f22), ("u", r21), ("c", _w0(43)),
                                                  ("u", r22[:30]), ("u", r22[30:])]),
        "before the upstream": ({"connected": False}, [("c", find), ("c", insert[:30]), ("connect", None),
                                                       ("c", insert[30:]), ("u", _reply(11))]),
        "too long": ({}, [("c", find[:4] + (10**9).to_bytes(4, "little") + find[8:])]),
        "unreadable": ({}, [("c", find[:30] + b"\xff" + find[31:]), ("c", insert), ("u", _reply(12, "write"))]),
        "bad reply length": ({}, [("c", find), ("u", b"\x05\x00\x00\x00" + _reply(11)[4:])]),
    }


def run(name: str, python: bool = False) -> list[Any]:
    """The record of one scenario: after each step, the effects so far and the state."""
    kwargs, steps = scenarios()[name]
    return record(Run(**kwargs, python=python), steps)


def record(r: Run, steps: list[Step]) -> list[Any]:
    """Drive ``r`` with ``steps``: after each one, the effects and the state."""
    out: list[Any] = []
    actions: dict[str, Callable[[Any], None]] = {
        "c": r.client.data_received,
        "u": r.upstream.data_received,
        "upstream_closing": lambda _: setattr(r.to_upstream, "closing", True),
        "upstream_lost": lambda _: r.upstream.connection_lost(None),
        "close": lambda _: r.client.close(),
        "client_lost": lambda _: r.client.connection_lost(None),
        "connect": lambda _: r.connect(),
    }
    for kind, arg in steps:
        actions[kind](arg)
        out.append({"step": kind, "effects": list(r.log), "state": r.state()})
        r.log.clear()
    return out


def run_all() -> dict[str, list[Any]]:
    return {name: run(name) for name in scenarios()}


def lane_types() -> list[str]:
    """The bases in use (to check which lane a run took)."""
    from scalyproxy.server.relay import ClientConnection, UpstreamConnection
    from scalyproxy.server.stream import ReplyTracker

    return [cls.__mro__[1].__name__ for cls in (ClientConnection, UpstreamConnection, ReplyTracker)]


def without_lane() -> None:
    """Hide the C lane (keep the rest of the extension: fast_decide...): the Python bases are used."""
    import scalyproxy._scan as real

    module = types.ModuleType(real.__name__)
    module.__dict__.update({k: v for k, v in vars(real).items() if k not in LANE_NAMES})
    sys.modules[real.__name__] = module


def run_python_bases(pure: bool = False) -> dict[str, Any]:
    """The records with the Python bases, in a subprocess (``pure``: no C extension at all)."""
    out = subprocess.run([sys.executable, "-m", "tests.unit.server.lane_scenarios", "pure" if pure else "python"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout
    answer: dict[str, Any] = json.loads(out)
    return answer


def main() -> None:
    if sys.argv[1:] == ["pure"]:
        sys.modules["scalyproxy._scan"] = None  # type: ignore[assignment]
    elif sys.argv[1:] == ["python"]:
        without_lane()
    print(json.dumps({"lanes": lane_types(), "records": run_all()}))


if __name__ == "__main__":
    main()
