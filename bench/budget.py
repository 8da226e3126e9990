"""CPU budgets: a cgroup with a CPU quota that holds some of the benchmark's own processes.

On a machine with two CPUs the load generator, the backend and the proxy share both, so a
proxy that can use more cores (``workers: 2``, HAProxy's ``nbthread 2``) has none to use.
The scaling measurement of the mixed workload therefore gives each side a fixed budget:
the load generator and the backend together get ``load`` CPUs, and the proxy ``core``
CPUs per worker (or thread). One worker is then held to ``core`` CPUs while the load side
has CPU to spare, so the proxy is the bottleneck; two workers get twice that.

cgroup v2 (``cpu.max``) or v1 (``cpu.cfs_quota_us``), whichever this machine mounts with
the cpu controller and lets us write; the groups are created under the root of that
hierarchy, named ``scaly-bench-<pid>-<name>``, and removed (their processes moved back
to the root) when the measurement ends. :func:`support` says why when neither works
(not root, a read-only mount, no cpu controller): the suite then skips the measurement
and says so in the report.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench import procs

PERIOD_US = 10_000  # short periods: a throttled group waits at most a few ms, not 100 ms
V2_ROOT = Path("/sys/fs/cgroup")
V1_ROOTS = (Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup/cpu,cpuacct"))


def _hierarchy() -> tuple[str, Path] | None:
    controllers = V2_ROOT / "cgroup.controllers"
    if controllers.is_file() and "cpu" in controllers.read_text().split():
        return "v2", V2_ROOT
    for root in V1_ROOTS:
        if (root / "cpu.cfs_quota_us").exists():
            return "v1", root
    return None


def support() -> tuple[str | None, str]:
    """("v1" | "v2", how) when budgets can be set here, else (None, why not)."""
    found = _hierarchy()
    if found is None:
        return None, "no cgroup hierarchy with the cpu controller is mounted under /sys/fs/cgroup"
    version, root = found
    try:
        probe = CpuBudget("probe", 1.0)
    except OSError as exc:
        return None, f"cannot create a cgroup with a CPU quota under {root} ({type(exc).__name__}: {exc.strerror})"
    probe.close()
    return version, f"cgroup {version} under {root}"


class CpuBudget:
    """One cgroup limited to ``cpus`` CPUs (quota ``cpus * PERIOD_US`` per ``PERIOD_US``)."""

    def __init__(self, name: str, cpus: float) -> None:
        found = _hierarchy()
        if found is None:
            raise OSError(2, "no cgroup hierarchy with the cpu controller")
        self.version, self.root = found
        self.cpus = cpus
        self.path = self.root / f"scaly-bench-{os.getpid()}-{name}"
        if self.version == "v2":
            _enable_cpu_controller(self.root)
        self.path.mkdir()
        try:
            quota = max(1000, int(cpus * PERIOD_US))
            if self.version == "v2":
                (self.path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            else:
                (self.path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        except OSError:
            self.path.rmdir()
            raise

    def add(self, pid: int) -> None:
        """Move ``pid`` (all its threads) into the group, then the processes below it (those it
        starts from now on are born in the group)."""
        (self.path / "cgroup.procs").write_text(str(pid))
        for p in procs.descendants(pid):
            try:
                (self.path / "cgroup.procs").write_text(str(p))
            except ProcessLookupError:
                pass  # ended meanwhile

    def throttling(self) -> dict[str, int]:
        """``nr_periods`` and ``nr_throttled`` from the group's cpu.stat (both hierarchies)."""
        out = {}
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key in ("nr_periods", "nr_throttled"):
                out[key] = int(value)
        return out

    def close(self) -> None:
        """Move what is left back to the root and remove the group (idempotent)."""
        if not self.path.exists():
            return
        try:
            pids = (self.path / "cgroup.procs").read_text().split()
        except OSError:
            pids = []
        for p in pids:
            try:
                (self.root / "cgroup.procs").write_text(p)
            except OSError:
                pass
        try:
            self.path.rmdir()
        except OSError:
            pass  # a process still on its way out: the empty group is removed with the next run's cleanup


def _enable_cpu_controller(root: Path) -> None:
    control = root / "cgroup.subtree_control"
    if "cpu" not in control.read_text().split():
        control.write_text("+cpu")


def remove_stale() -> None:
    """Remove empty groups left by earlier runs whose suite process is gone."""
    found = _hierarchy()
    if found is None:
        return
    for group in found[1].glob("scaly-bench-*-*"):
        pid = group.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                group.rmdir()
            except OSError:
                pass
