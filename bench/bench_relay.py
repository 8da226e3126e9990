"""The relay's own Python cost per round trip, without sockets (not a timed test).

    .venv/bin/python -m bench.bench_relay [--quick] [--mix] [--commands] [--profile out.prof]

A :class:`~scalyproxy.server.relay.ClientConnection` and its
:class:`~scalyproxy.server.relay.UpstreamConnection` wired to transports that
drop what is written: each round trip feeds one request the way the event loop
does (``data_received``) and its canned reply back (``from_upstream``). What it
measures is what the relay adds on top of the socket calls (the end-to-end suite,
:mod:`bench.suite`, measures those too). Rows: relay only, full policy with the
no-op hooks, full policy with the admin hooks (metrics) the running proxy uses,
the same with the traffic profile on (and its ratio to the profile off), and
the parts the relay calls into (``command_view``, then ``engine.decide``), and the
profile with the value sketches on at the default ``profile.sample_rate`` (issue 18).
With ``--mix``: the same for each kind of command of the mixed workload (workload 6 of
:mod:`bench.suite`, under its config), and the mix itself in its proportions (also with the
profile on, as the running proxy has it by default); a refused
command gets no reply from upstream (the relay answers it).
With ``--commands``: each command the C fast path answers (find, insert and the
targeted update, delete, findAndModify, count, distinct, aggregate), full policy
with the admin hooks, decided in C as the relay does and by the engine (the fast
path switched off), and ``fast_decide`` alone.
Each figure is the minimum over interleaved rounds of this thread's CPU time.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import time
from collections.abc import Callable
from typing import Any

from bench import messages as m
from bench.canned import Canned
from scalyproxy.config import ProxyConfig, load_config, load_config_text
from scalyproxy.server.hooks import Hooks
from scalyproxy.server.proxy import Proxy
from scalyproxy.server.relay import ClientConnection, RawRelayConnection, UpstreamConnection
from scalyproxy.wire import command_view, make_frame

BLOG = m.__file__.rsplit("/", 2)[0] + "/config/blog.yaml"


class NullTransport:
    """Accepts writes and forgets them."""

    def write(self, data: Any) -> None:
        pass

    def writelines(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 1) if name == "peername" else default

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


class _Host:
    address = "127.0.0.1:1"


def admin_hooks(cfg: ProxyConfig | None = None, profile: bool = False, sketches: bool = False) -> Hooks:
    try:
        from scalyproxy.admin.events import AdminHooks
        from scalyproxy.admin.metrics import Metrics
        from scalyproxy.admin.report import ShadowReport
        from scalyproxy.evidence.recorder import Recorder
    except ImportError:
        return Hooks()
    cfg = cfg or load_config(BLOG)
    recorder = Recorder(cfg.profile.max_shapes, cfg.policy.allow_marker) if profile else None
    if recorder is not None and sketches:  # the value sketches at the default rate (issue 18)
        from scalyproxy.evidence.fields import configured_keys

        recorder.configure_sketches("bench-salt-0123456789", cfg.profile.sample_rate, cfg.profile.sketch_keys,
                                    configured_keys(cfg))
        assert recorder.tracker is not None
        for key in (("author",), ("title",)):  # what the targeted finds teach a proxy
            recorder.tracker.learn(f"{m.DB}.{m.COLLECTION}", key)
    return AdminHooks(Metrics(cfg.collections), ShadowReport(cfg.report_size), recorder)


def wire(relay_only: bool, hooks: Hooks, cfg: ProxyConfig | None = None) -> tuple[ClientConnection, UpstreamConnection]:
    proxy = Proxy(cfg or load_config(BLOG), hooks, relay_only=relay_only)
    client = (RawRelayConnection if relay_only else ClientConnection)(proxy)
    client.transport = NullTransport()  # type: ignore[assignment]
    upstream = UpstreamConnection(client, _Host())  # type: ignore[arg-type]
    upstream.transport = NullTransport()  # type: ignore[assignment]
    client.upstream = upstream
    client._process()
    client.data_received(m.with_request_id(m.hello(), 0x7FFF0000))  # the handshake, as drivers do
    upstream.data_received(Canned().op_msg(0x7FFF0000, m.hello_reply_body()))
    return client, upstream


def round_trips(client: ClientConnection, upstream: UpstreamConnection, requests: list[bytes],
                replies: list[bytes | None]) -> Callable[[int], None]:
    """``replies[i]`` None: the relay answers request ``i`` itself (a refusal), upstream says nothing."""
    def run(n: int) -> None:
        feed, back = client.data_received, upstream.data_received
        for i in range(n):
            feed(requests[i & 1023])
            reply = replies[i & 1023]
            if reply is not None:
                back(reply)
    return run


def mix_cases(canned: Canned) -> dict[str, Callable[[int], None]]:
    """Workload 6 through the relay with the full policy and the admin hooks: each kind alone, then
    the mix in its proportions (:func:`bench.messages.mix_ring`), under the suite's mix config."""
    from bench.suite import mix_config_text

    cfg = load_config_text(mix_config_text())
    replies = {"find": canned.cursor, "aggregate": canned.cursor, "update": canned.writes[1],
               "insert": canned.writes[1], "delete": canned.writes[1], "count": canned.ok, "warned": canned.cursor}
    rings = {kind: [(kind, m.with_request_id(m.mix_message(kind, i), i + 1)) for i in range(1024)] for kind, _ in m.MIX}
    rings["(the mix)"] = m.mix_ring(1024)
    cases = {}
    for label, ring in rings.items():
        c, u = wire(False, admin_hooks(cfg), cfg)
        requests = [msg for _, msg in ring]
        answers = [None if kind == "refused" else canned.op_msg(i + 1, replies[kind]) for i, (kind, _) in enumerate(ring)]
        cases[f"mix, {label}: full, admin hooks"] = round_trips(c, u, requests, answers)
    # the mix as the running proxy decides it by default: the traffic profile on (issue 17)
    c, u = wire(False, admin_hooks(cfg, profile=True), cfg)
    ring = rings["(the mix)"]
    answers = [None if kind == "refused" else canned.op_msg(i + 1, replies[kind]) for i, (kind, _) in enumerate(ring)]
    cases["mix, (the mix): full, admin hooks, profile"] = round_trips(c, u, [msg for _, msg in ring], answers)
    return cases


FAST_KINDS = ("find", "insert", "update", "delete", "findAndModify", "count", "distinct", "aggregate")


def command_cases(canned: Canned) -> dict[str, Callable[[int], None]]:
    """Each command the C fast path answers, targeted as drivers send it: the relay's round trip
    decided in C, the same with the engine deciding, and ``fast_decide`` alone."""
    from scalyproxy import _scan
    from scalyproxy.server import relay

    replies = {"find": canned.cursor, "insert": canned.writes[1], "update": canned.writes[1],
               "delete": canned.writes[1], "findAndModify": canned.ok, "count": canned.ok,
               "distinct": canned.ok, "aggregate": canned.cursor}  # fmt: skip
    table = Proxy(load_config(BLOG), Hooks()).engine.fast
    cases = {}
    for kind in FAST_KINDS:
        requests = [m.with_request_id(m.targeted(kind, i), i + 1) for i in range(1024)]
        if any(_scan.fast_decide(r, table) is None for r in requests):
            raise SystemExit(f"bench_relay: a {kind} of the benchmark does not take the fast path")
        answers: list[bytes | None] = [canned.op_msg(i + 1, replies[kind]) for i in range(1024)]
        cases[f"{kind}: full, admin hooks, C"] = round_trips(*wire(False, admin_hooks()), requests, answers)
        engine_run = round_trips(*wire(False, admin_hooks()), requests, answers)
        cases[f"{kind}: full, admin hooks, engine"] = _switched_off(relay, engine_run)
        cases[f"{kind}: (part) fast_decide"] = _each(lambda r: _scan.fast_decide(r, table), requests)
    return cases


def _switched_off(relay: Any, run: Callable[[int], None]) -> Callable[[int], None]:
    """``run`` with the relay's fast path off: every command goes through the view and the engine."""

    def off(n: int) -> None:
        saved, relay.fast_decide = relay.fast_decide, None
        try:
            run(n)
        finally:
            relay.fast_decide = saved

    return off


def _each(fn: Callable[[Any], object], items: list[Any]) -> Callable[[int], None]:
    def run(n: int) -> None:
        for i in range(n):
            fn(items[i & 1023])
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--mix", action="store_true", help="also each kind of the mixed workload (workload 6)")
    parser.add_argument("--commands", action="store_true",
                        help="also each command of the fast path, decided in C and by the engine")  # fmt: skip
    parser.add_argument("--profile", help="write a cProfile of one case here (see --case)")
    parser.add_argument("--case", default="find: full, admin hooks", help="the case to profile")
    args = parser.parse_args()
    number, rounds = (2_000, 2) if args.quick else (20_000, 5)
    canned = Canned()
    workloads = {
        "find": (m.ring(m.find_by_key, 1024), [canned.op_msg(i + 1, canned.cursor) for i in range(1024)]),
        "insert": (m.ring(m.insert_one, 1024), [canned.op_msg(i + 1, canned.writes[1]) for i in range(1024)]),
    }
    cases = {}
    for wl, (requests, replies) in workloads.items():
        for label, relay_only, hooks in (("relay only", True, Hooks()), ("full, no-op hooks", False, Hooks()),
                                         ("full, admin hooks", False, admin_hooks()),
                                         ("full, admin hooks, profile", False, admin_hooks(profile=True)),
                                         ("full, admin hooks, profile, sketches", False,
                                          admin_hooks(profile=True, sketches=True))):
            c, u = wire(relay_only, hooks)
            cases[f"{wl}: {label}"] = round_trips(c, u, requests, replies)
    if args.mix:
        from scalyproxy.logs import log

        log.stream = open(os.devnull, "w")  # noqa: SIM115  (each refusal and warning is logged: a write each, as live)
        cases.update(mix_cases(canned))
    if args.commands:
        cases.update(command_cases(canned))
    engine = Proxy(load_config(BLOG), Hooks()).engine
    for wl, (requests, _) in workloads.items():  # the parts of a round trip the relay calls into
        frames = [make_frame(r) for r in requests]
        cases[f"{wl}: (part) command_view"] = _each(command_view, frames)
        cases[f"{wl}: (part) command_view+decide"] = _each(lambda f: engine.decide(command_view(f)), frames)
    best = {k: float("inf") for k in cases}
    for _ in range(rounds):
        for k, fn in cases.items():
            start = time.thread_time()  # CPU time: a busy machine's preemptions do not count
            fn(number)
            best[k] = min(best[k], (time.thread_time() - start) / number * 1e6)
    for k, us in best.items():
        print(f"{k:44} {us:7.2f} us per round trip")
    for wl in workloads:
        on, off = best[f"{wl}: full, admin hooks, profile"], best[f"{wl}: full, admin hooks"]
        print(f"{wl}: profile on / off (the relay's own CPU, no sockets): {on / off:.3f}")
        sketched = best[f"{wl}: full, admin hooks, profile, sketches"]
        print(f"{wl}: profile with sketches (default sample_rate) / off: {sketched / off:.3f}")
    if args.profile:
        cProfile.runctx("fn(number)", {"fn": cases[args.case], "number": number}, {},
                        args.profile)
        print(f"profile written to {args.profile}")


if __name__ == "__main__":
    main()
