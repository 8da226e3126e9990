"""Turns the suite's results into ratios, the targets P1-P6 and M1-M2, markdown tables and charts.

    .venv/bin/python -m bench.report [bench/results/benchmarks.json [docs]]   # re-render .md/.png
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]
PATH_ORDER = ("direct", "haproxy", "haproxy-2t", "mongobetween", "relay", "full", "full-w2", "full-schema-off")
MIX_ORDER = ("direct", "haproxy", "haproxy-2t", "mongobetween", "relay", "full", "full-w2")
MIX_TEXT = ("50% find by the full shard key, 15% update_one by it (an edit of the 1 KB post), 10% insert_one "
            "of a 1 KB post, 5% delete_many by the full key, 10% aggregate whose first stage is a targeted "
            "`$match`, 5% count by the full key, 3% global queries the policy refuses (ScalyGlobalQuery) and 2% "
            "global queries on a collection whose rule is in warn mode (forwarded, warned)")
LABELS = {
    "mix": "workload 6: an application's mix",
    "mix-budget": "workload 6b: the mix with the proxy as the bottleneck (CPU budgets)",
    "find": "workload 2: find by full shard key (~110 B)",
    "insert": "workload 1: insert one 1.1 KB document",
    "insert_many": "workload 3: insert_many, 1,000 x 1 KB documents per message (documents/s)",
    "big": "workload 4: one big insert message",
    "idle": "workload 5: idle client connections",
}


def _find(rows: Iterable[Row], **match: Any) -> Row | None:
    for r in rows:
        if all(r.get(k) == v for k, v in match.items()):
            return r
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def _mib(kib: float | None) -> float | None:
    return None if kib is None else kib / 1024


def _fmt(x: float | None, spec: str = ".2f", suffix: str = "") -> str:
    return "n/a" if x is None else f"{x:{spec}}{suffix}"


# -- targets --------------------------------------------------------------------------


@dataclass
class Target:
    key: str
    figure: str
    goal: str
    measured: str
    ratio: float | None
    ok: bool | None

    @property
    def verdict(self) -> str:
        return "n/a" if self.ok is None else ("met" if self.ok else "NOT met")


def _check(ratio: float | None, limit: float, at_most: bool) -> bool | None:
    if ratio is None:
        return None
    return ratio <= limit if at_most else ratio >= limit


def targets(data: Row) -> list[Target]:
    """The targets of the workloads that ran (all of them in a full run)."""
    rows = [r for r in data["results"] if r["backend"] == "canned"]
    ran = {r["workload"] for r in data["results"]}
    out = _loop_targets(rows, [wl for wl in ("find", "insert") if wl in ran])
    if "big" in ran:
        out += _big_targets(rows)
    if "idle" in ran:
        out += _idle_targets(rows)
    if "insert_many" in ran:
        out += _batch_targets(rows)
    if ran & {"mix", "mix-budget"}:
        out += _mix_targets(data)
    return out


def _loop_targets(rows: list[Row], workloads: list[str]) -> list[Target]:
    levels = sorted({r["connections"] for r in rows if r["workload"] in ("find", "insert")})
    high, low = (levels[-1], levels[0]) if levels else (0, 0)
    out: list[Target] = []
    for wl in workloads:
        h = _find(rows, workload=wl, connections=high, path="haproxy")
        d = _find(rows, workload=wl, connections=low, path="direct")
        for path, limit, key in (("relay", 1.3, "P1"), ("full", 1.8, "P1")):
            r = _find(rows, workload=wl, connections=high, path=path)
            ratio = _ratio(r and r["cpu_us"], h and h["cpu_us"])
            out.append(Target(key, f"proxy CPU per round trip, {path}, {wl} c={high}", f"<= {limit}x HAProxy",
                              f"{_fmt(r and r['cpu_us'], '.1f')} vs {_fmt(h and h['cpu_us'], '.1f')} us",
                              ratio, _check(ratio, limit, True)))
        full = _find(rows, workload=wl, connections=high, path="full")
        ratio = _ratio(full and full["throughput"], h and h["throughput"])
        out.append(Target("P2", f"throughput, full, {wl} c={high}", ">= 0.9x HAProxy",
                          f"{_fmt(full and full['throughput'], ',.0f')} vs {_fmt(h and h['throughput'], ',.0f')}/s",
                          ratio, _check(ratio, 0.9, False)))
        fl = _find(rows, workload=wl, connections=low, path="full")
        hl = _find(rows, workload=wl, connections=low, path="haproxy")
        added_full = fl["p99_ms"] - d["p99_ms"] if fl and d else None
        added_h = hl["p99_ms"] - d["p99_ms"] if hl and d else None
        ratio = _ratio(added_full, added_h)
        out.append(Target("P3", f"p99 added over direct, full, {wl} c={low}", "<= 1.5x HAProxy's",
                          f"{_fmt(added_full, '+.3f')} vs {_fmt(added_h, '+.3f')} ms", ratio,
                          _check(ratio, 1.5, True) if added_h is not None and added_h > 0 else None))
    return out


def _big_targets(rows: list[Row]) -> list[Target]:
    out: list[Target] = []
    h = _find(rows, workload="big", path="haproxy")
    for path in ("relay", "full"):
        r = _find(rows, workload="big", path=path)
        size = r["extra"]["message_bytes"] if r else None
        growth = _ratio(r and r["growth_kib"] * 1024, size)
        out.append(Target("P4", f"one {_fmt(size and size / 1e6, '.0f')} MB message, {path}: peak RSS growth",
                          "<= 1.2x the message", f"{_fmt(r and r['growth_kib'] / 1024, '.1f')} MiB",
                          growth, _check(growth, 1.2, True)))
        ratio = _ratio(r and r["seconds"], h and h["seconds"])
        out.append(Target("P4", f"one big message, {path}: round trip", "<= 1.5x HAProxy's",
                          f"{_fmt(r and r['seconds'] * 1e3, '.0f')} vs {_fmt(h and h['seconds'] * 1e3, '.0f')} ms",
                          ratio, _check(ratio, 1.5, True)))
    return out


def _idle_targets(rows: list[Row]) -> list[Target]:
    out: list[Target] = []
    for path in ("relay", "full"):
        r = _find(rows, workload="idle", path=path)
        per = r["extra"]["kib_per_connection"] if r else None
        out.append(Target("P5", f"{r['connections'] if r else '?'} idle connections, {path}: RSS per client connection",
                          "<= 4 KiB", f"{_fmt(per, '.2f')} KiB (with its upstream connection)", per,
                          _check(per, 4.0, True)))
    return out


def _batch_targets(rows: list[Row]) -> list[Target]:
    out: list[Target] = []
    on = _find(rows, workload="insert_many", path="full")
    off = _find(rows, workload="insert_many", path="full-schema-off")
    ratio = _ratio(on and on["throughput"], off and off["throughput"])
    out.append(Target("P6", "insert_many documents/s, schema validation on / off", ">= 0.8x",
                      f"{_fmt(on and on['throughput'], ',.0f')} vs {_fmt(off and off['throughput'], ',.0f')} docs/s",
                      ratio, _check(ratio, 0.8, False)))
    # The same per proxy CPU-second: on two shared CPUs documents/s also depends on how much
    # CPU the scheduler gave the proxy in each window; its CPU per message does not.
    ratio = _ratio(off and off["cpu_us"], on and on["cpu_us"])
    out.append(Target("P6", "insert_many documents per proxy CPU-second, schema validation on / off", ">= 0.8x",
                      f"{_fmt(on and on['cpu_us'] / 1e3, '.1f')} vs {_fmt(off and off['cpu_us'] / 1e3, '.1f')} "
                      "ms of CPU per 1,000 documents", ratio, _check(ratio, 0.8, False)))
    return out


def _mix_targets(data: Row) -> list[Target]:
    rows = [r for r in data["results"] if r["backend"] == "canned"]
    out: list[Target] = []
    for conns in sorted({r["connections"] for r in rows if r["workload"] == "mix"}, reverse=True):
        h = _find(rows, workload="mix", connections=conns, path="haproxy")
        full = _find(rows, workload="mix", connections=conns, path="full")
        ratio = _ratio(full and full["cpu_us"], h and h["cpu_us"])
        out.append(Target("M1", f"proxy CPU per round trip, full (one worker), mix c={conns}", "<= 1.5x HAProxy",
                          f"{_fmt(full and full['cpu_us'], '.1f')} vs {_fmt(h and h['cpu_us'], '.1f')} us",
                          ratio, _check(ratio, 1.5, True)))
    one = _find(rows, workload="mix-budget", path="full")
    two = _find(rows, workload="mix-budget", path="full-w2")
    ratio = _ratio(two and two["throughput"], one and one["throughput"])
    if one is None:
        measured = "not measured (see the notes)"
    elif two is None:
        measured = "workers: 2 not available"
    else:
        measured = (f"{two['throughput']:,.0f} vs {one['throughput']:,.0f}/s; one worker used "
                    f"{_fmt(_budget_use(one), '.0%')} of its budget, the load side {_fmt(_load_use(one), '.0%')} of its own")
    bottleneck = one is not None and (_budget_use(one) or 0.0) >= BOTTLENECK
    conns = one["connections"] if one else "?"
    out.append(Target("M2", f"throughput, workers: 2 / one worker, mix c={conns}, proxy the bottleneck",
                      ">= 1.6x", measured, ratio, _check(ratio, 1.6, False) if bottleneck else None))
    return out


#: A budgeted proxy that used this much of its CPU budget was the bottleneck of its window.
BOTTLENECK = 0.85


def _budget_use(r: Row) -> float | None:
    cpus = r["extra"].get("budget_cpus")
    return None if r["proxy_util"] is None or not cpus else r["proxy_util"] / cpus


def _load_use(r: Row) -> float | None:
    cpus = r["extra"].get("load_budget_cpus")
    return None if not cpus else r["extra"]["load_util"] / cpus


# -- markdown -------------------------------------------------------------------------------


def markdown(data: Row) -> str:
    info = data["machine"]
    lines = [
        "# Benchmarks: scalyproxy next to HAProxy and a direct connection",
        "",
        "Generated by the benchmark suite (`bench/suite.py`); do not edit by hand. Produced by:",
        "",
        "```sh",
        data["command"],
        "```",
        "",
        f"Machine: {info['nproc']} CPUs ({info['cpu']}), Linux {info['kernel']}, Python {info['python']}, "
        f"uvloop {info['uvloop']}, {info['haproxy']}"
        + (f"; load average at the start {info['load_at_start']}" if info.get("load_at_start") else "")
        + ". The load generator, the backend and the relay share "
        f"these CPUs (and the machine is shared with other work): read the ratios, which come from one run, "
        f"more than the absolute numbers. Run time {data['elapsed_s']:.0f} s.",
        "",
    ]
    if data.get("quick"):
        lines += ["**Quick mode (smoke run): tiny windows; the numbers mean nothing.**", ""]
    for note in data.get("notes", []):
        lines += [f"Note: {note}", ""]
    lines += ["## Targets (canned-reply backend, ratios from this run)", "",
              "| # | figure | target | measured | ratio | verdict |", "| --- | --- | --- | --- | --- | --- |"]
    for t in targets(data):
        lines.append(f"| {t.key} | {t.figure} | {t.goal} | {t.measured} | {_fmt(t.ratio)} | {t.verdict} |")
    lines += ["", _paths_legend(), ""]
    lines += _mix_section(data)
    for backend in _backends(data):
        tables = _loop_tables(data, backend) + _big_table(data, backend) + _idle_table(data, backend)
        if tables:
            lines += [f"## Backend: {backend}", "", *tables]
    lines += [_method(data)]
    analysis = Path(__file__).with_name("analysis.md")
    if analysis.is_file() and not data.get("quick"):
        lines += [analysis.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def _paths_legend() -> str:
    return ("Paths: **direct** (no proxy), **haproxy** (`mode tcp`, `nbthread 1`), **relay** "
            "(`scalyproxy run --relay-only`: bytes forwarded, nothing decoded), **full** (`scalyproxy run` "
            "with `config/blog.yaml` plus the mix's warn-mode collection: every command decoded and checked, "
            "metrics on), **full-schema-off** (the same with the schema rule off); in workload 6 also "
            "**haproxy-2t** (`nbthread 2`), **mongobetween** (coinbase/mongobetween, the Go MongoDB proxy, "
            "with its defaults) and **full-w2** (`scalyproxy run --workers 2`).")


def _backends(data: Row) -> list[str]:
    seen: list[str] = []
    for r in data["results"]:
        if r["backend"] not in seen:
            seen.append(r["backend"])
    return seen


def _loop_tables(data: Row, backend: str) -> list[str]:
    rows = [r for r in data["results"] if r["backend"] == backend]
    out: list[str] = []
    groups = sorted({(r["workload"], r["connections"]) for r in rows if r["workload"] in ("find", "insert", "insert_many")},
                    key=lambda g: (("find", "insert", "insert_many").index(g[0]), g[1]))
    for wl, conns in groups:
        out += [f"### {LABELS[wl]}, {conns} connection{'s' if conns > 1 else ''}", ""]
        out += _table([r for r in rows if r["workload"] == wl and r["connections"] == conns])
    return out


def _table(group: list[Row], mix: bool = False) -> list[str]:
    """One workload at one level on one backend: a row per path, ratios to HAProxy and direct."""
    group = sorted(group, key=lambda r: PATH_ORDER.index(r["path"]) if r["path"] in PATH_ORDER else 99)
    h = _find(group, path="haproxy")
    d = _find(group, path="direct")
    out = ["| path | throughput/s | x HAProxy | x direct | p50 ms | p99 ms | p50 added | p99 added "
           "| proxy CPU us/rt | CPU x HAProxy | proxy CPU use | peak RSS MiB | RSS growth MiB "
           "| load generator CPU use |" + (" refused |" if mix else "") + " errors |",
           "| --- |" + " ---: |" * (15 if mix else 14)]
    for r in group:
        refused = f" {r['extra'].get('refused', 0):,} |" if mix else ""
        out.append(
            f"| {r['path']} | {r['throughput']:,.0f} | {_fmt(_ratio(r['throughput'], h and h['throughput']))} "
            f"| {_fmt(_ratio(r['throughput'], d and d['throughput']))} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
            f"| {_fmt(d and r['p50_ms'] - d['p50_ms'], '+.3f')} | {_fmt(d and r['p99_ms'] - d['p99_ms'], '+.3f')} "
            f"| {_fmt(r['cpu_us'], '.1f')} | {_fmt(_ratio(r['cpu_us'], h and h['cpu_us']))} "
            f"| {_fmt(r['proxy_util'], '.0%')} | {_fmt(_mib(r['peak_kib']), '.1f')} "
            f"| {_fmt(_mib(r['growth_kib']), '.1f')} | {_fmt(r['loadgen_util'], '.0%')} |{refused} {r['errors']} |")
    out.append("")
    for r in group:
        if r["extra"].get("rss_each_kib"):
            out += [f"{r['path']}: {len(r['extra']['rss_each_kib'])} processes; RSS before the window "
                    + " / ".join(f"{k / 1024:.1f}" for k in r["extra"]["rss_each_kib"])
                    + " MiB (the first is the parent); CPU split " + " / ".join(f"{x:.0%}" for x in r["extra"]["cpu_split"])
                    + " (largest first).", ""]
    return out


# -- workload 6: the mix ----------------------------------------------------------------------


def _mix_section(data: Row) -> list[str]:
    mix = [r for r in data["results"] if r["workload"] == "mix"]
    budget = [r for r in data["results"] if r["workload"] == "mix-budget"]
    if not mix and not budget:
        return []
    out = ["## Workload 6: an application's mix, every peer beside ours", "",
           f"The mix: {MIX_TEXT}. Every connection cycles through the same 1,000 commands, ten times a "
           "100-command schedule that spreads each kind by its share (starting at a different place per "
           "connection); every reply is checked: `ok: 1` and no error for the allowed commands, ScalyGlobalQuery "
           "(29001) for the refused ones where a policy applies (elsewhere they are forwarded and must succeed). "
           "*errors* counts the replies that failed their check, *refused* the refusals seen. On FerretDB each "
           "window starts from the same data (the mix inserts and deletes posts).", "",
           "![workload 6](benchmarks-mix.png)", ""]
    out += _peer_matrix(mix)
    for backend in _backends(data):
        for conns in sorted({r["connections"] for r in mix if r["backend"] == backend}):
            out += [f"### {LABELS['mix']}, {backend} backend, {conns} connections", ""]
            out += _table([r for r in mix if r["backend"] == backend and r["connections"] == conns], mix=True)
    out += _budget_table(budget)
    return out


def _peer_matrix(mix: list[Row]) -> list[str]:
    columns = sorted({(r["backend"], r["connections"]) for r in mix},
                     key=lambda c: (("canned", "ferretdb").index(c[0]) if c[0] in ("canned", "ferretdb") else 9, c[1]))
    if not columns:
        return []
    paths = [p for p in MIX_ORDER if any(r["path"] == p for r in mix)]
    head = "| path | " + " | ".join(f"{b} c={c}" for b, c in columns) + " |"
    rule = "| --- |" + " ---: |" * len(columns)
    out = ["### The peers side by side", "",
           "Throughput in round trips/s, and in brackets as a multiple of direct (the limit):", "", head, rule]
    cells: dict[str, list[str]] = {p: [] for p in paths}
    cpu: dict[str, list[str]] = {p: [] for p in paths}
    split: dict[str, list[str]] = {p: [] for p in paths}
    for b, c in columns:
        group = [r for r in mix if r["backend"] == b and r["connections"] == c]
        d, h = _find(group, path="direct"), _find(group, path="haproxy")
        for p in paths:
            r = _find(group, path=p)
            cells[p].append("-" if r is None else
                            f"{r['throughput']:,.0f} ({_fmt(_ratio(r['throughput'], d and d['throughput']))})")
            cpu[p].append("-" if r is None or r["cpu_us"] is None else
                          f"{r['cpu_us']:.1f} ({_fmt(_ratio(r['cpu_us'], h and h['cpu_us']))})")
            user = r and r["cpu_us"] is not None and r["extra"].get("user_us")
            split[p].append("-" if r is None or user is None or user is False else
                            f"{user:.1f} / {r['cpu_us'] - user:.1f}")
    out += [f"| {p} | " + " | ".join(cells[p]) + " |" for p in paths]
    out += ["", "Proxy CPU per round trip in microseconds (the process and its workers or threads), and in "
            "brackets as a multiple of HAProxy with one thread:", "", head, rule]
    out += [f"| {p} | " + " | ".join(cpu[p]) + " |" for p in paths if p != "direct"]
    if any(cell != "-" for p in paths for cell in split[p]):
        out += ["", "The same CPU split into the proxy's own code (user: the interpreter, uvloop, C "
                "extensions) and the kernel's work for it (system: socket reads and writes, epoll, the TCP "
                "stack), in microseconds per round trip, user / system:", "", head, rule]
        out += [f"| {p} | " + " | ".join(split[p]) + " |" for p in paths if p != "direct"]
    return out + [""]


def _budget_table(rows: list[Row]) -> list[str]:
    if not rows:
        return []
    r0 = rows[0]
    out = [f"### {LABELS['mix-budget']}, {r0['connections']} connections", "",
           f"The canned backend and the load generators share a budget of {r0['extra']['load_budget_cpus']:g} CPU; "
           f"each relay gets its own budget of {r0['extra']['budget_cpus'] / r0['extra']['units']:g} CPU per worker "
           f"or thread ({r0['extra']['cgroup']}; see Method). *x one* compares with the same relay's one "
           "worker or thread; *budget use* is the relay's CPU per second over its budget (a relay near 100% "
           "is the bottleneck), *throttled* the share of quota periods in which the kernel held it back, "
           "*load side use* the load generators' and backend's CPU per second over theirs.", "",
           "| path | budget CPU | throughput/s | x one | p50 ms | p99 ms | proxy CPU us/rt | budget use | throttled "
           "| load side use | CPU split across processes | refused | errors |",
           "| --- |" + " ---: |" * 12]
    ones = {"haproxy-2t": "haproxy", "full-w2": "full"}
    for r in rows:
        base = _find(rows, path=ones.get(r["path"], r["path"]))
        split = r["extra"].get("cpu_split")
        out.append(
            f"| {r['path']} | {r['extra']['budget_cpus']:.2f} | {r['throughput']:,.0f} "
            f"| {_fmt(_ratio(r['throughput'], base and base['throughput']))} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
            f"| {_fmt(r['cpu_us'], '.1f')} | {_fmt(_budget_use(r), '.0%')} "
            f"| {_fmt(r['extra']['throttled'].get('proxy'), '.0%')} | {_fmt(_load_use(r), '.0%')} "
            f"| {' / '.join(f'{x:.0%}' for x in split) if split else '-'} | {r['extra'].get('refused', 0):,} "
            f"| {r['errors']} |")
    return out + [""]


def _big_table(data: Row, backend: str) -> list[str]:
    rows = [r for r in data["results"] if r["backend"] == backend and r["workload"] == "big"]
    if not rows:
        return []
    size = rows[0]["extra"]["message_bytes"]
    h = _find(rows, path="haproxy")
    out = [f"### {LABELS['big']} ({size / 1e6:.1f} MB, best of {len(rows[0]['extra']['times'])})", "",
           "| path | round trip ms | x HAProxy | MB/s | peak RSS MiB | RSS growth MiB | growth / message |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        growth = r["growth_kib"]
        out.append(f"| {r['path']} | {r['seconds'] * 1e3:.1f} | {_fmt(_ratio(r['seconds'], h and h['seconds']))} "
                   f"| {r['throughput']:.0f} | {_fmt(_mib(r['peak_kib']), '.1f')} "
                   f"| {_fmt(_mib(growth), '.1f')} "
                   f"| {_fmt(_ratio(growth and growth * 1024, size))} |")
    return out + [""]


def _idle_table(data: Row, backend: str) -> list[str]:
    rows = [r for r in data["results"] if r["backend"] == backend and r["workload"] == "idle"]
    if not rows:
        return []
    out = [f"### {LABELS['idle']} ({rows[0]['connections']:,}, each after a hello)", "",
           "| path | RSS before MiB | RSS with them MiB | KiB per client connection | open |",
           "| --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        out.append(f"| {r['path']} | {r['rss_kib'] / 1024:.1f} | {r['peak_kib'] / 1024:.1f} "
                   f"| {r['extra']['kib_per_connection']:.2f} | {r['extra']['open']:,} |")
    out += ["", "Each client connection through a relay also holds one upstream connection: the figure "
            "per client connection includes both sides.", ""]
    return out


def _method(data: Row) -> str:
    s = data["settings"]
    return (
        "## Method\n\n"
        "Workloads 1-3 and 6: closed-loop request/response on each connection (no pipelining) with prebuilt "
        f"messages; {s['warmup']} s warm-up, then {s['window']} s measured (twice that for workload 3, "
        f"1.4 times that on FerretDB), {s['rounds']} rounds in mirrored path order on the canned backend "
        "(one on FerretDB), merged. The load generator is a separate process (uvloop, raw sockets; its CPU "
        "use is in the tables: it is not the bottleneck); latency is what it measures per round trip. "
        "The 1-connection runs of workloads 1 and 2 measure the latency a relay adds with nothing queued "
        "(P3); at 16 and 64 connections the p99 is mostly queueing behind the other processes on the "
        "two shared CPUs. Proxy CPU is utime+stime of the proxy process (all its threads) and of the "
        "processes below it (workers) from `/proc/PID/stat` over the "
        "measured window divided by the round trips in it; *proxy CPU use* is that CPU time per second "
        "(100% = one core). Peak RSS is VmHWM (reset through `/proc/PID/clear_refs` before workload 4); "
        "growth is peak minus the RSS before the workload. Workload 4 sends the message on a fresh "
        "connection (after a hello) and times until the whole reply is back. Workload 5 opens the "
        "connections (each sends a hello, as drivers do) and reads the proxy's VmRSS before and after. "
        "The canned backend is itself Python (uvloop), so it and the load generator take CPU from the "
        "relay under test on a 2-CPU machine, the same for every path.\n\n"
        "Workload 6b makes the relay the bottleneck on this small machine with CPU quotas (Linux cgroups, "
        "`cpu.max` in v2 or `cpu.cfs_quota_us` in v1, over 10 ms periods): the canned backend and the load "
        f"generators are moved into one group limited to {s.get('budget_load', 1.0):g} CPU, and each relay into "
        f"its own group limited to {s.get('budget_core', 0.4):g} CPU per worker or thread (one worker: "
        f"{s.get('budget_core', 0.4):g} CPU; `--workers 2` or `nbthread 2`: twice that), as if each worker had a "
        "core of that speed to itself. The figure that says the relay was the bottleneck is its budget use "
        "(close to 100%, throttled in most periods) while the load side stays under its own budget. The "
        "groups are created for the measurement and removed after it. "
        "`--budget-core` and `--budget-load` change the budgets.\n"
    )


# -- console summary and chart ----------------------------------------------------------------


def summary(data: Row) -> str:
    lines = ["Targets (canned backend, ratios from this run"
             + ("; QUICK MODE: the numbers mean nothing):" if data.get("quick") else "):")]
    for t in targets(data):
        lines.append(f"  {t.key} {t.figure:62} {t.goal:22} {t.measured:42} {_fmt(t.ratio):>6}  {t.verdict}")
    return "\n".join(lines)


def chart(data: Row, path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    backends = _backends(data)
    if not any(r["workload"] in ("find", "insert") for r in data["results"]):
        return None
    fig, axes = plt.subplots(len(backends), 2, figsize=(13, 4.2 * len(backends)), squeeze=False)
    for row, backend in enumerate(backends):
        rows = [r for r in data["results"] if r["backend"] == backend and r["workload"] in ("find", "insert")]
        groups = sorted({(r["workload"], r["connections"]) for r in rows})
        if not groups:
            for ax in axes[row]:
                ax.set_title(f"{backend} backend: workloads 1-2 not run")
            continue
        paths = [p for p in PATH_ORDER if any(r["path"] == p for r in rows)]
        width = 0.8 / max(1, len(paths))
        for col, (key, title) in enumerate((("throughput", "throughput (round trips/s)"), ("p99_ms", "p99 latency (ms)"))):
            ax = axes[row][col]
            for i, p in enumerate(paths):
                values = [(_find(rows, workload=w, connections=c, path=p) or {}).get(key, 0.0) for w, c in groups]
                ax.bar([g + i * width for g in range(len(groups))], values, width, label=p)
            ax.set_xticks([g + width * (len(paths) - 1) / 2 for g in range(len(groups))])
            ax.set_xticklabels([f"{w}\n{c} conn{'s' if c > 1 else ''}" for w, c in groups])
            ax.set_title(f"{backend} backend: {title}")
            ax.grid(axis="y", alpha=0.3)
            if col == 0:
                ax.legend(fontsize=8)
    fig.suptitle("scalyproxy vs HAProxy vs direct" + (" (quick mode: numbers mean nothing)" if data.get("quick") else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def mix_chart(data: Row, path: Path) -> Path | None:
    """Workload 6: throughput and proxy CPU per round trip by path, a row per backend, and 6b."""
    mix = [r for r in data["results"] if r["workload"] == "mix"]
    budget = [r for r in data["results"] if r["workload"] == "mix-budget"]
    if not mix and not budget:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    backends = [b for b in _backends(data) if any(r["backend"] == b for r in mix)]
    nrows = len(backends) + (1 if budget else 0)
    fig, axes = plt.subplots(nrows, 2, figsize=(13, 4.2 * nrows), squeeze=False)
    for row, backend in enumerate(backends):
        rows = [r for r in mix if r["backend"] == backend]
        levels = sorted({r["connections"] for r in rows})
        paths = [p for p in MIX_ORDER if any(r["path"] == p for r in rows)]
        for col, (key, title) in enumerate((("throughput", "throughput (round trips/s)"),
                                            ("cpu_us", "proxy CPU per round trip (us)"))):
            ax = axes[row][col]
            shown = [p for p in paths if key != "cpu_us" or p != "direct"]
            width = 0.8 / max(1, len(levels))
            for i, c in enumerate(levels):
                values = [(_find(rows, connections=c, path=p) or {}).get(key) or 0.0 for p in shown]
                ax.bar([x + i * width for x in range(len(shown))], values, width, label=f"{c} connections")
            ax.set_xticks([x + width * (len(levels) - 1) / 2 for x in range(len(shown))])
            ax.set_xticklabels(shown, rotation=20, fontsize=8)
            ax.set_title(f"mix, {backend} backend: {title}")
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=8)
    if budget:
        names = [r["path"] for r in budget]
        ax = axes[nrows - 1][0]
        ax.bar(names, [r["throughput"] for r in budget], color="tab:green")
        ax.set_title(f"6b, proxy the bottleneck (c={budget[0]['connections']}): throughput (round trips/s)")
        ax.grid(axis="y", alpha=0.3)
        ax = axes[nrows - 1][1]
        ax.bar(names, [_budget_use(r) or 0.0 for r in budget], color="tab:orange", label="relay")
        ax.plot(names, [_load_use(r) or 0.0 for r in budget], "ko", label="load side")
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.set_title("6b: share of its CPU budget used")
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle("workload 6: an application's mix" + (" (quick mode: numbers mean nothing)" if data.get("quick") else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def main(argv: list[str]) -> int:
    import json

    root = Path(__file__).resolve().parents[1]
    source = Path(argv[0]) if argv else root / "bench" / "results" / "benchmarks.json"
    out = Path(argv[1]) if len(argv) > 1 else root / "docs"
    data = json.loads(source.read_text())
    (out / "benchmarks.md").write_text(markdown(data))
    chart(data, out / "benchmarks.png")
    mix_chart(data, out / "benchmarks-mix.png")
    print(summary(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
