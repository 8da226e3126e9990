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
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scalyproxy.backend import FerretDB, free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# -- /proc ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # fields 14 and 15 of stat(5)


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) in KiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
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
    nbthread 1
    maxconn {maxconn}
    log stderr format raw local0 emerg
defaults
    mode tcp
    timeout connect 5s
    timeout client 10m
    timeout server 10m
frontend bench
    bind 127.0.0.1:{port}
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


def start_haproxy(upstream_port: int, maxconn: int = 2_000) -> Child:
    binary = haproxy_binary()
    if binary is None:
        raise RuntimeError("haproxy is not installed (scripts/bench installs it with apt-get)")
    workdir = tempfile.mkdtemp(prefix="scaly-bench-haproxy-")
    port = free_port()
    cfg = Path(workdir) / "haproxy.cfg"
    cfg.write_text(HAPROXY_CFG.format(port=port, upstream=upstream_port, maxconn=maxconn))
    proc = _popen([binary, "-db", "-f", str(cfg)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(Path(workdir) / "haproxy.log", "wb"))
    child = Child("haproxy", proc, port, workdir)
    _wait(child)
    return child


def start_scalyproxy(config: Path, upstream_port: int, relay_only: bool = False) -> Child:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="scaly-bench-proxy-")
    args = ["-m", "scalyproxy", "run", "--config", str(config), "--listen", f"127.0.0.1:{port}",
            "--upstream", f"mongodb://127.0.0.1:{upstream_port}"]
    if relay_only:
        args.append("--relay-only")
    proc = _popen(_python(*args), cwd=ROOT, stdin=subprocess.DEVNULL,
                            stdout=open(Path(workdir) / "proxy.log", "wb"), stderr=subprocess.STDOUT)
    child = Child("scalyproxy", proc, port, workdir)
    _wait(child)
    return child


def _wait(child: Child) -> None:
    try:
        wait_for_port("127.0.0.1", child.port, 30, child.proc)  # type: ignore[arg-type]
    except Exception:
        log = _log_tail(child)
        child.stop()
        raise RuntimeError(f"{child.name} did not start: {log}") from None


def _log_tail(child: Child) -> str:
    if not child.workdir:
        return ""
    for name in ("proxy.log", "haproxy.log"):
        path = Path(child.workdir) / name
        if path.exists():
            return path.read_text(errors="replace")[-2000:]
    return ""


# -- load generators ----------------------------------------------------------------------


class LoadGen:
    """``procs`` load generator processes sharing ``connections`` between them."""

    def __init__(self, target: str, workload: str, connections: int, procs: int = 1) -> None:
        procs = max(1, min(procs, connections))
        shares = [connections // procs + (1 if i < connections % procs else 0) for i in range(procs)]
        self.procs = [
            _popen(
                _python("-m", "bench.loadgen", "--target", target, "--workload", workload,
                        "--connections", str(n)),
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
