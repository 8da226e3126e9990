"""The processes of a benchmark run: backends, relays, load generators, and what
``/proc`` says about them (CPU time, resident memory).

Every process is started here as a child and stopped by its PID.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalyproxy.backend import BackendError, FerretDB, port_of, read_announcement
from scalyproxy.server.main import LISTENING_LINE

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- /proc ------------------------------------------------------------------------------


def cpu_times(pid: int) -> tuple[float, float]:
    """utime and stime of the process (all its threads), in seconds: the CPU spent in the
    process's own code (the interpreter, uvloop, C extensions) and in the kernel on its behalf
    (syscalls: socket reads and writes, epoll, and the TCP work they do on loopback)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return int(fields[11]) / TICK, int(fields[12]) / TICK  # fields 14 and 15 of stat(5)


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    return sum(cpu_times(pid))


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` (a supervisor's workers and theirs), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile
        parents.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def tree_cpu_times(pid: int) -> dict[int, tuple[float, float]]:
    """utime and stime of ``pid`` and of each live process below it, by PID (a process that
    ended since the last sample takes its CPU with it: workers are not expected to die)."""
    out = {}
    for p in [pid, *descendants(pid)]:
        try:
            out[p] = cpu_times(p)
        except OSError:
            pass
    return out


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """utime + stime of ``pid`` and of each live process below it, by PID."""
    return {p: user + system for p, (user, system) in tree_cpu_times(pid).items()}


def memory_kib(pid: int, missing_ok: bool = False) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in KiB (``missing_ok``: zeros for a process that has ended)."""
    out = {"VmRSS": 0, "VmHWM": 0}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in out:
                    out[key] = int(value.split()[0])
    except (FileNotFoundError, ProcessLookupError):
        if not missing_ok:
            raise
    return out


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (``echo 5 > /proc/PID/clear_refs``; needs privileges)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# -- processes ------------------------------------------------------------------------------


@dataclass
class Child:
    """A child process we started, on 127.0.0.1:``port``."""

    name: str
    proc: subprocess.Popen[bytes]
    port: int
    workdir: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the suite dies (no orphans left behind)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _popen(args: list[str], **kwargs: Any) -> subprocess.Popen[bytes]:
    return subprocess.Popen(args, preexec_fn=_die_with_parent, **kwargs)  # noqa: PLW1509


def _python(*args: str) -> list[str]:
    return [sys.executable, *args]


def start_canned() -> Child:
    proc = _popen(_python("-m", "bench.canned"), cwd=ROOT, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().split()
    if len(line) != 2 or line[0] != "listening":
        proc.kill()
        raise RuntimeError(f"the canned server did not start (said {line!r})")
    return Child("canned", proc, int(line[1]))


def start_ferretdb() -> tuple[FerretDB, int]:
    server = FerretDB().start()
    return server, server.port


HAPROXY_CFG = """\
global
    nbthread {threads}
    maxconn {maxconn}
    log stderr format raw local0 emerg
defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
frontend bench
    bind {bind}
    default_backend upstream
backend upstream
    server s1 127.0.0.1:{upstream}
"""


def haproxy_binary() -> str | None:
    """The HAProxy to compare with: ``$SCALY_BENCH_HAPROXY`` ("none": skip it), else the installed one."""
    chosen = os.environ.get("SCALY_BENCH_HAPROXY")
    if chosen is not None:
        return chosen if chosen != "none" and os.access(chosen, os.X_OK) else None
    return shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None)


def start_haproxy(upstream_port: int, maxconn: int = 2_000, threads: int = 1) -> Child:
    """HAProxy on a socket this process binds to 127.0.0.1:0 and hands over (``bind fd@N``):
    HAProxy cannot report a port it picked itself, so it gets one already bound."""
    binary = haproxy_binary()
    if binary is None:
        raise RuntimeError("haproxy is not installed (scripts/bench installs it with apt-get)")
    workdir = tempfile.mkdtemp(prefix="scaly-bench-haproxy-")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        cfg = Path(workdir) / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(bind=f"fd@{sock.fileno()}", upstream=upstream_port, maxconn=maxconn,
                                          threads=threads))
        proc = _popen([binary, "-db", "-f", str(cfg)], stdin=subprocess.DEVNULL, pass_fds=(sock.fileno(),),
                      stdout=subprocess.DEVNULL, stderr=open(Path(workdir) / "haproxy.log", "wb"))
    child = Child("haproxy", proc, port, workdir)
    _wait_accepting(child)
    return child


def scalyproxy_has_workers() -> bool:
    """Whether ``scalyproxy run`` takes ``--workers N`` (issue 19: one process per core)."""
    out = subprocess.run(_python("-m", "scalyproxy", "run", "--help"), cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    return "--workers" in out.stdout


def start_scalyproxy(config: Path, upstream_port: int, relay_only: bool = False, workers: int | None = None) -> Child:
    """``scalyproxy run`` on 127.0.0.1:0; the port is read from the line it prints once bound.
    ``workers``: ``--workers N`` (None: the option is not given, one process)."""
    workdir = tempfile.mkdtemp(prefix="scaly-bench-proxy-")
    log = Path(workdir) / "proxy.log"
    args = ["-m", "scalyproxy", "run", "--config", str(config), "--listen", "127.0.0.1:0",
            "--upstream", f"mongodb://127.0.0.1:{upstream_port}"]
    if relay_only:
        args.append("--relay-only")
    if workers is not None:
        args += ["--workers", str(workers)]
    with open(log, "wb") as out:
        proc = _popen(_python(*args), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    child = Child("scalyproxy", proc, 0, workdir)
    try:
        child.port = port_of(read_announcement(log, LISTENING_LINE, proc, 30)["address"])
    except BackendError as exc:
        child.stop()
        raise RuntimeError(f"scalyproxy did not start: {exc}") from None
    return child


def mongobetween_binary(chosen: str | None) -> str | None:
    """The mongobetween to compare with: ``chosen`` (``--mongobetween PATH``), else
    ``$SCALY_BENCH_MONGOBETWEEN``; None when neither names an executable file."""
    chosen = chosen or os.environ.get("SCALY_BENCH_MONGOBETWEEN")
    return chosen if chosen and os.path.isfile(chosen) and os.access(chosen, os.X_OK) else None


def start_mongobetween(binary: str, upstream_port: int, statsd_port: int) -> Child:
    """coinbase/mongobetween on 127.0.0.1 in front of ``upstream_port``, with its defaults (the Go
    driver's pool: maxPoolSize 100) and its statsd metrics sent to ``statsd_port`` on loopback
    (a UDP socket the suite holds and never reads). It listens on port 0 and does not say
    where: the port is read from the kernel's table of the process's listening sockets."""
    workdir = tempfile.mkdtemp(prefix="scaly-bench-mongobetween-")
    uri = f"mongodb://127.0.0.1:{upstream_port}/?label=bench"
    args = [binary, "-network", "tcp4", "-statsd", f"127.0.0.1:{statsd_port}", f"127.0.0.1:0={uri}"]
    proc = _popen(args, stdin=subprocess.DEVNULL, stdout=open(Path(workdir) / "mongobetween.log", "wb"),
                  stderr=subprocess.STDOUT)
    child = Child("mongobetween", proc, 0, workdir)
    child.port = _listening_port(child)
    return child


def listening_ports(pid: int) -> set[int]:
    """The TCP ports (IPv4) that process ``pid`` listens on, from /proc: its socket inodes
    matched against /proc/net/tcp's LISTEN entries (state 0A)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "0A" and fields[9] in inodes:
            ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def _listening_port(child: Child, timeout: float = 30.0) -> int:
    """The one port the child listens on, once it does (it was told port 0)."""
    deadline = time.monotonic() + timeout
    while True:
        ports = listening_ports(child.pid) if child.proc.poll() is None else set()
        if len(ports) == 1:
            return ports.pop()
        if child.proc.poll() is not None or time.monotonic() > deadline or len(ports) > 1:
            log = _log_tail(child)
            child.stop()
            raise RuntimeError(f"{child.name} did not start (listening on {sorted(ports)}): {log}")
        time.sleep(0.05)


def _wait_accepting(child: Child, timeout: float = 30.0) -> None:
    """Until the child accepts on its port (already bound by us: nothing else can take it)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", child.port), timeout=0.5):
                return
        except OSError:
            if child.proc.poll() is not None or time.monotonic() > deadline:
                log = _log_tail(child)
                child.stop()
                raise RuntimeError(f"{child.name} did not start: {log}") from None
            time.sleep(0.05)


def _log_tail(child: Child) -> str:
    if not child.workdir:
        return ""
    for name in ("proxy.log", "haproxy.log", "mongobetween.log"):
        path = Path(child.workdir) / name
        if path.exists():
            return path.read_text(errors="replace")[-2000:]
    return ""


# -- load generators ----------------------------------------------------------------------


class LoadGen:
    """``procs`` load generator processes sharing ``connections`` between them."""

    def __init__(self, target: str, workload: str, connections: int, procs: int = 1, policy: bool = False) -> None:
        procs = max(1, min(procs, connections))
        shares = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
        self.procs = [
            _popen(
                _python("-m", "bench.loadgen", "--target", target, "--workload", workload,
                        "--connections", str(n), *(["--policy"] if policy else [])),
                cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            for n in shares
        ]

    def _say(self, word: str) -> None:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(word.encode() + b"\n")
            p.stdin.flush()

    def _read(self, p: subprocess.Popen[bytes]) -> str:
        assert p.stdout is not None
        line = p.stdout.readline().decode().strip()
        if not line:
            raise RuntimeError(f"load generator {p.pid} exited (status {p.wait()})")
        return line

    def ready(self) -> None:
        for p in self.procs:
            if (line := self._read(p)) != "ready":
                raise RuntimeError(f"load generator said {line!r}")

    def go(self) -> None:
        self._say("go")

    def mark(self) -> None:
        self._say("mark")

    def stop(self) -> list[dict[str, Any]]:
        self._say("stop")
        results = [json.loads(self._read(p)) for p in self.procs]
        for p in self.procs:
            p.wait(30)
        return results

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def combine(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One figure for several load generators (latency quantiles merged, weighted by count)."""
    seconds = max(r["seconds"] for r in results)
    trips = sum(r["round_trips"] for r in results)
    weighted = sorted(
        (q, r["round_trips"] / len(r["quantiles_ms"])) for r in results for q in r["quantiles_ms"])
    return {
        "round_trips": trips,
        "seconds": seconds,
        "throughput": trips / seconds if seconds else 0.0,
        "p50_ms": percentile(weighted, 0.50),
        "p99_ms": percentile(weighted, 0.99),
        "errors": sum(r["errors"] for r in results),
        "refused": sum(r.get("refused", 0) for r in results),
        "kinds": {k: sum(r.get("kinds", {}).get(k, 0) for r in results) for r in results for k in r.get("kinds", {})},
        "bad_reply": next((r["bad_reply"] for r in results if r.get("bad_reply")), ""),
        "open": sum(r["open"] for r in results),
    }


def percentile(weighted: Sequence[tuple[float, float]], q: float) -> float:
    total = sum(w for _, w in weighted)
    seen = 0.0
    for value, w in weighted:
        seen += w
        if seen >= q * total:
            return value
    return weighted[-1][0] if weighted else 0.0


def settle(seconds: float) -> None:
    time.sleep(seconds)
