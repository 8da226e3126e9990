"""JSON log lines, one per event, to stderr.

Every line has ``ts`` (ISO 8601, UTC), ``level`` and ``event``; the other fields
are the event's. Document values never appear unless the caller put them there
(the policy logs query *shapes*, with values replaced by their type names).
"""

from __future__ import annotations

import json
import sys
import time
from typing import IO, Any

LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40}


class JsonLogger:
    """A minimal structured logger: ``log.info("event", key=value, ...)``."""

    def __init__(self, level: str = "info", stream: IO[str] | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.threshold = LEVELS.get(level, 20)
        self.context: dict[str, Any] = {}  # fields of every line (a fleet's worker: its index)

    def set_level(self, level: str) -> None:
        self.threshold = LEVELS.get(level, 20)

    def enabled(self, level: str) -> bool:
        return LEVELS[level] >= self.threshold

    def emit(self, level: str, event: str, fields: dict[str, Any]) -> None:
        if LEVELS[level] < self.threshold:
            return
        now = time.time()
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        record = {"ts": ts, "level": level, "event": event, **self.context, **fields}
        try:
            self.stream.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # stderr closed: logging must never take the proxy down
            pass

    def debug(self, event: str, **fields: Any) -> None:
        self.emit("debug", event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self.emit("info", event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.emit("warning", event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self.emit("error", event, fields)


log = JsonLogger()


def refuse_start(message: str) -> int:
    """A start that cannot go on: logged (``start_refused``), said on stderr; exit status 1."""
    log.error("start_refused", reason=message)
    print(f"scalyproxy: {message}", file=sys.stderr)
    return 1
