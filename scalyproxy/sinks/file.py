"""``profile.sink: file:PATH``: the profile as JSON lines, one per row and flush.

Each write appends the rows of one delta, each line a row as ``/profile`` shows
it plus ``flushed_at``; the overflow row has ``"shape_id": "overflow"``.
Each key sketch (:mod:`scalyproxy.evidence.sketches`) of the delta is one more line,
``{"flushed_at": ..., "sketch": {...}}``; reading unions them. Reading sums every line,
so a file written by several runs (or proxies, each with its own file, concatenated)
reads as their total. The workers of a fleet (``workers: N``) each append their own
deltas to the one file, under an exclusive lock per write, so their lines never
interleave.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

from scalyproxy.evidence.table import OVERFLOW_ID, ProfileTable, Row, iso_time
from scalyproxy.sinks import SinkError


class FileSink:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.description = f"file:{self.path}"

    def write(self, table: ProfileTable) -> int:
        stamp = iso_time(time.time())
        lines = [json.dumps({"flushed_at": stamp, **row.as_json()}, separators=(",", ":")) for row in table]
        if table.overflow.count or table.overflow.latency:
            overflow = table.overflow.as_json()
            overflow["shape_id"] = OVERFLOW_ID
            lines.append(json.dumps({"flushed_at": stamp, **overflow}, separators=(",", ":")))
        lines += [json.dumps({"flushed_at": stamp, "sketch": entry}, separators=(",", ":"))
                  for entry in table.sketches.entries_json()]
        if not lines:
            return 0
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                fcntl.flock(f, fcntl.LOCK_EX)  # the workers of a fleet append to one file
                f.write("\n".join(lines) + "\n")
        except OSError as exc:
            raise SinkError(f"cannot append to {self.path}: {exc}") from None
        return len(lines)

    def read(self) -> ProfileTable:
        return read_lines(self.path)

    def close(self) -> None:
        pass


def read_lines(path: Path, max_shapes: int = 10_000_000) -> ProfileTable:
    """The sum of a JSON-lines profile file; SinkError naming the line when one is not a row."""
    table = ProfileTable(max_shapes, since=time.time())
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                    if isinstance(doc, dict) and "sketch" in doc:
                        table.sketches.merge_entries([doc["sketch"]])
                        continue
                    row = Row.from_json(doc)
                except ValueError as exc:  # json.JSONDecodeError is a ValueError
                    raise SinkError(f"{path}:{number}: not a profile row: {exc}") from None
                table.since = min(table.since, row.first_seen)
                table.merge_rows([row])
    except OSError as exc:
        raise SinkError(f"cannot read {path}: {exc}") from None
    return table
