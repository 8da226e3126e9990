"""Turns the suite's results into ratios, the targets P1-P6, a markdown table and a chart.

    .venv/bin/python -m bench.report [bench/results/benchmarks.json [docs]]   # re-render .md/.png
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]
PATH_ORDER = ("direct", "haproxy", "relay", "full", "full-schema-off")
LABELS = {
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
    rows = [r for r in data["results"] if r["backend"] == "canned"]
    levels = sorted({r["connections"] for r in rows if r["workload"] in ("find", "insert")})
    high, low = (levels[-1], levels[0]) if levels else (0, 0)
    out: list[Target] = []
    for wl in ("find", "insert"):
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
    for path in ("relay", "full"):
        r = _find(rows, workload="idle", path=path)
        per = r["extra"]["kib_per_connection"] if r else None
        out.append(Target("P5", f"{r['connections'] if r else '?'} idle connections, {path}: RSS per client connection",
                          "<= 4 KiB", f"{_fmt(per, '.2f')} KiB (with its upstream connection)", per,
                          _check(per, 4.0, True)))
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
    for backend in _backends(data):
        lines += [f"## Backend: {backend}", ""]
        lines += _loop_tables(data, backend)
        lines += _big_table(data, backend)
        lines += _idle_table(data, backend)
    lines += [_method(data)]
    analysis = Path(__file__).with_name("analysis.md")
    if analysis.is_file() and not data.get("quick"):
        lines += [analysis.read_text().rstrip()]
    return "\n".join(lines) + "\n"


def _paths_legend() -> str:
    return ("Paths: **direct** (no proxy), **haproxy** (`mode tcp`, `nbthread 1`), **relay** "
            "(`scalyproxy run --relay-only`: bytes forwarded, nothing decoded), **full** (`scalyproxy run` "
            "with `config/blog.yaml`: every command decoded and checked, metrics on), "
            "**full-schema-off** (the same with the schema rule off).")


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
        group = sorted((r for r in rows if r["workload"] == wl and r["connections"] == conns),
                       key=lambda r: PATH_ORDER.index(r["path"]) if r["path"] in PATH_ORDER else 99)
        h = _find(group, path="haproxy")
        d = _find(group, path="direct")
        out += [f"### {LABELS[wl]}, {conns} connection{'s' if conns > 1 else ''}", "",
                "| path | throughput/s | x HAProxy | x direct | p50 ms | p99 ms | p50 added | p99 added "
                "| proxy CPU us/rt | CPU x HAProxy | proxy CPU use | peak RSS MiB | RSS growth MiB "
                "| load generator CPU use | errors |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in group:
            out.append(
                f"| {r['path']} | {r['throughput']:,.0f} | {_fmt(_ratio(r['throughput'], h and h['throughput']))} "
                f"| {_fmt(_ratio(r['throughput'], d and d['throughput']))} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} "
                f"| {_fmt(d and r['p50_ms'] - d['p50_ms'], '+.3f')} | {_fmt(d and r['p99_ms'] - d['p99_ms'], '+.3f')} "
                f"| {_fmt(r['cpu_us'], '.1f')} | {_fmt(_ratio(r['cpu_us'], h and h['cpu_us']))} "
                f"| {_fmt(r['proxy_util'], '.0%')} | {_fmt(_mib(r['peak_kib']), '.1f')} "
                f"| {_fmt(_mib(r['growth_kib']), '.1f')} | {_fmt(r['loadgen_util'], '.0%')} | {r['errors']} |")
        out.append("")
    return out


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
        "Workloads 1-3: closed-loop request/response on each connection (no pipelining) with prebuilt "
        f"messages; {s['warmup']} s warm-up, then {s['window']} s measured (twice that for workload 3, "
        f"1.4 times that on FerretDB), {s['rounds']} rounds in mirrored path order on the canned backend "
        "(one on FerretDB), merged. The load generator is a separate process (uvloop, raw sockets; its CPU "
        "use is in the tables: it is not the bottleneck); latency is what it measures per round trip. "
        "The 1-connection runs of workloads 1 and 2 measure the latency a relay adds with nothing queued "
        "(P3); at 16 and 64 connections the p99 is mostly queueing behind the other processes on the "
        "two shared CPUs. Proxy CPU is utime+stime of the proxy process from `/proc/PID/stat` over the "
        "measured window divided by the round trips in it; *proxy CPU use* is that CPU time per second "
        "(100% = one core). Peak RSS is VmHWM (reset through `/proc/PID/clear_refs` before workload 4); "
        "growth is peak minus the RSS before the workload. Workload 4 sends the message on a fresh "
        "connection (after a hello) and times until the whole reply is back. Workload 5 opens the "
        "connections (each sends a hello, as drivers do) and reads the proxy's VmRSS before and after. "
        "The canned backend is itself Python (uvloop), so it and the load generator take CPU from the "
        "relay under test on a 2-CPU machine, the same for every path.\n"
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


def main(argv: list[str]) -> int:
    import json

    root = Path(__file__).resolve().parents[1]
    source = Path(argv[0]) if argv else root / "bench" / "results" / "benchmarks.json"
    out = Path(argv[1]) if len(argv) > 1 else root / "docs"
    data = json.loads(source.read_text())
    (out / "benchmarks.md").write_text(markdown(data))
    chart(data, out / "benchmarks.png")
    print(summary(data))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
