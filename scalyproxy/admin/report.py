"""The shadow-mode report: what was refused, or would have been, grouped by query shape.

A bounded LRU table keyed by (rule, namespace, appName, shape), with counts and
first/last seen. ``/report`` serves :meth:`ShadowReport.as_json`; ``scalyproxy
report`` prints :func:`format_table` of it. Pure: no I/O.

Shapes carry no document values (see :mod:`scalyproxy.policy.shape`); a finding
without a query shape (an insert's schema violation, read_only, deny_commands)
is grouped under shape ``None``.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MAX_APP_NAME = 128  # appName is client-chosen: keys stay small

Key = tuple[str, str | None, str | None, str | None]  # rule, namespace, appName, shape


@dataclass
class Entry:
    rule: str
    namespace: str | None
    app: str | None
    shape: str | None
    command: str
    code_name: str
    reason: str
    first_seen: float
    last_seen: float
    count: int = 0
    refused: int = 0  # enforced
    warned: int = 0  # rule in warn: would have been refused (or an advisory warning)

    def as_json(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "namespace": self.namespace,
            "app": self.app,
            "shape": self.shape,
            "command": self.command,
            "code_name": self.code_name,
            "reason": self.reason,
            "count": self.count,
            "refused": self.refused,
            "warned": self.warned,
            "first_seen": iso_time(self.first_seen),
            "last_seen": iso_time(self.last_seen),
        }


def iso_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


class ShadowReport:
    """At most ``capacity`` entries; the least recently seen one goes first."""

    def __init__(self, capacity: int = 1000) -> None:
        if capacity < 1:
            raise ValueError("report_size must be at least 1")
        self.capacity = capacity
        self.entries: OrderedDict[Key, Entry] = OrderedDict()
        self.evicted = 0
        self.started = time.time()

    def record(
        self,
        *,
        rule: str,
        namespace: str | None,
        app: str | None,
        shape: str | None,
        command: str,
        code_name: str,
        reason: str,
        enforced: bool,
        now: float | None = None,
    ) -> Entry:
        now = time.time() if now is None else now
        if app is not None and len(app) > MAX_APP_NAME:
            app = app[:MAX_APP_NAME]
        key: Key = (rule, namespace, app, shape)
        entry = self.entries.get(key)
        if entry is None:
            entry = Entry(rule, namespace, app, shape, command, code_name, reason, now, now)
            self.entries[key] = entry
            self._trim()
        else:
            self.entries.move_to_end(key)
            entry.last_seen = now
            entry.command, entry.code_name, entry.reason = command, code_name, reason
        entry.count += 1
        if enforced:
            entry.refused += 1
        else:
            entry.warned += 1
        return entry

    def resize(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("report_size must be at least 1")
        self.capacity = capacity
        self._trim()

    def _trim(self) -> None:
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)
            self.evicted += 1

    def clear(self) -> None:
        self.entries.clear()
        self.evicted = 0

    def as_json(self) -> dict[str, Any]:
        """Entries by count (highest first), plus the table's bounds."""
        rows = sorted(self.entries.values(), key=lambda e: (-e.count, -e.last_seen))
        return {
            "since": iso_time(self.started),
            "capacity": self.capacity,
            "size": len(self.entries),
            "evicted": self.evicted,
            "entries": [e.as_json() for e in rows],
        }


# -- the table `scalyproxy report` prints -------------------------------------------

COLUMNS: tuple[tuple[str, str], ...] = (
    ("count", "COUNT"),
    ("refused", "REFUSED"),
    ("warned", "WARNED"),
    ("rule", "RULE"),
    ("namespace", "NAMESPACE"),
    ("app", "APP"),
    ("command", "COMMAND"),
    ("last_seen", "LAST SEEN"),
    ("shape", "SHAPE"),
)
MAX_CELL = 80


def _cell(value: Any) -> str:
    text = "-" if value is None else str(value)
    return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."


def format_table(report: Mapping[str, Any]) -> str:
    """A plain-text table of a ``/report`` document, one line per entry."""
    entries: Sequence[Mapping[str, Any]] = report.get("entries") or []
    rows = [[_cell(e.get(field)) for field, _ in COLUMNS] for e in entries]
    header = [title for _, title in COLUMNS]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]
    summary = (
        f"{len(entries)} shape(s) since {report.get('since', '?')}"
        f" (table holds {report.get('capacity', '?')}, {report.get('evicted', 0)} evicted)"
    )
    if not entries:
        return f"nothing refused or warned yet: {summary}"
    return "\n".join([*lines, summary])
