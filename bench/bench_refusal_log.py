"""What logging one refusal costs in process: ``Proxy.report_refusal`` with a fixed finding.

    .venv/bin/python -m bench.bench_refusal_log [--log-repeats-s S]

The same finding over and over, the log written to /dev/null: with the default
``log_repeats_s`` (1 s) all but the first line of each second are only counted
(docs/operations.md, "Logs"); ``--log-repeats-s 0`` writes every line, as before.
Rows: the no-op hooks (the log alone) and the admin hooks (metrics and /report too).
Each figure is the minimum over rounds of this thread's CPU time per call.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from scalyproxy.admin.events import AdminHooks
from scalyproxy.admin.metrics import Metrics
from scalyproxy.admin.report import ShadowReport
from scalyproxy.config import load_config
from scalyproxy.logs import log
from scalyproxy.policy import Finding
from scalyproxy.server.hooks import Hooks
from scalyproxy.server.proxy import Proxy
from scalyproxy.server.relay import ClientConnection

CONFIG = Path(__file__).resolve().parents[1] / "config" / "blog.yaml"
FINDING = Finding("global_query", 29001, "ScalyGlobalQuery", "find on blog.blog_posts does not include the shard key",
                  "blog.blog_posts", "find", '{"title":"string"}')


def per_call_us(proxy: Proxy, calls: int, rounds: int) -> float:
    conn = ClientConnection(proxy)
    conn.peer, conn.app_name = "127.0.0.1:50000", "bench"
    best = float("inf")
    for _ in range(rounds):
        start = time.thread_time()
        for _ in range(calls):
            proxy.report_refusal(conn, None, FINDING, True)  # type: ignore[arg-type]  # no values logged
        best = min(best, time.thread_time() - start)
    return best / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log-repeats-s", type=float, default=None, help="override the config's log_repeats_s")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    cfg = load_config(CONFIG)
    if args.log_repeats_s is not None:
        cfg = replace(cfg, log_repeats_s=args.log_repeats_s)
    saved = log.stream
    with open("/dev/null", "w") as devnull:
        log.stream = devnull
        try:
            for label, hooks in (("no-op hooks", Hooks()),
                                 ("admin hooks", AdminHooks(Metrics(cfg.collections), ShadowReport(cfg.report_size)))):
                us = per_call_us(Proxy(cfg, hooks), args.calls, args.rounds)
                print(f"{label:12} log_repeats_s={cfg.log_repeats_s:g}: {us:6.2f} us per report_refusal")
        finally:
            log.stream = saved


if __name__ == "__main__":
    main()
