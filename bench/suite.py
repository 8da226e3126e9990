"""The benchmark suite: scalyproxy next to HAProxy, mongobetween and a direct connection, in one run.

    scripts/bench                 # the full run (~10-12 minutes), writes docs/benchmarks.md and the charts
    scripts/bench --quick         # a smoke run (~45 s): checks that the suite runs, never the numbers
    scripts/bench --mongobetween /path/to/mongobetween    # with the Go proxy beside the others
    .venv/bin/python -m bench.suite --workloads mix ...   # the mixed workload alone
    .venv/bin/python -m bench.suite --help

Paths, each measured in the same run against the same backend:

  direct        the load generator talks to the backend itself;
  haproxy       HAProxy in TCP mode (``mode tcp``, ``nbthread 1``), the floor for any relay;
  relay         ``scalyproxy run --relay-only``: bytes forwarded, nothing read (policy off);
  full          ``scalyproxy run`` with config/blog.yaml plus the mix's warn-mode collection
                (:func:`mix_config_text`): every command decoded and checked;
  and for the mixed workload (6) also:
  haproxy-2t    HAProxy with ``nbthread 2`` (as many threads as full-w2 has workers);
  mongobetween  coinbase/mongobetween (the Go MongoDB proxy, ``--mongobetween PATH``);
  full-w2       ``scalyproxy run --workers 2`` (when ``scalyproxy run`` has the option).

Backends: the canned-reply wire server (:mod:`bench.canned`; the proxy's own cost is
not hidden behind the backend's) and FerretDB (realistic).

Workloads: (1) single-document 1.1 KB inserts carrying the shard key and (2) finds by
the full shard key (~110 B), at 16 and 64 connections (and at 1 connection on the
canned backend: the latency a relay adds with no queueing); (3) insert_many of 1 KB
documents in batches of 1,000, schema validation on and off; (4) one ~47 MB insert
message; (5) 10,000 idle client connections (fewer if the fd limit cannot hold two
sockets per connection in the proxy); (6) the mixed workload of an application
(:data:`bench.messages.MIX`: 50% targeted find, 15% update, 10% insert of 1 KB posts,
5% delete, 10% aggregate with a targeted ``$match``, 5% count, 3% refused and 2% warned
global queries), every reply checked, at 16 and 64 connections; and (6b) the same mix at
64 connections with the load generator and the backend on a fixed CPU budget and the
proxy on a budget per worker (:mod:`bench.budget`), so that the proxy is the bottleneck
and one worker can be compared with two on a two-CPU machine.

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

from bench import budget, procs
from bench import messages as m
from bench.procs import Child, LoadGen

ROOT = procs.ROOT
BLOG = ROOT / "config" / "blog.yaml"
PATHS = ("direct", "haproxy", "relay", "full")
MIX_PATHS = ("direct", "haproxy", "haproxy-2t", "mongobetween", "relay", "full", "full-w2")
POLICY_PATHS = frozenset({"full", "full-w2"})  # the mix's global query comes back refused
WORKLOADS = ("find", "insert", "mix", "insert_many", "big", "idle")
#: Workers of the multi-process path (and HAProxy threads beside it).
WORKERS = 2
#: Posts in FerretDB's collection before the finds: FerretDB v1 scans the collection for a
#: filter on fields other than _id (about 0.3 ms per document here), so it stays small.
FERRET_SEED = m.SEEDED


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
    mongobetween: str | None = None  # its binary (None: that path is skipped)
    workers: bool = False  # scalyproxy run has --workers
    budget_core: float = 0.4  # workload 6b: CPUs per proxy worker (or HAProxy thread)
    budget_load: float = 1.0  # workload 6b: CPUs of the load generators and the backend together


def settings(args: argparse.Namespace) -> Settings:
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    idle = min(10_000, (limit - 200) // 2)  # the proxy holds a client and an upstream socket each
    workloads = tuple(args.workloads or WORKLOADS)
    common: dict[str, Any] = {
        "workloads": workloads, "mongobetween": procs.mongobetween_binary(args.mongobetween),
        "workers": "mix" in workloads and procs.scalyproxy_has_workers(),
        "budget_core": args.budget_core, "budget_load": args.budget_load}
    if args.quick:
        return Settings(True, 0.2, 0.4, 1, (4,), 2, 4_700_000, 1, min(idle, 200),
                        tuple(args.backends or ["canned"]), 1, **common)
    return Settings(False, 0.5, 2.5, 2, (1, 16, 64), 4, 47_000_000, 2, idle,
                    tuple(args.backends or ["canned", "ferretdb"]), args.loadgen_procs, **common)


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


def mix_config_text() -> str:
    """config/blog.yaml plus the mix's second collection, whose global_query rule is in warn mode
    (appended as text under ``collections:``, the file's last top-level key, so that every other
    line stays as written)."""
    import yaml

    text = BLOG.read_text()
    tops = re.findall(r"(?m)^([A-Za-z_]+):", text)
    if not tops or tops[-1] != "collections":
        raise RuntimeError(f"{BLOG}: the mix config appends to 'collections:', which must be the last top-level key")
    block = yaml.safe_dump({f"{m.DB}.{m.WARN_COLLECTION}": m.WARN_COLLECTION_CONFIG}, sort_keys=False)
    return text.rstrip("\n") + "\n" + "".join(f"  {line}\n" for line in block.splitlines())


def mix_config(workdir: Path) -> Path:
    path = workdir / "blog-mix.yaml"
    path.write_text(mix_config_text())
    return path


# -- one measured window --------------------------------------------------------------------


@dataclass
class Probe:
    """One path of a window: where the load goes, and what is measured besides the load generators."""

    target: str  # HOST:PORT the load generators connect to
    proxy: int | None  # PID of the relay (its CPU and memory are summed with its workers'); None: direct
    policy: bool = False  # the relay applies the mix config: the mix's global query comes back refused
    on_spawn: Callable[[LoadGen], None] | None = None  # e.g. put the load generators in a CPU budget
    load_pids: tuple[int, ...] = ()  # the backend, counted with the load generators (workload 6b)
    budgets: dict[str, budget.CpuBudget] = field(default_factory=dict)  # their throttling is read too


def measure(s: Settings, workload: str, connections: int, probe: Probe, window: float) -> dict[str, Any]:
    """Open the connections, warm up, measure ``window`` seconds: round trips, latency, CPU, memory."""
    gen = LoadGen(probe.target, workload, connections, s.loadgen_procs if connections >= 32 else 1,
                  policy=probe.policy)
    try:
        if probe.on_spawn is not None:
            probe.on_spawn(gen)
        gen.ready()
        gen.go()
        time.sleep(s.warmup)
        before = _sample(probe, gen)
        gen.mark()
        time.sleep(window)
        after = _sample(probe, gen)
        results = gen.stop()
    finally:
        gen.kill()
    res = procs.combine(results)
    res["quantiles"] = _quantiles(results)
    trips = max(1, res["round_trips"])
    wall = after["t"] - before["t"]
    gen_cpu = [b - a for a, b in zip(before["gen"], after["gen"], strict=True)]
    res["loadgen_util"] = max(gen_cpu) / wall
    res["load_cpu_s"] = sum(gen_cpu) + after["load"] - before["load"]
    res["wall"] = wall
    res["throttle"] = {name: {k: after["throttle"][name][k] - before["throttle"][name][k]
                              for k in ("nr_periods", "nr_throttled")} for name in probe.budgets}
    if probe.proxy is not None:
        res["cpu_s"] = after["cpu"] - before["cpu"]
        res["cpu_us"] = res["cpu_s"] / trips * 1e6
        res["user_s"] = after["user"] - before["user"]
        res["proxy_util"] = res["cpu_s"] / wall
        res["rss_kib"] = before["rss"]
        res["peak_kib"] = after["hwm"]
        res["split"] = sorted((after["tree"][p] - before["tree"].get(p, 0.0) for p in after["tree"]), reverse=True)
        res["rss_each"] = before["rss_each"]
    return res


def _sample(probe: Probe, gen: LoadGen) -> dict[str, Any]:
    out: dict[str, Any] = {"t": time.monotonic(), "gen": [procs.cpu_seconds(p.pid) for p in gen.procs],
                           "load": sum(procs.cpu_seconds(p) for p in probe.load_pids),
                           "throttle": {name: b.throttling() for name, b in probe.budgets.items()}}
    if probe.proxy is not None:
        times = procs.tree_cpu_times(probe.proxy)
        out["tree"] = {p: user + system for p, (user, system) in times.items()}
        out["cpu"] = sum(out["tree"].values())
        out["user"] = sum(user for user, _ in times.values())  # the rest of "cpu" is the kernel's
        each = [procs.memory_kib(p, missing_ok=True) for p in out["tree"]]
        out["rss"], out["hwm"] = sum(e["VmRSS"] for e in each), sum(e["VmHWM"] for e in each)
        out["rss_each"] = [e["VmRSS"] for e in each]  # the supervisor first, then its workers
    return out


def to_result(backend: str, workload: str, connections: int, path: str, res: dict[str, Any],
              docs_per_trip: int = 1, **extra: Any) -> Result:
    """A Result from merged windows; the mix's reply counts and a workers' CPU split go in extra."""
    if workload in ("mix", "mix-budget"):
        extra.update(kinds=res["kinds"], refused=res["refused"])
    if "user_us" in res:  # the proxy's CPU per round trip in its own code; the rest is the kernel's
        extra["user_us"] = round(res["user_us"], 2)
    if res.get("split") and len(res["split"]) > 1:
        extra["cpu_split"] = [round(x / max(1e-9, sum(res["split"])), 3) for x in res["split"]]
        extra["rss_each_kib"] = res["rss_each"]
    if res["errors"] and res.get("bad_reply"):
        extra["bad_reply"] = res["bad_reply"][:400]
    return Result(
        backend, workload, connections, path,
        throughput=res["throughput"] * docs_per_trip, p50_ms=res["p50_ms"], p99_ms=res["p99_ms"],
        cpu_us=res.get("cpu_us"), proxy_util=res.get("proxy_util"), loadgen_util=res["loadgen_util"],
        rss_kib=res.get("rss_kib"), peak_kib=res.get("peak_kib"), growth_kib=res.get("growth_kib"),
        seconds=res["seconds"], errors=res["errors"], extra=extra)


def log_result(log: Callable[[str], None], r: Result) -> None:
    log(f"  {r.backend:8} {r.workload:11} c={r.connections:<3} {r.path:12} "
        f"{r.throughput:9.0f}/s p50 {r.p50_ms:6.3f} ms p99 {r.p99_ms:6.3f} ms"
        + (f" proxy {r.cpu_us:6.1f} us/rt" if r.cpu_us else "")
        + (f" (user {r.extra['user_us']:.1f})" if r.cpu_us and "user_us" in r.extra else "")
        + (f" refused {r.extra['refused']}" if r.extra.get("refused") else "")
        + (f" ERRORS {r.errors}" if r.errors else ""))


# -- one backend with its relays -------------------------------------------------------------


class Bench:
    """A backend and the relays in front of it."""

    def __init__(self, backend: str, s: Settings, workdir: Path, log: Callable[[str], None]) -> None:
        self.backend = backend
        self.s = s
        self.log = log
        self.children: list[Child] = []
        self.ferret: Any = None
        self.statsd: socket.socket | None = None
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
        config = mix_config(workdir)
        self.relays: dict[str, Child | None] = {"direct": None}
        if procs.haproxy_binary():
            self.relays["haproxy"] = self._own(procs.start_haproxy(self.port, maxconn=self._maxconn()))
        self.relays["relay"] = self._own(procs.start_scalyproxy(BLOG, self.port, relay_only=True))
        self.relays["full"] = self._own(procs.start_scalyproxy(config, self.port))
        if "insert_many" in s.workloads:
            self.schema_off = self._own(procs.start_scalyproxy(schema_off_config(workdir), self.port))
        self.mix_relays: dict[str, Child | None] = {}
        if "mix" in s.workloads:
            self.mix_relays = self._start_mix_peers(config)

    def _maxconn(self) -> int:
        limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]  # HAProxy wants 2 fds per connection
        return min(self.s.idle_connections + 50, (limit - 40) // 2)

    def _start_mix_peers(self, config: Path) -> dict[str, Child | None]:
        """The mix's paths, in MIX_PATHS order: the relays above plus HAProxy with WORKERS threads,
        mongobetween and scalyproxy with WORKERS workers, those that can run here."""
        extra: dict[str, Child | None] = {}
        if procs.haproxy_binary():
            extra["haproxy-2t"] = self._own(procs.start_haproxy(self.port, maxconn=self._maxconn(), threads=WORKERS))
        if self.s.mongobetween:
            self.statsd = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.statsd.bind(("127.0.0.1", 0))
            extra["mongobetween"] = self._own(procs.start_mongobetween(
                self.s.mongobetween, self.port, self.statsd.getsockname()[1]))
        if self.s.workers:
            extra["full-w2"] = self._own(procs.start_scalyproxy(config, self.port, workers=WORKERS))
        every = {**self.relays, **extra}
        return {name: every[name] for name in MIX_PATHS if name in every}

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
        if self.statsd is not None:
            self.statsd.close()

    # -- FerretDB state ----------------------------------------------------------------------

    @property
    def rounds(self) -> int:
        return self.s.rounds if self.ferret is None else 1  # FerretDB: the backend dominates anyway

    def levels(self) -> tuple[int, ...]:
        """Connection counts of workloads 1 and 2 (1 connection: the latency probe, canned only)."""
        return self.s.levels if self.ferret is None else tuple(c for c in self.s.levels if c > 1)

    def mix_levels(self) -> tuple[int, ...]:
        """Connection counts of the mix: 16 and 64 (the quick run's one level)."""
        return tuple(c for c in self.s.levels if c > 1) or self.s.levels

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

    # -- workloads 1-3 and 6: request/response loops ---------------------------------------------

    def loop(self, workload: str, connections: int, paths: list[tuple[str, Child | None]],
             docs_per_trip: int = 1) -> list[Result]:
        """Each path in turn (mirrored in the second round); figures merged over rounds. The mix
        starts each window on FerretDB from the same data (its inserts and deletes change it)."""
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in paths}
        for r in range(self.rounds):
            order = paths if r % 2 == 0 else list(reversed(paths))
            for name, child in order:
                if workload == "mix":
                    self.reset_data()
                rounds[name].append(self._window(workload, connections, name, child))
        out = []
        for name, _ in paths:
            out.append(to_result(self.backend, workload, connections, name, _merge(rounds[name]), docs_per_trip))
            log_result(self.log, out[-1])
        return out

    def _window(self, workload: str, connections: int, name: str, child: Child | None) -> dict[str, Any]:
        window = self.s.window * (1.4 if self.ferret is not None else 1.0) * (2 if workload == "insert_many" else 1)
        target = child.address if child is not None else f"127.0.0.1:{self.port}"
        probe = Probe(target, child.pid if child is not None else None, policy=name in POLICY_PATHS)
        return measure(self.s, workload, connections, probe, window)

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
        "refused": sum(w["refused"] for w in windows),
        "kinds": {k: sum(w["kinds"].get(k, 0) for w in windows) for w in windows for k in w["kinds"]},
        "bad_reply": next((w["bad_reply"] for w in windows if w["bad_reply"]), ""),
        "loadgen_util": max(w["loadgen_util"] for w in windows),
        "load_util": sum(w["load_cpu_s"] for w in windows) / max(1e-9, sum(w["wall"] for w in windows)),
        "throttled": {name: sum(w["throttle"][name]["nr_throttled"] for w in windows)
                      / max(1, sum(w["throttle"][name]["nr_periods"] for w in windows))
                      for name in windows[0]["throttle"]},
    }
    if "cpu_s" in windows[0]:
        cpu = sum(w["cpu_s"] for w in windows)
        res["cpu_us"] = cpu / max(1, trips) * 1e6
        res["user_us"] = sum(w["user_s"] for w in windows) / max(1, trips) * 1e6
        res["proxy_util"] = cpu / seconds if seconds else 0.0
        res["rss_kib"] = windows[0]["rss_kib"]
        res["peak_kib"] = max(w["peak_kib"] for w in windows)
        res["growth_kib"] = res["peak_kib"] - res["rss_kib"]
        width = max(len(w["split"]) for w in windows)
        res["split"] = [sum(w["split"][i] for w in windows if i < len(w["split"])) for i in range(width)]
        res["rss_each"] = windows[0]["rss_each"]
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
    for level in bench.mix_levels() if "mix" in s.workloads else ():
        steps.append((f"mix c={level}", lambda c=level: bench.loop("mix", c, list(bench.mix_relays.items()))))
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


# -- workload 6b: the mix with the proxy as the bottleneck ----------------------------------------


class Scaling:
    """The mix at the highest level with CPU budgets (:mod:`bench.budget`): the canned backend and
    the load generators share ``budget_load`` CPUs; each relay gets ``budget_core`` CPUs per
    worker or thread. One worker against two, HAProxy's one thread against two beside them."""

    def __init__(self, s: Settings, workdir: Path, log: Callable[[str], None], how: str) -> None:
        self.s, self.log, self.how = s, log, how
        self.children: list[Child] = []
        self.groups: list[budget.CpuBudget] = []
        budget.remove_stale()
        try:
            self.load = self._group("load", s.budget_load)
            canned = self._own(procs.start_canned())
            self.load.add(canned.pid)
            self.backend_pid = canned.pid
            config = mix_config(workdir)
            starts: list[tuple[str, int, Callable[[], Child]]] = []
            if procs.haproxy_binary():
                starts += [("haproxy", 1, lambda: procs.start_haproxy(canned.port)),
                           ("haproxy-2t", WORKERS, lambda: procs.start_haproxy(canned.port, threads=WORKERS))]
            starts.append(("full", 1, lambda: procs.start_scalyproxy(config, canned.port)))
            if s.workers:
                starts.append(("full-w2", WORKERS, lambda: procs.start_scalyproxy(config, canned.port, workers=WORKERS)))
            self.paths: list[tuple[str, int, Child, budget.CpuBudget]] = []
            for name, units, start in starts:
                child = self._own(start())
                group = self._group(name, units * s.budget_core)
                group.add(child.pid)
                self.paths.append((name, units, child, group))
        except BaseException:
            self.close()
            raise

    def _own(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def _group(self, name: str, cpus: float) -> budget.CpuBudget:
        group = budget.CpuBudget(name, cpus)
        self.groups.append(group)
        return group

    def run(self) -> list[Result]:
        connections = self.s.levels[-1]
        rounds: dict[str, list[dict[str, Any]]] = {name: [] for name, *_ in self.paths}
        for r in range(self.s.rounds):
            for name, _units, child, group in self.paths if r % 2 == 0 else list(reversed(self.paths)):
                probe = Probe(child.address, child.pid, policy=name in POLICY_PATHS, on_spawn=self._budget_load,
                              load_pids=(self.backend_pid,), budgets={"proxy": group, "load": self.load})
                rounds[name].append(measure(self.s, "mix", connections, probe, self.s.window))
        out = []
        for name, units, _child, group in self.paths:
            res = _merge(rounds[name])
            out.append(to_result("canned", "mix-budget", connections, name, res, budget_cpus=group.cpus,
                                 units=units, load_budget_cpus=self.load.cpus, load_util=res["load_util"],
                                 throttled=res["throttled"], cgroup=self.how))
            log_result(self.log, out[-1])
            self.log(f"      budget {group.cpus:.2f} CPU, used {_fmt_share(res.get('proxy_util'), group.cpus)}; "
                     f"load side {self.load.cpus:.2f} CPU, used {_fmt_share(res['load_util'], self.load.cpus)}")
        return out

    def _budget_load(self, gen: LoadGen) -> None:
        for p in gen.procs:
            self.load.add(p.pid)

    def close(self) -> None:
        for child in reversed(self.children):
            child.stop()
        for group in self.groups:
            group.close()


def _fmt_share(used: float | None, budget: float) -> str:
    return "n/a" if used is None else f"{used:.2f} ({used / budget:.0%})"


def run_scaling(s: Settings, workdir: Path, log: Callable[[str], None], failures: list[str],
                notes: list[str]) -> list[Result]:
    version, how = budget.support()
    if version is None:
        notes.append(f"Workload 6b (the mix with the proxy as the bottleneck) was skipped: {how}. It needs "
                     "root and a writable cgroup cpu controller (v2 cpu.max or v1 cpu.cfs_quota_us).")
        log("note: " + notes[-1])
        return []
    log(f"workload 6b: the mix with CPU budgets ({how}): {s.budget_load} CPU for the load generators and the "
        f"backend, {s.budget_core} CPU per proxy worker or thread")
    try:
        scaling = Scaling(s, workdir, log, how)
    except Exception as exc:
        failures.append(f"workload 6b, setup: {type(exc).__name__}: {str(exc)[:300]}")
        log("FAILED: " + failures[-1])
        return []
    try:
        return scaling.run()
    except Exception as exc:
        failures.append(f"workload 6b: {type(exc).__name__}: {str(exc)[:300]}")
        log("FAILED: " + failures[-1])
        return []
    finally:
        scaling.close()


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="scalyproxy vs HAProxy, mongobetween and direct (see bench/suite.py)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: tiny windows, canned backend only")
    parser.add_argument("--out", type=Path, help="where to write benchmarks.md/.png (and the raw .json) "
                        "(default: docs/ and bench/results/ for a full run, a temporary directory for --quick "
                        "and for a partial run, one with --backends or --workloads)")
    parser.add_argument("--backends", nargs="+", choices=["canned", "ferretdb"], help="default: both (quick: canned)")
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, help="default: all (for partial runs "
                        "while working on one figure; docs/benchmarks.md comes from a full run)")
    parser.add_argument("--loadgen-procs", type=int, default=2, help="load generator processes at 64 connections")
    parser.add_argument("--mongobetween", metavar="PATH", help="a coinbase/mongobetween binary to measure beside "
                        "the others in the mixed workload (default: $SCALY_BENCH_MONGOBETWEEN; without either "
                        "that path is skipped and the report says so)")
    parser.add_argument("--budget-core", type=float, default=0.4, metavar="CPUS",
                        help="workload 6b: CPU budget per proxy worker or HAProxy thread (default 0.4)")
    parser.add_argument("--budget-load", type=float, default=1.0, metavar="CPUS",
                        help="workload 6b: CPU budget of the load generators and the backend together (default 1.0)")
    parser.add_argument("--command", default="scripts/bench", help="the command line to quote in the report")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)  # stop the children in the finally blocks
    fd_limit = raise_fd_limit()
    s = settings(args)
    partial = bool(args.workloads or args.backends)
    out = args.out or (Path(tempfile.mkdtemp(prefix="scaly-bench-")) if s.quick or partial else ROOT / "docs")
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
    if s.idle_connections < 10_000 and not s.quick and "idle" in s.workloads:
        notes.append(f"Workload 5 used {s.idle_connections} connections: the fd limit ({fd_limit}) must hold a "
                     "client and an upstream socket per connection in the proxy.")
    if "mix" in s.workloads and s.mongobetween is None:
        given = args.mongobetween or os.environ.get("SCALY_BENCH_MONGOBETWEEN")
        why = f"{given} is not an executable file" if given else "no binary given"
        notes.append(f"mongobetween: not measured ({why}). Build coinbase/mongobetween from its source "
                     "(`go build`) and pass `--mongobetween PATH` to measure it beside the others.")
        log("note: " + notes[-1])
    elif "mix" in s.workloads:
        notes.append(f"mongobetween: {s.mongobetween} (its defaults: the Go driver's pool, maxPoolSize 100; "
                     "statsd metrics to a loopback UDP socket nobody reads).")
    if "mix" in s.workloads and not s.workers:
        notes.append("full-w2 (`scalyproxy run --workers 2`): not available, `scalyproxy run` has no `--workers` "
                     "option yet (issue 19, section 1); the suite measures it as soon as it has.")
        log("note: " + notes[-1])
    results: list[Result] = []
    failures: list[str] = []
    try:
        for backend in s.backends:
            results += run_backend(backend, s, workdir, log, failures)
            if backend == "canned" and "mix" in s.workloads:
                results += run_scaling(s, workdir, log, failures, notes)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.monotonic() - started
    notes += [f"FAILED (no figures): {f}" for f in failures]
    from bench import report

    command = args.command.strip() + (" --quick" if s.quick and "--quick" not in args.command else "")
    data = {"machine": info, "command": command,
            "quick": s.quick, "elapsed_s": elapsed, "settings": asdict(s), "notes": notes,
            "results": [asdict(r) for r in results]}
    raw = out / "benchmarks.json" if (s.quick or args.out or partial) else ROOT / "bench" / "results" / "benchmarks.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(data, indent=1))
    text = report.markdown(data)
    (out / "benchmarks.md").write_text(text)
    charts = [c for c in (report.chart(data, out / "benchmarks.png"), report.mix_chart(data, out / "benchmarks-mix.png"))
              if c is not None]
    log("")
    log(report.summary(data))
    log(f"wrote {out / 'benchmarks.md'}" + "".join(f", {c}" for c in charts) + f" in {elapsed:.0f} s")
    if failures:
        log(f"{len(failures)} workload(s) failed: see the notes in the report")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
