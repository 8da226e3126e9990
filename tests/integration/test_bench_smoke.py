"""The benchmark suite runs end to end (``bench.suite --quick``): a smoke test, never the numbers.

It starts the canned-reply backend, the relays (HAProxy when installed, scalyproxy
relay-only and with the full blog policy) and the load generators, runs every
workload briefly and writes its report. What is checked is that each path carried
traffic and that the report has its tables and targets; no figure is compared with
any threshold (that would be a timed test on a shared machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ("find", "insert", "insert_many", "big", "idle")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.suite", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,  # the suite stops its children by PID; they also die with it (PDEATHSIG)
    )
    return proc, out


def test_quick_run_completes(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = quick_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Targets (canned backend" in proc.stdout
    assert (out / "benchmarks.md").is_file() and (out / "benchmarks.json").is_file()


def test_every_path_carried_every_workload(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    proc, out = quick_run
    data = json.loads((out / "benchmarks.json").read_text())
    haproxy = "haproxy" in {r["path"] for r in data["results"]}
    paths = {"direct", "relay", "full"} | ({"haproxy"} if haproxy else set())
    for workload in WORKLOADS:
        rows = {r["path"]: r for r in data["results"] if r["workload"] == workload}
        expected = paths - {"direct"} if workload == "idle" else paths
        assert expected <= set(rows), (workload, sorted(rows))
        for path in expected:
            row = rows[path]
            assert row["errors"] == 0, (workload, path, row)
            if workload == "idle":
                assert row["extra"]["open"] == row["connections"], (path, row)
            elif workload == "big":
                assert row["seconds"] > 0, (path, row)
            else:
                assert row["throughput"] > 0, (workload, path, row)
            if path != "direct" and workload in ("find", "insert"):
                assert row["cpu_us"] is not None and row["peak_kib"], (workload, path, row)
    schema_off = [r for r in data["results"] if r["path"] == "full-schema-off"]
    assert schema_off and schema_off[0]["throughput"] > 0
    if not haproxy:
        assert any("HAProxy is not installed" in note for note in data["notes"])


def test_report_has_its_tables(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = quick_run
    text = (out / "benchmarks.md").read_text()
    assert text.startswith("# Benchmarks")
    assert "Quick mode" in text
    assert "Machine: " in text and "CPUs" in text
    for key in ("P1", "P2", "P3", "P4", "P5", "P6"):
        assert f"| {key} |" in text, key
    for heading in ("workload 1:", "workload 2:", "workload 3:", "workload 4:", "workload 5:"):
        assert heading in text, heading
    assert "| full |" in text and "| relay |" in text and "| direct |" in text
