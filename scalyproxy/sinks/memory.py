"""A profile sink in memory, for tests; ``fail`` makes it behave like a sink that is down."""

from __future__ import annotations

import threading

from scalyproxy.evidence.table import ProfileTable
from scalyproxy.sinks import SinkError


class MemorySink:
    def __init__(self, max_shapes: int = 1_000_000) -> None:
        self.description = "memory"
        self.held = ProfileTable(max_shapes)
        self.fail = False  # True: every write raises, as a sink that is down
        self.writes = 0
        self.wrote = threading.Event()

    def write(self, table: ProfileTable) -> int:
        if self.fail:
            raise SinkError("the memory sink is set to fail")
        self.held.merge(table)
        self.writes += 1
        self.wrote.set()
        return len(table) + (1 if table.overflow.count else 0)

    def read(self) -> ProfileTable:
        return self.held.copy()

    def close(self) -> None:
        pass
