"""The report's figures for the mixed workload (bench.report): the targets M1 and M2 from
results made up here, and the sections that show every path beside the others."""

from __future__ import annotations

from typing import Any

from bench import report


def _row(workload: str, path: str, throughput: float, cpu_us: float | None, connections: int = 64,
         **extra: Any) -> dict[str, Any]:
    return {"backend": "canned", "workload": workload, "connections": connections, "path": path,
            "throughput": throughput, "p50_ms": 1.0, "p99_ms": 2.0, "cpu_us": cpu_us,
            "proxy_util": extra.pop("proxy_util", None), "loadgen_util": 0.3, "rss_kib": 40_000,
            "peak_kib": 41_000, "growth_kib": 1_000, "seconds": 2.5, "errors": 0,
            "extra": {"kinds": {"find": 50}, "refused": 3 if path.startswith("full") else 0, **extra}}


def _budget(path: str, throughput: float, units: int, use: float) -> dict[str, Any]:
    return _row("mix-budget", path, throughput, 40.0, budget_cpus=0.4 * units, units=units, load_budget_cpus=1.0,
                load_util=0.5, throttled={"proxy": 0.9, "load": 0.0}, cgroup="cgroup v1 under /x",
                proxy_util=use * 0.4 * units)


def _data(results: list[dict[str, Any]]) -> dict[str, Any]:
    return {"results": results, "quick": False, "notes": [], "command": "scripts/bench", "elapsed_s": 1.0,
            "settings": {"warmup": 0.5, "window": 2.5, "rounds": 2, "budget_core": 0.4, "budget_load": 1.0},
            "machine": {"nproc": "2", "cpu": "x", "kernel": "k", "python": "3", "uvloop": "u", "haproxy": "h"}}


MIX = [_row("mix", "direct", 30_000, None), _row("mix", "haproxy", 20_000, 15.0),
       _row("mix", "mongobetween", 7_000, 70.0), _row("mix", "full", 16_000, 21.0)]


def _targets(results: list[dict[str, Any]]) -> dict[str, report.Target]:
    return {t.key: t for t in report.targets(_data(results))}


def test_m1_is_the_full_policy_cpu_against_haproxy() -> None:
    m1 = _targets(MIX)["M1"]
    assert m1.ratio == 21.0 / 15.0 and m1.ok is True
    slow = [r if r["path"] != "full" else _row("mix", "full", 16_000, 30.0) for r in MIX]
    assert _targets(slow)["M1"].ok is False


def test_only_the_targets_of_workloads_that_ran() -> None:
    assert set(_targets(MIX)) == {"M1", "M2"}


def test_m2_needs_the_proxy_to_be_the_bottleneck() -> None:
    scaled = MIX + [_budget("full", 8_000, 1, 0.97), _budget("full-w2", 14_000, 2, 0.95)]
    m2 = _targets(scaled)["M2"]
    assert m2.ratio == 14_000 / 8_000 and m2.ok is True
    idle = MIX + [_budget("full", 8_000, 1, 0.55), _budget("full-w2", 14_000, 2, 0.5)]
    assert _targets(idle)["M2"].ok is None  # one worker had CPU to spare: the ratio says nothing
    short = MIX + [_budget("full", 8_000, 1, 0.97), _budget("full-w2", 10_000, 2, 0.95)]
    assert _targets(short)["M2"].ok is False


def test_m2_without_workers_says_so() -> None:
    m2 = _targets(MIX + [_budget("full", 8_000, 1, 0.97)])["M2"]
    assert m2.ratio is None and m2.ok is None and "not available" in m2.measured


def test_the_mix_section_puts_every_peer_side_by_side() -> None:
    text = report.markdown(_data(MIX + [_budget("full", 8_000, 1, 0.97), _budget("full-w2", 14_000, 2, 0.95)]))
    section = text[text.index("## Workload 6"):text.index("## Method")]
    assert "![workload 6](benchmarks-mix.png)" in section
    assert "| mongobetween | 7,000 (0.23) |" in section  # throughput x direct
    assert "| mongobetween | 70.0 (4.67) |" in section  # CPU x HAProxy
    assert "| full-w2 | 0.80 | 14,000 | 1.75 |" in section  # 6b: x one worker
    assert "## Backend: canned" not in text  # no other workload ran


def test_the_mix_section_splits_the_cpu_into_user_and_system() -> None:
    split = [_row("mix", "direct", 30_000, None), _row("mix", "haproxy", 20_000, 15.0, user_us=1.5),
             _row("mix", "full", 16_000, 21.0, user_us=8.25)]
    text = report.markdown(_data(split))
    section = text[text.index("## Workload 6"):text.index("## Method")]
    assert "| haproxy | 1.5 / 13.5 |" in section
    assert "| full | 8.2 / 12.8 |" in section or "| full | 8.3 / 12.8 |" in section
    old = report.markdown(_data(MIX))  # results of a run before the split was measured: no table
    assert "user / system" not in old[old.index("## Workload 6"):old.index("## Method")]
