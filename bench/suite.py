"""The benchmark suite: scalyproxy next to HAProxy and a direct connection, in one run.

    scripts/bench                 # the full run (~10 minutes), writes docs/benchmarks.md and .png
    scripts/bench --quick         # a smoke run (~30 s): checks that the suite runs, never the numbers
    .venv/bin/python -m bench.suite --help

Paths, each measured in the same run against the same backend:

  direct   the load generator talks to the backend itself;
  haproxy  HAProxy in TCP mode (``mode tcp``, ``nbthread 1``), the floor for any relay;
  relay    ``scalyproxy run --relay-only``: bytes forwarded, nothing read (policy off);
  full     ``scalyproxy run`` with config/blog.yaml (every command decoded and checked).

Backends: the canned-reply wire server (:mod:`bench.canned`; the proxy's own cost is
not hidden behind the backend's) and FerretDB (realistic).

Workloads: (1) single-document 1.1 KB inserts carrying the shard key and (2) finds by
the full shard key (~110 B), at 16 and 64 connections (and at 1 connection on the
canned backend: the latency a relay adds with no queueing); (3) insert_many of 1 KB
documents in batches of 1,000, schema validation on and off; (4) one ~47 MB insert
message; (5) 10,000 idle client connections (fewer if the fd limit cannot hold two
sockets per connection in the proxy).

The machine is shared and noisy: every path of a workload is measured back to back,
in two rounds in mirrored order (ABCD DCBA) on the canned backend, and the figures
that matter are ratios to HAProxy and to direct from this same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import messages as m
from bench import procs
from bench.procs import Child, LoadGen

ROOT = procs.ROOT
BLOG = ROOT / "config" / "blog.yaml"
PATHS = ("direct", "haproxy", "relay", "full")
WORKLOADS = ("find", "insert", "insert_many", "big", "idle")
#: Posts in FerretDB's collection before the finds: FerretDB v1 scans the collection for a
#: filter on fields other than _id (about 0.3 ms per document here), so it stays small.
FERRET_SEED = 20


@dataclass
class Settings:
    quick: bool
    warmup: float
    window: float
    rounds: int
    levels: tuple[int, ...]
    batch_connections: int
    big_bytes: int
    big_repeats: int
    idle_connections: int
    backends: tuple[str, ...]
    loadgen_procs: int
    workloads: tuple[str, ...] = WORKLOADS


def settings(args: argparse.Namespace) -> Settings:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    idle = min(10_000, (limit - 200) // 2)  # the proxy holds a client and an upstream socket each
    workloads = tuple(args.workloads or WORKLOADS)
    if args.quick:
        return Settings(True, 0.2, 0.4, 1, (4,), 2, 4_700_000, 1, min(idle, 200),
                        tuple(args.backends or ["canned"]), 1, workloads)
    return Settings(False, 0.5, 2.5, 2, (1, 16, 64), 4, 47_000_000, 2, idle,
                    tuple(args.backends or ["canned", "ferretdb"]), args.loadgen_procs, workloads)


@dataclass
class Result:
    """One workload on one path against one backend."""

    backend: str
    workload: str
    connections: int
    path: str
    throughput: float = 0.0  # round trips/s (documents/s for insert_many)
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    cpu_us: float | None = None  # proxy CPU per round trip (None: direct)
    proxy_util: float | None = None  # proxy CPU seconds per second of the window
    loadgen_util: float = 0.0  # load generator CPU per second (per process, max)
    rss_kib: int | None = None  # proxy RSS before the workload
    peak_kib: int | None = None  # proxy peak RSS during it (VmHWM, reset before)
    growth_kib: int | None = None  # peak - before
    seconds: float = 0.0  # round-trip time of one message (big) or window length
    errors: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# -- environment --------------------------------------------------------------------------


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def machine() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    haproxy = procs.haproxy_binary()
    version = "not installed"
    if haproxy:
        out = subprocess.run([haproxy, "-v"], capture_output=True, text=True).stdout
        version = out.splitlines()[0] if out else "?"
    import uvloop

    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": uvloop.__version__,
        "haproxy": version,
        "fd_limit": str(resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
        "load_at_start": "{:.1f} {:.1f} {:.1f}".format(*os.getloadavg()),
    }


def schema_off_config(workdir: Path) -> Path:
    """config/blog.yaml with the schema rule off (workload 3's baseline)."""
    text, count = re.subn(r"(?m)^(\s+schema:\s*)enforce\b", r"\1off", BLOG.read_text())
    if count != 1:
        raise RuntimeError(f"{BLOG}: expected one 'schema: enforce' line under policy.rules, found {count}")
    path = workdir / "blog-schema-off.yaml"
    path.write_text(text)
    return path


# -- one backend with its relays -------------------------------------------------------------


class Bench:
    """A backend and the relays in front of it."""

    def __init__(self, backend: str, s: Settings, workdir: Path, log: Callable[[str], None]) -> None:
        self.backend = backend
        self.s = s
        self.log = log
        self.children: list[Child] = []
        self.ferret: Any = None
        self.indexed = False
        try:
            self._start(workdir)
        except BaseException:
            self.close()
            raise

    def _start(self, workdir: Path) -> None:
        backend, s = self.backend, self.s
        if backend == "canned":
            canned = procs.start_canned()
            self.children.append(canned)
            self.port = canned.port
        else:
            self.ferret, self.port = procs.start_ferretdb()
        self.relays: dict[str, Child | None] = {"direct": None}
        if procs.haproxy_binary():
            limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # HAProxy wants 2 fds per connection
            maxconn = min(s.idle_connections + 50, (limit - 40) // 2)
            self.relays["haproxy"] = self._own(procs.start_haproxy(self.port, maxconn=maxconn))
        self.relays["relay"] = self._own(procs.start_scalyproxy(BLOG, self.port, relay_only=True))
        self.relays["full"] = self._own(procs.start_scalyproxy(BLOG, self.port))
        self.schema_off = self._own(procs.start_scalyproxy(schema_off_config(workdir), self.port))

    def _own(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def address(self, path: str) -> str:
        child = self.relays[path]
        return child.address if child is not None else f"127.0.0.1:{self.port}"

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop()
        if self.ferret is not None:
            self.ferret.stop()

    # -- FerretDB state ----------------------------------------------------------------------

    @property
    def rounds(self) -> int:
        return self.s.rounds if self.ferret is None else 1  # FerretDB: the backend dominates anyway

    def levels(self) -> tuple[int, ...]:
        """Connection counts of workloads 1 and 2 (1 connection: the latency probe, canned only)."""
        return self.s.levels if self.ferret is None else tuple(c for c in self.s.levels if c > 1)

    def reset_data(self, seed: int = FERRET_SEED) -> None:
        """FerretDB: an empty collection, then ``seed`` posts; the shard key index only the first
        time (for the finds, which come first): FerretDB v1.24 on SQLite can refuse to
        re-create the index of a collection it has just dropped, and to empty a large one
        with delete_many ("too many SQL variables").
        """
        if self.ferret is None:
            return
        import pymongo

        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
            self.ferret.uri, serverSelectionTimeoutMS=10_000)
        try:
            coll = client[m.DB][m.COLLECTION]
            coll.drop()
            if not self.indexed:
                coll.create_index([("author", 1), ("title", 1)])
                self.indexed = True
            if seed:
                coll.insert_many([m.post(i) for i in range(seed)])
        finally:
            client.close()

    # -- workloads 1-3: request/response loops ---------------------------------------------------

    def loop(self, workload: str, connections: int, paths: list[tuple[str, Child | None]],
             docs_per_trip: int = 1) -> list[Result]:
        """Each path in turn (mirrored in the second round); figures merged over rounds."""
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in paths}
        for r in range(self.rounds):
            order = paths if r % 2 == 0 else list(reversed(paths))
            for name, child in order:
                rounds[name].append(self._window(workload, connections, child))
        out = []
        for name, _ in paths:
            res = _merge(rounds[name])
            out.append(Result(
                self.backend, workload, connections, name,
                throughput=res["throughput"] * docs_per_trip, p50_ms=res["p50_ms"], p99_ms=res["p99_ms"],
                cpu_us=res.get("cpu_us"), proxy_util=res.get("proxy_util"), loadgen_util=res["loadgen_util"],
                rss_kib=res.get("rss_kib"), peak_kib=res.get("peak_kib"), growth_kib=res.get("growth_kib"),
                seconds=res["seconds"], errors=res["errors"]))
            self.log(f"  {self.backend:8} {workload:11} c={connections:<3} {name:10} "
                     f"{out[-1].throughput:9.0f}/s p50 {res['p50_ms']:6.3f} ms p99 {res['p99_ms']:6.3f} ms"
                     + (f" proxy {res['cpu_us']:6.1f} us/rt" if res.get("cpu_us") else ""))
        return out

    def _window(self, workload: str, connections: int, child: Child | None) -> dict[str, Any]:
        window = self.s.window * (1.4 if self.ferret is not None else 1.0) * (2 if workload == "insert_many" else 1)
        target = child.address if child is not None else f"127.0.0.1:{self.port}"
        gen = LoadGen(target, workload, connections, self.s.loadgen_procs if connections >= 32 else 1)
        try:
            gen.ready()
            gen.go()
            time.sleep(self.s.warmup)
            pid = child.pid if child is not None else None
            before = _sample(pid, gen)
            gen.mark()
            time.sleep(window)
            after = _sample(pid, gen)
            results = gen.stop()
        finally:
            gen.kill()
        res = procs.combine(results)
        res["quantiles"] = _quantiles(results)
        trips = max(1, res["round_trips"])
        wall = after["t"] - before["t"]
        res["loadgen_util"] = max(b - a for a, b in zip(before["gen"], after["gen"], strict=True)) / wall
        if pid is not None:
            res["cpu_s"] = after["cpu"] - before["cpu"]
            res["cpu_us"] = res["cpu_s"] / trips * 1e6
            res["proxy_util"] = res["cpu_s"] / wall
            res["rss_kib"] = before["rss"]
            res["peak_kib"] = after["hwm"]
        return res

    # -- workload 4: one big message -------------------------------------------------------------

    def big(self, message: bytes) -> list[Result]:
        out = []
        for name, child in self.relays.items():
            times, growths, peaks, before_rss = [], [], [], 0
            for _ in range(self.s.big_repeats if self.ferret is None else 1):
                if self.ferret is not None:
                    self.reset_data(seed=0)
                pid = child.pid if child is not None else None
                with _connection(self.address(name)) as sock:
                    if pid is not None:
                        procs.reset_peak(pid)
                        before_rss = procs.memory_kib(pid)["VmRSS"]
                    elapsed, reply = _round_trip(sock, message)
                    if pid is not None:
                        peak = procs.memory_kib(pid)["VmHWM"]
                        peaks.append(peak)
                        growths.append(peak - before_rss)
                    times.append(elapsed)
                    if b"errmsg" in reply:
                        raise RuntimeError(f"{name}: the big insert was refused: {reply[:300]!r}")
            res = Result(self.backend, "big", 1, name, throughput=len(message) / min(times) / 1e6,
                         seconds=min(times), rss_kib=before_rss if child else None,
                         peak_kib=max(peaks) if peaks else None, growth_kib=max(growths) if growths else None,
                         extra={"message_bytes": len(message), "times": times})
            out.append(res)
            self.log(f"  {self.backend:8} big         {len(message) / 1e6:.1f} MB {name:10} "
                     f"{min(times) * 1e3:8.1f} ms" + (f" RSS growth {res.growth_kib / 1024:.1f} MiB"
                                                      if res.growth_kib is not None else ""))
        return out

    # -- workload 5: idle connections --------------------------------------------------------------

    def idle(self, count: int) -> list[Result]:
        out = []
        for name, child in self.relays.items():
            if child is None:
                continue
            time.sleep(0.5)
            before = procs.memory_kib(child.pid)["VmRSS"]
            gen = LoadGen(child.address, "idle", count, 1)
            try:
                gen.ready()
                time.sleep(1.0)
                after = procs.memory_kib(child.pid)
                gen.go()
                gen.mark()
                result = procs.combine(gen.stop())
            finally:
                gen.kill()
            per = (after["VmRSS"] - before) / count
            out.append(Result(self.backend, "idle", count, name, rss_kib=before, peak_kib=after["VmRSS"],
                              growth_kib=after["VmRSS"] - before,
                              extra={"kib_per_connection": per, "open": result["open"]}))
            self.log(f"  {self.backend:8} idle        c={count:<5} {name:10} {per:6.2f} KiB/connection "
                     f"({result['open']} open)")
            time.sleep(1.0)  # let the proxy close the upstream side before the next path
        return out


def _sample(pid: int | None, gen: LoadGen) -> dict[str, Any]:
    out: dict[str, Any] = {"t": time.monotonic(), "gen": [procs.cpu_seconds(p.pid) for p in gen.procs]}
    if pid is not None:
        out["cpu"] = procs.cpu_seconds(pid)
        mem = procs.memory_kib(pid)
        out["rss"], out["hwm"] = mem["VmRSS"], mem["VmHWM"]
    return out


def _quantiles(results: list[dict[str, Any]]) -> list[tuple[float, float]]:
    return [(q, r["round_trips"] / len(r["quantiles_ms"])) for r in results for q in r["quantiles_ms"]]


def _merge(windows: list[dict[str, Any]]) -> dict[str, Any]:
    trips = sum(w["round_trips"] for w in windows)
    seconds = sum(w["seconds"] for w in windows)
    weighted = sorted(q for w in windows for q in w["quantiles"])
    res: dict[str, Any] = {
        "round_trips": trips, "seconds": seconds, "throughput": trips / seconds if seconds else 0.0,
        "p50_ms": procs.percentile(weighted, 0.50), "p99_ms": procs.percentile(weighted, 0.99),
        "errors": sum(w["errors"] for w in windows),
        "loadgen_util": max(w["loadgen_util"] for w in windows),
    }
    if "cpu_s" in windows[0]:
        cpu = sum(w["cpu_s"] for w in windows)
        res["cpu_us"] = cpu / max(1, trips) * 1e6
        res["proxy_util"] = cpu / seconds if seconds else 0.0
        res["rss_kib"] = windows[0]["rss_kib"]
        res["peak_kib"] = max(w["peak_kib"] for w in windows)
        res["growth_kib"] = res["peak_kib"] - res["rss_kib"]
    return res


@contextmanager
def _connection(address: str) -> Iterator[socket.socket]:
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=120)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        _round_trip(sock, m.with_request_id(m.hello(), 1))
        yield sock
    finally:
        sock.close()


def _round_trip(sock: socket.socket, message: bytes) -> tuple[float, bytes]:
    start = time.perf_counter()
    sock.sendall(message)
    head = _recv_exact(sock, 4)
    reply = head + _recv_exact(sock, int.from_bytes(head, "little") - 4)
    return time.perf_counter() - start, reply


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed in the middle of a reply")
        buf += chunk
    return bytes(buf)


# -- the whole run ------------------------------------------------------------------------------


def run_backend(backend: str, s: Settings, workdir: Path, log: Callable[[str], None],
                failures: list[str]) -> list[Result]:
    log(f"backend {backend}: starting it and the relays")
    bench = Bench(backend, s, workdir, log)
    results: list[Result] = []
    paths = list(bench.relays.items())
    steps: list[tuple[str, Callable[[], list[Result]]]] = [("setup", lambda: (bench.reset_data(), [])[1])]
    for workload in ("find", "insert"):
        for level in bench.levels() if workload in s.workloads else ():
            steps.append((f"{workload} c={level}", lambda w=workload, c=level: bench.loop(w, c, paths)))
    if "insert_many" in s.workloads:
        batch_paths = paths + [("full-schema-off", bench.schema_off)]
        steps.append(("insert_many", lambda: bench.loop("insert_many", s.batch_connections, batch_paths,
                                                         docs_per_trip=1000)))
    if "big" in s.workloads:
        steps.append(("big", lambda: bench.big(m.big_insert(s.big_bytes))))
    if backend == "canned" and "idle" in s.workloads:
        steps.append(("idle", lambda: bench.idle(s.idle_connections)))
    try:
        for name, step in steps:
            try:
                results += step()
            except Exception as exc:  # one failed workload must not lose the others' figures
                failures.append(f"{backend} backend, {name}: {type(exc).__name__}: {str(exc)[:300]}")
                log("FAILED: " + failures[-1])
    finally:
        bench.close()
    return results


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="scalyproxy vs HAProxy vs direct (see bench/suite.py)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny windows, canned backend only")
    parser.add_argument("--out", type=Path, help="where to write benchmarks.md/.png (and the raw .json) "
                        "(default: docs/ and bench/results/ for a full run, a temporary directory for --quick)")
    parser.add_argument("--backends", nargs="+", choices=["canned", "ferretdb"], help="default: both (quick: canned)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, help="default: all (for partial runs "
                        "while working on one figure; docs/benchmarks.md comes from a full run)")
    parser.add_argument("--loadgen-procs", type=int, default=2, help="load generator processes at 64 connections")
    parser.add_argument("--command", default="scripts/bench", help="the command line to quote in the report")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # stop the children in the finally blocks
    fd_limit = raise_fd_limit()
    s = settings(args)
    out = args.out or (Path(tempfile.mkdtemp(prefix="scaly-bench-")) if s.quick else ROOT / "docs")
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="scaly-bench-work-"))
    started = time.monotonic()

    def log(line: str) -> None:
        print(line, flush=True)

    info = machine()
    log(f"machine: {info['nproc']} CPUs, {info['cpu']}, kernel {info['kernel']}; {info['haproxy']}; "
        f"fd limit {fd_limit}")
    notes = []
    if procs.haproxy_binary() is None:
        notes.append("HAProxy is not installed: the haproxy path was skipped (scripts/bench installs it).")
        log("note: " + notes[-1])
    if s.idle_connections < 10_000 and not s.quick:
        notes.append(f"Workload 5 used {s.idle_connections} connections: the fd limit ({fd_limit}) must hold a "
                     "client and an upstream socket per connection in the proxy.")
    results: list[Result] = []
    failures: list[str] = []
    try:
        for backend in s.backends:
            results += run_backend(backend, s, workdir, log, failures)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    notes += [f"FAILED (no figures): {f}" for f in failures]
    from bench import report

    command = args.command.strip() + (" --quick" if s.quick and "--quick" not in args.command else "")
    data = {"machine": info, "command": command,
            "quick": s.quick, "elapsed_s": elapsed, "settings": asdict(s), "notes": notes,
            "results": [asdict(r) for r in results]}
    raw = out / "benchmarks.json" if (s.quick or args.out) else ROOT / "bench" / "results" / "benchmarks.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(data, indent=1))
    text = report.markdown(data)
    (out / "benchmarks.md").write_text(text)
    chart = report.chart(data, out / "benchmarks.png")
    log("")
    log(report.summary(data))
    log(f"wrote {out / 'benchmarks.md'}" + (f", {chart}" if chart else "") + f" in {elapsed:.0f} s")
    if failures:
        log(f"{len(failures)} workload(s) failed: see the notes in the report")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
