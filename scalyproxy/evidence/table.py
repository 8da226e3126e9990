"""The traffic profile: one row per (namespace, command, shape, appName), bounded, mergeable.

A row counts the commands of one shape from one application: how many, the
verdict each got under the config that was running (``allowed``,
``warned:<rules>``, ``refused:<rule>``: a fleet may run different configs, so
each outcome is counted), the round-trip latency as fixed log-spaced buckets,
and when it was first and last seen. Every figure merges by addition, minimum
or maximum, so two tables (two workers, two proxies, two flushes) merge into
the table of their union: :meth:`ProfileTable.merge`; :meth:`ProfileTable.to_json`
and :meth:`ProfileTable.from_json` lose nothing. Rows are keyed by the shape id
(:mod:`scalyproxy.evidence.skeleton`) and the appName.

At most ``max_shapes`` rows: the commands of any further shape are counted in
one overflow row, which says how many there were but not what they were.

Next to the rows, the value sketches of candidate shard keys
(:mod:`scalyproxy.evidence.sketches`), merged by the sketch library's union;
``from_json`` ignores parts it does not know.

Pure: no I/O.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from scalyproxy.evidence.sketches import SketchTable
from scalyproxy.policy.model import Verdict

_bisect_right = bisect_right
VERSION: Final = 1
MAX_APP_NAME: Final = 128  # appName is client-chosen: keys stay small
OVERFLOW_ID: Final = "overflow"
ALLOWED: Final = "allowed"

# -- latency buckets -----------------------------------------------------------------
#
# Four linear buckets per octave (each at most 25% wider than its start) from 2^-17 s (7.6 us) to
# 2^8 s; bucket i holds [upper(i - 1), upper(i)). Fixed bounds: merging two
# distributions is adding their counts, which MongoDB's $inc does too.

_FIRST_EXPONENT: Final = -16
BUCKETS: Final = 100


def upper_bound(index: int) -> float:
    """The end (seconds, excluded) of bucket ``index``: what percentiles report."""
    exponent, sub = divmod(index, 4)
    return math.ldexp(0.5 + (sub + 1) * 0.125, exponent + _FIRST_EXPONENT)


_ENDS: Final = [upper_bound(i) for i in range(BUCKETS - 1)]


def bucket_of(seconds: float) -> int:
    """The bucket of a latency (below 7.6 us: the first; from 256 s: the last)."""
    return bisect_right(_ENDS, seconds)


def percentile(buckets: Mapping[int, int], q: float) -> float | None:
    """The upper bound (seconds) of the bucket holding the q-quantile; None when empty."""
    total = sum(buckets.values())
    if total == 0:
        return None
    seen = 0
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= q * total:
            return upper_bound(index)
    return upper_bound(max(buckets))


def outcome_of(verdict: Verdict) -> str:
    """``allowed``, ``warned:<rule>[,<rule>...]`` or ``refused:<rule>``."""
    if verdict.refusal is not None:
        return f"refused:{verdict.refusal.rule}"
    if verdict.warnings:
        return "warned:" + ",".join(sorted({w.rule for w in verdict.warnings}))
    return ALLOWED


def iso_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def app_key(app: str | None) -> str | None:
    return app if app is None or len(app) <= MAX_APP_NAME else app[:MAX_APP_NAME]


def shape_hex(shape_id: int) -> str:
    return f"{shape_id:016x}"


# -- rows ----------------------------------------------------------------------------


class Row:
    """The figures of one (shape, appName); ``retired`` once its table was taken for a flush."""

    __slots__ = (
        "shape_id", "app", "namespace", "command", "shape", "count", "allowed", "outcomes",
        "latency", "latency_sum", "first_seen", "last_seen", "retired", "sketch",
    )  # fmt: skip

    def __init__(self, shape_id: int, app: str | None, namespace: str | None, command: str | None,
                 shape: Mapping[str, Any] | None, now: float) -> None:
        self.shape_id = shape_id
        self.app = app
        self.namespace = namespace
        self.command = command
        self.shape = shape  # the skeleton (JSON); None for the overflow row
        self.count = 0
        self.allowed = 0  # the most common outcome has its own counter
        self.outcomes: dict[str, int] = {}  # the others
        self.latency: dict[int, int] = {}  # bucket -> round trips
        self.latency_sum = 0.0
        self.first_seen = now
        self.last_seen = now
        self.retired = False
        self.sketch: list[tuple[str, ...]] | None = None  # an insert's keys to sketch (the recorder's)

    @property
    def key(self) -> tuple[int, str | None]:
        return (self.shape_id, self.app)

    def observe(self, seconds: float) -> None:
        """One round trip of a forwarded command of this row (bucket_of, inlined: once per reply)."""
        index = _bisect_right(_ENDS, seconds)
        latency = self.latency
        latency[index] = latency.get(index, 0) + 1
        self.latency_sum += seconds

    def all_outcomes(self) -> dict[str, int]:
        out = {ALLOWED: self.allowed} if self.allowed else {}
        out.update(self.outcomes)
        return out

    def empty_copy(self, now: float | None = None) -> Row:
        first = self.first_seen if now is None else now
        return Row(self.shape_id, self.app, self.namespace, self.command, self.shape, first)

    def copy(self) -> Row:
        row = self.empty_copy()
        row.merge(self)
        return row

    def merge(self, other: Row) -> None:
        self.count += other.count
        self.allowed += other.allowed
        for key, n in other.outcomes.items():
            self.outcomes[key] = self.outcomes.get(key, 0) + n
        for index, n in other.latency.items():
            self.latency[index] = self.latency.get(index, 0) + n
        self.latency_sum += other.latency_sum
        self.first_seen = min(self.first_seen, other.first_seen)
        self.last_seen = max(self.last_seen, other.last_seen)
        if self.shape is None and other.shape is not None:
            self.namespace, self.command, self.shape = other.namespace, other.command, other.shape

    def as_json(self) -> dict[str, Any]:
        p = {f"p{q}_ms": None if (s := percentile(self.latency, q / 100)) is None else round(s * 1000, 4)
             for q in (50, 95, 99)}
        return {
            "namespace": self.namespace,
            "command": self.command,
            "app": self.app,
            "shape_id": shape_hex(self.shape_id),
            "shape": self.shape,
            "count": self.count,
            "outcomes": self.all_outcomes(),
            "latency": {"count": sum(self.latency.values()), "sum_s": self.latency_sum, **p,
                        "buckets": {str(i): n for i, n in sorted(self.latency.items())}},
            "first_seen": iso_time(self.first_seen),
            "last_seen": iso_time(self.last_seen),
            "first_seen_s": self.first_seen,
            "last_seen_s": self.last_seen,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> Row:
        """A row of :meth:`as_json` (or of a sink); raises ValueError when it is not one."""
        try:
            shape_id = int(doc["shape_id"], 16) if doc.get("shape_id") not in (None, OVERFLOW_ID) else 0
            row = cls(shape_id, _opt_str(doc.get("app")), _opt_str(doc.get("namespace")),
                      _opt_str(doc.get("command")), _shape(doc.get("shape")), float(doc["first_seen_s"]))
            row.last_seen = float(doc["last_seen_s"])
            row.count = int(doc["count"])
            for key, n in dict(doc.get("outcomes") or {}).items():
                if key == ALLOWED:
                    row.allowed += int(n)
                elif int(n):
                    row.outcomes[str(key)] = int(n)
            latency = doc.get("latency") or {}
            for index, n in dict(latency.get("buckets") or {}).items():
                if int(n):
                    row.latency[int(index)] = int(n)
            row.latency_sum = float(latency.get("sum_s", 0.0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a profile row ({type(exc).__name__}: {exc})") from None
        return row


try:  # Row's hot figures updated in C, without a Python frame: RowOps.count and .observe
    from scalyproxy._scan import RowOps

    ROW_OPS: RowOps | None = RowOps(Row, tuple(_ENDS))
except ImportError:  # pragma: no cover - the pure-Python install
    ROW_OPS = None

#: ``Row.observe(row, seconds)``, in C when the extension is built (the hooks' call per reply)
observe_row: Callable[[Row, float], None] = Row.observe if ROW_OPS is None else ROW_OPS.observe


def _opt_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"expected a string, got {type(value).__name__}")


def _shape(value: Any) -> Mapping[str, Any] | None:
    if value is None or isinstance(value, dict):
        return value
    raise ValueError(f"a shape is a JSON object, got {type(value).__name__}")


# -- the table -------------------------------------------------------------------------


class ProfileTable:
    """At most ``max_shapes`` rows, and the overflow row for the rest."""

    def __init__(self, max_shapes: int, since: float | None = None) -> None:
        if max_shapes < 1:
            raise ValueError("max_shapes must be at least 1")
        self.max_shapes = max_shapes
        self.since = time.time() if since is None else since
        self.rows: dict[tuple[int, str | None], Row] = {}
        self.overflow = Row(0, None, None, None, None, self.since)
        self.overflowed_rows = 0  # rows (not commands) that went into the overflow row on merge
        self.sketches = SketchTable()  # value sketches of candidate keys (issue 18), merged by union

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Row]:
        return iter(self.rows.values())

    @property
    def full(self) -> bool:
        return len(self.rows) >= self.max_shapes

    def add(self, row: Row) -> Row:
        """Keep ``row`` (a new key) or, when full, return the overflow row to count into instead."""
        if len(self.rows) >= self.max_shapes:
            return self.overflow
        self.rows[row.key] = row
        return row

    def merge(self, other: ProfileTable) -> int:
        """Add ``other`` into this table (copying its rows); the number of its rows that went
        into the overflow row for lack of room."""
        dropped = 0
        for row in other.rows.values():
            mine = self.rows.get(row.key)
            if mine is not None:
                mine.merge(row)
            elif len(self.rows) < self.max_shapes:
                self.rows[row.key] = row.copy()
            else:
                self.overflow.merge(_anonymous(row))
                dropped += 1
        if other.overflow.count or other.overflow.latency:
            self.overflow.merge(other.overflow)
        self.overflowed_rows += dropped + other.overflowed_rows
        self.since = min(self.since, other.since)
        self.sketches.merge(other.sketches)
        return dropped

    def copy(self) -> ProfileTable:
        out = ProfileTable(self.max_shapes, self.since)
        out.merge(self)
        return out

    def total(self) -> int:
        return sum(r.count for r in self.rows.values()) + self.overflow.count

    def to_json(self) -> dict[str, Any]:
        rows = sorted(self.rows.values(), key=lambda r: (-r.count, r.namespace or "", r.shape_id, r.app or ""))
        overflow = self.overflow.as_json()
        overflow["shape_id"] = OVERFLOW_ID
        return {
            "version": VERSION,
            "since": iso_time(self.since),
            "since_s": self.since,
            "max_shapes": self.max_shapes,
            "size": len(self.rows),
            "commands": self.total(),
            "overflowed_rows": self.overflowed_rows,
            "rows": [r.as_json() for r in rows],
            "overflow": overflow,
            "sketches": self.sketches.to_json(),
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any], max_shapes: int | None = None) -> ProfileTable:
        """A table of :meth:`to_json` (``/profile``); raises ValueError when it is not one."""
        if not isinstance(doc, Mapping) or not isinstance(doc.get("rows"), list):
            raise ValueError("not a scalyproxy profile (no 'rows' list)")
        try:
            capacity = int(doc.get("max_shapes") or 1) if max_shapes is None else max_shapes
            table = cls(max(capacity, len(doc["rows"]), 1), float(doc.get("since_s") or time.time()))
            table.overflowed_rows = int(doc.get("overflowed_rows") or 0)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not a scalyproxy profile ({exc})") from None
        table.merge_rows(Row.from_json(r) for r in doc["rows"])
        if isinstance(doc.get("overflow"), Mapping):
            table.overflow.merge(Row.from_json(doc["overflow"]))
        try:
            table.sketches = SketchTable.from_json(doc.get("sketches"))
        except ValueError as exc:
            raise ValueError(f"not a scalyproxy profile ({exc})") from None
        return table

    def merge_rows(self, rows: Iterable[Row]) -> None:
        """Add rows (from a sink or a file), the overflow row included (shape_id 0, no shape)."""
        for row in rows:
            if row.shape is None and row.shape_id == 0:
                self.overflow.merge(row)
                continue
            mine = self.rows.get(row.key)
            if mine is not None:
                mine.merge(row)
            elif len(self.rows) < self.max_shapes:
                self.rows[row.key] = row
            else:
                self.overflow.merge(_anonymous(row))
                self.overflowed_rows += 1


def _anonymous(row: Row) -> Row:
    """A row's figures without its identity, for the overflow row."""
    out = Row(0, None, None, None, None, row.first_seen)
    out.merge(row)
    out.namespace = out.command = out.shape = None
    return out
