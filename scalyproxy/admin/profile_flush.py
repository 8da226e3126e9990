"""Writing the traffic profile to ``profile.sink`` every ``profile.flush_interval_s``.

On the event loop only the O(1) swap happens (:meth:`Recorder.take`: the table
filled since the last flush is frozen and an empty one takes its place); the
write runs in a thread of its own, one at a time, so a sink that is slow or
down never slows the relay. What a failed write could not deliver stays in
``pending`` (bounded: it is a profile table of ``profile.max_shapes`` rows,
the rest folded into its overflow row and counted as dropped) and goes with the
next write. ``/metrics`` counts flushes (ok, failed), rows written, rows
dropped and rows pending; the log says when the sink goes down and comes back.
At shutdown a last flush is tried (bounded by a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from scalyproxy.admin.metrics import Metrics
from scalyproxy.evidence.recorder import Recorder
from scalyproxy.evidence.table import ProfileTable
from scalyproxy.logs import log
from scalyproxy.sinks import Sink

FINAL_FLUSH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class FlushResult:
    ok: bool
    written: int
    dropped: int
    pending: int
    error: str = ""


class ProfileFlusher:
    """Flushes ``recorder`` into ``sink``; :meth:`run` is the periodic task."""

    def __init__(self, recorder: Recorder, sink: Sink, interval_s: float, metrics: Metrics) -> None:
        self.recorder = recorder
        self.sink = sink
        self.interval_s = interval_s
        self.metrics = metrics
        self.pending = ProfileTable(recorder.max_shapes)  # touched by the writer thread only
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="profile-sink")
        self._busy = False
        self._down = False

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.flush()

    async def flush(self) -> FlushResult | None:
        """Take what was recorded and write it with what is pending; None while a write runs."""
        if self._busy:
            return None  # the next tick takes this interval's rows too
        self._busy = True
        try:
            delta = self.recorder.take()
            loop = asyncio.get_running_loop()
            result = await loop.run_in_executor(self._executor, self._write, delta)
        finally:
            self._busy = False
        self._account(result)
        return result

    def _write(self, delta: ProfileTable) -> FlushResult:
        """In the writer thread: ``delta`` is frozen, ``pending`` is this thread's."""
        self.pending.max_shapes = self.recorder.max_shapes
        dropped = self.pending.merge(delta)
        pending = self.pending
        if not len(pending) and not pending.overflow.count and not pending.overflow.latency and not pending.sketches:
            return FlushResult(True, 0, dropped, 0)
        try:
            written = self.sink.write(self.pending)
        except Exception as exc:  # any failure of the sink: keep the rows for the next write
            return FlushResult(False, 0, dropped, len(self.pending), f"{type(exc).__name__}: {exc}")
        self.pending = ProfileTable(self.recorder.max_shapes)
        return FlushResult(True, written, dropped, 0)

    def _account(self, result: FlushResult) -> None:
        m = self.metrics
        m.profile_flushes.labels("ok" if result.ok else "failed").inc()
        if result.written:
            m.profile_rows_written.inc(result.written)
        if result.dropped:
            m.profile_rows_dropped.inc(result.dropped)
        m.profile_pending_rows.set(result.pending)
        if not result.ok and not self._down:
            self._down = True
            log.warning("profile_sink_down", sink=self.sink.description, reason=result.error[:300],
                        pending_rows=result.pending)
        elif result.ok and self._down:
            self._down = False
            log.info("profile_sink_up", sink=self.sink.description, rows_written=result.written)

    async def _last_flush(self) -> FlushResult | None:
        while self._busy:
            await asyncio.sleep(0.05)
        return await self.flush()

    async def close(self, timeout_s: float = FINAL_FLUSH_TIMEOUT_S) -> None:
        """A last flush (after the one running, if any; bounded), then the writer thread goes."""
        try:
            result = await asyncio.wait_for(self._last_flush(), timeout_s)
            if result is not None and not result.ok:
                log.warning("profile_unflushed", sink=self.sink.description, rows=result.pending,
                            reason=result.error[:300])
        except (TimeoutError, asyncio.CancelledError):
            log.warning("profile_unflushed", sink=self.sink.description, reason="the last flush timed out")
        finally:
            self._executor.shutdown(wait=False)
            with contextlib.suppress(Exception):
                self.sink.close()
