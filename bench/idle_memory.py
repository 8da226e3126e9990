"""Idle memory of ``scalyproxy run`` with one process and with workers (issue 19).

    .venv/bin/python -m bench.idle_memory [--workers 1 2 4] [--json FILE]

For each worker count, ``scalyproxy run --config config/blog.yaml`` (``--workers
N`` when N > 1) in front of the canned-reply backend (:mod:`bench.canned`);
once it announces its port, 16 connections each send a few pings (so every
worker has served connections and imported what serving needs), are closed,
and after a settle the resident memory of the process tree is read from
``/proc``: VmRSS of the supervisor and of each worker, and their PSS (shared
pages divided among the processes sharing them, from ``smaps_rollup``). The
workers are separate interpreters (started with ``python -m``, not forked), so
little beyond the shared libraries is shared. Not a timed test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient

from bench import procs

CONFIG = procs.ROOT / "config" / "blog.yaml"
SETTLE_S = 2.0


def pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def measure(workers: int, upstream_port: int) -> dict[str, Any]:
    child = procs.start_scalyproxy(CONFIG, upstream_port, workers=workers if workers > 1 else None)
    try:
        clients: list[MongoClient[dict[str, Any]]] = [
            MongoClient(f"mongodb://{child.address}/", maxPoolSize=1, directConnection=True) for _ in range(16)]
        for c in clients:
            for _ in range(5):
                c.admin.command("ping")
        for c in clients:
            c.close()
        time.sleep(SETTLE_S)
        below = procs.descendants(child.pid)
        def one(pid: int) -> dict[str, int]:
            return {"pid": pid, "rss_kib": procs.memory_kib(pid)["VmRSS"], "pss_kib": pss_kib(pid)}
        top = one(child.pid)
        return {
            "workers": workers,
            "supervisor" if workers > 1 else "process": top,
            "workers_rss": [one(p) for p in below],
            "total_rss_kib": top["rss_kib"] + sum(procs.memory_kib(p)["VmRSS"] for p in below),
            "total_pss_kib": top["pss_kib"] + sum(pss_kib(p) for p in below),
        }
    finally:
        child.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    canned = procs.start_canned()
    try:
        results = [measure(n, canned.port) for n in args.workers]
    finally:
        canned.stop()
    print("| workers | supervisor RSS MiB | each worker RSS MiB | total RSS MiB | total PSS MiB |")
    print("|---|---|---|---|---|")
    for r in results:
        if r["workers"] == 1:
            p = r["process"]
            print(f"| 1 (one process) | - | {p['rss_kib'] / 1024:.1f} | {p['rss_kib'] / 1024:.1f} | "
                  f"{r['total_pss_kib'] / 1024:.1f} |")
            continue
        each = " / ".join(f"{w['rss_kib'] / 1024:.1f}" for w in r["workers_rss"])
        print(f"| {r['workers']} | {r['supervisor']['rss_kib'] / 1024:.1f} | {each} | "
              f"{r['total_rss_kib'] / 1024:.1f} | {r['total_pss_kib'] / 1024:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
