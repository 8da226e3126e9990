"""The benchmark suite runs end to end (``bench.suite --quick``): a smoke test, never the numbers.

It starts the canned-reply backend, the relays (HAProxy when installed, scalyproxy
relay-only and with the full blog policy) and the load generators, runs every
workload briefly and writes its report. What is checked is that each path carried
traffic, that every reply of the mixed workload passed the load generator's check
(the global query refused where the policy applies, everything else ok), and that the
report has its tables and targets; no figure is compared with any threshold (that
would be a timed test on a shared machine). mongobetween is not given to this run: the
report must say so.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ("find", "insert", "mix", "insert_many", "big", "idle")
KINDS = {"find", "update", "insert", "delete", "aggregate", "count", "refused", "warned"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench.suite", "--quick", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,  # the suite stops its children by PID; they also die with it (PDEATHSIG)
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
    mix_paths = paths | ({"haproxy-2t"} if haproxy else set()) | ({"full-w2"} if data["settings"]["workers"] else set())
    for workload in WORKLOADS:
        rows = {r["path"]: r for r in data["results"] if r["workload"] == workload}
        expected = paths - {"direct"} if workload == "idle" else mix_paths if workload == "mix" else paths
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
    assert "mongobetween" not in {r["path"] for r in data["results"]}
    assert any(note.startswith("mongobetween: not measured") for note in data["notes"])
    if not data["settings"]["workers"]:
        assert any("full-w2" in note and "not available" in note for note in data["notes"])
    schema_off = [r for r in data["results"] if r["path"] == "full-schema-off"]
    assert schema_off and schema_off[0]["throughput"] > 0
    if not haproxy:
        assert any("HAProxy is not installed" in note for note in data["notes"])


def test_mix_replies_were_checked(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """Every kind of the mix was sent on every path; the global query came back refused
    (ScalyGlobalQuery) exactly where the policy applies, and no reply failed its check."""
    _, out = quick_run
    data = json.loads((out / "benchmarks.json").read_text())
    rows = [r for r in data["results"] if r["workload"] in ("mix", "mix-budget")]
    assert rows
    for r in rows:
        kinds = r["extra"]["kinds"]
        assert set(kinds) == KINDS and all(kinds.values()), (r["path"], kinds)
        assert r["errors"] == 0, (r["path"], r["extra"].get("bad_reply"))
        policy = r["path"] in ("full", "full-w2")
        assert r["extra"]["refused"] == (kinds["refused"] if policy else 0), (r["path"], r["extra"])
        if sum(kinds.values()) >= 400:  # enough cycles of the schedule for its shares to show
            assert kinds["find"] > kinds["update"] > kinds["insert"] > kinds["delete"], kinds  # 50 / 15 / 10 / 5
        if r["path"] != "direct":
            assert r["cpu_us"] is not None and r["cpu_us"] > 0, r


def test_mix_with_cpu_budgets(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    """Workload 6b ran with its budgets, or the report says why not."""
    _, out = quick_run
    data = json.loads((out / "benchmarks.json").read_text())
    rows = {r["path"]: r for r in data["results"] if r["workload"] == "mix-budget"}
    if not rows:
        assert any("Workload 6b" in note and "skipped" in note for note in data["notes"]), data["notes"]
        return
    assert "full" in rows and (("full-w2" in rows) == data["settings"]["workers"])
    for r in rows.values():
        assert r["extra"]["budget_cpus"] == pytest.approx(r["extra"]["units"] * data["settings"]["budget_core"])
        assert r["throughput"] > 0 and r["proxy_util"] > 0 and r["extra"]["load_util"] > 0, r


def test_report_has_its_tables(quick_run: tuple[subprocess.CompletedProcess[str], Path]) -> None:
    _, out = quick_run
    text = (out / "benchmarks.md").read_text()
    assert text.startswith("# Benchmarks")
    assert "Quick mode" in text
    assert "Machine: " in text and "CPUs" in text
    for key in ("P1", "P2", "P3", "P4", "P5", "P6", "M1", "M2"):
        assert f"| {key} |" in text, key
    for heading in ("workload 1:", "workload 2:", "workload 3:", "workload 4:", "workload 5:", "workload 6:",
                    "The peers side by side"):
        assert heading in text, heading
    assert "| full |" in text and "| relay |" in text and "| direct |" in text


def test_the_profile_cost_benchmark_runs(tmp_path: Path) -> None:
    """``bench.bench_profile --quick``: both proxies carried both workloads at both levels."""
    figures = tmp_path / "profile.json"
    proc = subprocess.run([sys.executable, "-m", "bench.bench_profile", "--quick", "--json", str(figures)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(figures.read_text())["figures"]
    assert {(f["workload"], f["connections"]) for f in data} == {(w, c) for w in ("find", "insert") for c in (16, 64)}
    assert all(f["off_cpu_us"] > 0 and f["on_cpu_us"] > 0 and f["ratio"] > 0 for f in data)
    assert "worst on/off CPU per round trip" in proc.stdout
