"""CPU budgets of the benchmark (bench.budget): a cgroup with a quota that holds our processes.

Needs root and a writable cgroup cpu controller (skipped otherwise, as the suite skips
workload 6b). Nothing here is timed: it checks where the processes are, not how fast."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from bench import budget

VERSION, HOW = budget.support()
pytestmark = pytest.mark.skipif(VERSION is None, reason=f"no CPU budget here: {HOW}")


def _procs(group: budget.CpuBudget) -> set[int]:
    return {int(p) for p in (group.path / "cgroup.procs").read_text().split()}


def test_a_budget_holds_a_process_and_its_children_then_goes_away() -> None:
    code = "import subprocess, sys, time; c = subprocess.Popen(['sleep', '30']); print(c.pid, flush=True); time.sleep(30)"
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    group = budget.CpuBudget("test", 0.25)
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    try:
        group.add(parent.pid)
        assert _procs(group) == {parent.pid, child}
        quota = (group.path / ("cpu.max" if VERSION == "v2" else "cpu.cfs_quota_us")).read_text().split()[0]
        assert int(quota) == int(0.25 * budget.PERIOD_US)
        assert set(group.throttling()) == {"nr_periods", "nr_throttled"}
    finally:
        group.close()
        os.kill(child, signal.SIGKILL)
        parent.kill()
        parent.wait()
        parent.stdout.close()
    assert not group.path.exists()
    group.close()  # idempotent
