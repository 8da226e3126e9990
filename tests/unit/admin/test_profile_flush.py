"""Flushing the profile to a sink: deltas, a sink that is down, bounded pending rows, metrics;
and the file sink's JSON lines."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from scalyproxy.admin.metrics import Metrics
from scalyproxy.admin.profile_flush import ProfileFlusher
from scalyproxy.evidence.recorder import Recorder
from scalyproxy.evidence.table import ProfileTable, Row
from scalyproxy.sinks import SinkError, open_sink
from scalyproxy.sinks.file import FileSink
from scalyproxy.sinks.memory import MemorySink
from scalyproxy.sinks.sources import read_source


def fill(recorder: Recorder, shapes: range, app: str = "web", times: int = 1) -> None:
    """Rows as the relay would make them (without a command: the table directly)."""
    for shape in shapes:
        for _ in range(times):
            rows = recorder._apps.setdefault(app, {})
            row = rows.get(shape)
            if row is None:
                row = recorder.table.add(Row(shape, app, "d.c", "find", {"find": "c", "n": f"<int#{shape}>"}, 1.0))
                if row is not recorder.table.overflow:
                    rows[shape] = row
            row.count += 1
            row.allowed += 1
            row.observe(0.001)


def samples(metrics: Metrics) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for s in family.samples:
            if s.name.startswith("scalyproxy_profile"):
                out[s.name + "".join(f",{v}" for v in s.labels.values())] = s.value
    return out


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_each_flush_writes_the_delta_and_the_sink_holds_the_sum() -> None:
    recorder, sink, metrics = Recorder(100, "m"), MemorySink(), Metrics()
    flusher = ProfileFlusher(recorder, sink, 60, metrics)

    async def scenario() -> None:
        fill(recorder, range(1, 4), times=2)
        assert (await flusher.flush()).written == 3  # type: ignore[union-attr]
        fill(recorder, range(2, 6))
        assert (await flusher.flush()).written == 4  # type: ignore[union-attr]
        assert (await flusher.flush()).written == 0  # type: ignore[union-attr]
        await flusher.close()

    run(scenario())
    held = {row.shape_id: row.count for row in sink.held}
    assert held == {1: 2, 2: 3, 3: 3, 4: 1, 5: 1}
    assert {r.shape_id: r.count for r in recorder.snapshot()} == held  # /profile sees the same totals
    s = samples(metrics)
    assert s["scalyproxy_profile_flushes_total,ok"] == 4 and s["scalyproxy_profile_rows_written_total"] == 7
    assert s["scalyproxy_profile_flushes_total,failed"] == 0


def test_a_sink_that_is_down_keeps_the_rows_bounded_and_later_writes_them() -> None:
    recorder, sink, metrics = Recorder(3, "m"), MemorySink(), Metrics()
    flusher = ProfileFlusher(recorder, sink, 60, metrics)
    sink.fail = True

    async def scenario() -> None:
        fill(recorder, range(1, 3), times=2)
        assert not (await flusher.flush()).ok  # type: ignore[union-attr]
        fill(recorder, range(2, 6))  # shape 5: no row (3 at most); shape 4: no room left in pending
        result = await flusher.flush()
        assert result is not None and not result.ok and result.pending == 3 and result.dropped == 1
        s = samples(metrics)
        assert s["scalyproxy_profile_flushes_total,failed"] == 2 and s["scalyproxy_profile_pending_rows"] == 3
        assert s["scalyproxy_profile_rows_dropped_total"] == 1
        sink.fail = False
        assert (await flusher.flush()).ok  # type: ignore[union-attr]

    run(scenario())
    counts = {row.shape_id: row.count for row in sink.held}
    assert counts == {1: 2, 2: 3, 3: 1} and sink.held.overflow.count == 2  # every command counted
    assert samples(metrics)["scalyproxy_profile_pending_rows"] == 0


def test_a_slow_sink_never_holds_the_loop() -> None:
    class Slow(MemorySink):
        def write(self, table: ProfileTable) -> int:
            import time

            time.sleep(0.5)
            return super().write(table)

    recorder, sink = Recorder(100, "m"), Slow()
    flusher = ProfileFlusher(recorder, sink, 60, Metrics())

    async def scenario() -> float:
        fill(recorder, range(1, 3))
        loop = asyncio.get_running_loop()
        started = loop.time()
        task = asyncio.create_task(flusher.flush())
        ticks = 0
        while not task.done():
            await asyncio.sleep(0.01)
            ticks += 1
        assert await flusher.flush() is not None  # the write ended: the next one runs
        await flusher.close()
        return ticks / max(loop.time() - started, 1e-9)

    assert run(scenario()) > 20  # the loop kept turning while the thread wrote


def test_the_last_flush_at_shutdown_writes_what_is_left() -> None:
    recorder, sink = Recorder(100, "m"), MemorySink()
    flusher = ProfileFlusher(recorder, sink, 60, Metrics())
    fill(recorder, range(1, 3))
    run(flusher.close())
    assert len(sink.held) == 2


def test_the_file_sink_appends_lines_that_read_back_as_the_sum(tmp_path: Path) -> None:
    path = tmp_path / "profile.jsonl"
    sink = open_sink(f"file:{path}")
    assert isinstance(sink, FileSink)
    recorder = Recorder(2, "m")
    fill(recorder, range(1, 4), times=2)  # the third shape goes to the overflow row
    assert sink.write(recorder.take()) == 3
    fill(recorder, range(1, 2))
    sink.write(recorder.take())
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 4 and {"flushed_at", "shape", "outcomes", "latency"} <= set(lines[0])
    table = read_source(str(path))
    assert {r.shape_id: r.count for r in table} == {1: 3, 2: 2} and table.overflow.count == 2
    assert read_source(f"file:{path}").total() == 7
    (tmp_path / "dir").mkdir()
    try:
        FileSink(tmp_path / "dir").write(table)
    except SinkError as exc:
        assert "cannot append" in str(exc)
    else:
        raise AssertionError("writing into a directory must fail")
