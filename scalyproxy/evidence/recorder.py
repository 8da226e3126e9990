"""The relay's one call per command into the profile: :meth:`Recorder.record`.

On the fast path (a targeted find or insert allowed by ``_scan.fast_decide``)
the row is found by the C shape id of the message's bytes (``_scan.shape_hash``)
and the command's appName: two dictionary lookups, no decoding; once the row
exists, :meth:`Recorder.record_allowed` finds and counts it in one C call
(``_scan.RowOps.count``). The skeleton is built in Python only the first time a
shape id is seen (then from a view decoded for that once), or for the commands
the C function leaves to Python (updates, aggregations...: the engine has
decoded them already).

``record`` returns the row; the relay keeps it with the request and hands it to
``round_trip`` when the reply comes, which adds the latency to it.

With ``profile.salt`` set, inserts are sampled for the value sketches of
candidate keys (:mod:`scalyproxy.evidence.sketches`): a row of an insert holds
its namespace's key list (:attr:`Row.sketch`), and one insert in
``1 / profile.sample_rate`` (a counter, no random number) has its documents'
key values hashed into the table's sketches, decoded then if the fast path
did not. The keys are learned once per new shape: the fields its queries fix
by equality (:mod:`scalyproxy.evidence.fields`).

For a sink, :meth:`Recorder.take` swaps the table being filled for an empty one
in O(1) and returns the old one, frozen (its rows are marked retired; a reply
that comes later for one of them is counted in its successor); the recorder
keeps the running total of what it handed out (:meth:`Recorder.snapshot`
merges it with the table being filled, for ``/profile``).

Pure: no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from time import time as _now
from typing import Any, Final

from scalyproxy.evidence.fields import keys_of
from scalyproxy.evidence.skeleton import hash_json, skeleton_of
from scalyproxy.evidence.sketches import KeyTracker
from scalyproxy.evidence.table import ROW_OPS, ProfileTable, Row, app_key, outcome_of
from scalyproxy.logs import log
from scalyproxy.policy.commands import canonical, namespace_of
from scalyproxy.policy.model import CommandLike, Verdict
from scalyproxy.wire.command import command_view
from scalyproxy.wire.documents import pick_fields
from scalyproxy.wire.errors import ProtocolError
from scalyproxy.wire.framer import make_frame

try:
    from scalyproxy._scan import shape_hash
except ImportError:  # pragma: no cover - the pure-Python install: every skeleton is built in Python
    shape_hash = None  # type: ignore[assignment]

_count = ROW_OPS.count if ROW_OPS is not None else None

Data = bytes | bytearray | memoryview
Shape = tuple[dict[str, Any], str | None, str]  # skeleton, namespace, command

MAX_CACHED_SHAPES: Final = 1 << 16
UNKNOWN: Final = -1  # record's shape_id not computed yet (shape ids are unsigned)


def namespace_for(command: str, db: str, body: Mapping[str, Any]) -> str | None:
    """The namespace a row is filed under: the command's, an explain's inner command's,
    a bulkWrite's first; None when it cannot be read one way (wire.ambiguous)."""
    try:
        return _namespace(command, db, body)
    except ProtocolError:
        return None


def _namespace(command: str, db: str, body: Mapping[str, Any]) -> str | None:
    ns = namespace_of(command, db, body)
    if ns is not None:
        return ns
    inner = body.get("explain") if command == "explain" else None
    if isinstance(inner, Mapping) and inner:
        return namespace_of(canonical(next(iter(inner))), db, inner)
    infos = body.get("nsInfo") if command == "bulkWrite" else None
    if isinstance(infos, list) and infos and isinstance(infos[0], Mapping) and isinstance(infos[0].get("ns"), str):
        return str(infos[0]["ns"])
    return None


class Recorder:
    """The profile being recorded, with the total of what was already taken from it."""

    def __init__(self, max_shapes: int, marker: str) -> None:
        self.max_shapes = max_shapes
        self.marker = marker
        self._token = marker.encode()
        self.table = ProfileTable(max_shapes)
        self.taken = ProfileTable(max_shapes, self.table.since)  # the total of the tables taken
        self._apps: dict[str | None, dict[int, Row]] = {}  # appName -> shape id -> row of self.table
        self._shapes: dict[int, Shape] = {}  # shape id -> skeleton (any appName)
        self.mismatches = 0  # C and Python shape ids that disagreed (a bug: logged)
        self.tracker: KeyTracker | None = None  # None: no value sketches (no profile.salt)
        self._every = 1  # sketch one insert in this many
        self.sketch_errors = 0
        self._tick = 0

    def configure(self, max_shapes: int, marker: str) -> None:
        """A reloaded config: the bound applies to new rows, the marker to new commands."""
        self.max_shapes = self.table.max_shapes = self.taken.max_shapes = max_shapes
        if marker != self.marker:
            self.marker, self._token = marker, marker.encode()

    def configure_sketches(self, salt: str | None, sample_rate: float, max_keys: int,
                           configured: Mapping[str, Any]) -> None:
        """Value sketches on (a salt) or off; a new salt starts a new tracker (new maxima)."""
        self._every = max(1, round(1 / sample_rate))
        if salt is None:
            self.tracker = None
            return
        tracker = self.tracker
        if tracker is None or tracker.salt != salt.encode():
            self.tracker = KeyTracker(salt, max_keys, configured)
            return
        tracker.max_keys = max_keys
        for ns, keys in configured.items():
            for key in keys:
                tracker.learn(ns, key)

    # -- the hot path ----------------------------------------------------------------

    def record(self, app: str | None, view: CommandLike | None, verdict: Verdict, data: Data | None,
               shape_id: int | None = UNKNOWN) -> Row:
        """Count one decided command; ``view`` is None on the fast path (``data`` then has it).
        ``shape_id``: ``shape_hash`` of ``data`` when the caller has it (None: Python's to say)."""
        if shape_id == UNKNOWN:
            # the fast path's bytes were scanned by fast_decide; others are scanned by shape_hash
            shape_id = shape_hash(data, self._token, view is None) if shape_hash is not None and data is not None else None
        rows = self._apps.get(app)
        if rows is None:
            rows = self._apps[app] = {}
        row = rows.get(shape_id) if shape_id is not None else None
        if row is None:
            row = self._row(rows, app, shape_id, view, data)
        row.count += 1
        if verdict.refusal is None and not verdict.warnings:
            row.allowed += 1
        else:
            key = outcome_of(verdict)
            row.outcomes[key] = row.outcomes.get(key, 0) + 1
        row.last_seen = _now()
        if row.sketch:  # an insert with keys to sketch
            self._maybe_sketch(row, view, data)
        return row

    def record_allowed(self, app: str | None, verdict: Verdict, data: Data) -> Row:
        """``record(app, None, verdict, data)`` for a command the fast path allowed (``verdict``
        has no refusal and no warning): one C call (``RowOps.count``) when its row exists."""
        if _count is None:
            return self.record(app, None, verdict, data)
        got = _count(self._apps, app, data, self._token)
        if got.__class__ is not Row:  # no row yet (got: its shape id), or Python's shape to say (None)
            return self.record(app, None, verdict, data, got)
        row: Row = got
        if row.sketch:
            self._maybe_sketch(row, None, data)
        return row

    def _maybe_sketch(self, row: Row, view: CommandLike | None, data: Data | None) -> None:
        """One insert in ``1 / sample_rate`` has its keys' values sketched."""
        self._tick += 1
        if self._tick >= self._every:
            self._tick = 0
            try:
                self._sketch(row, view, data)
            except Exception as exc:  # a bug of ours: the row still counts the command
                self.sketch_errors += 1
                if self.sketch_errors in (1, 10, 100) or self.sketch_errors % 1000 == 0:
                    log.error("internal_error", error=f"profile sketches: {exc!r}", count=self.sketch_errors)

    def _sketch(self, row: Row, view: CommandLike | None, data: Data | None) -> None:
        tracker = self.tracker
        if tracker is None or row.namespace is None or row.sketch is None:
            return
        if view is None:
            if data is None:
                return
            view = command_view(make_frame(data))  # no copy: the view reads it in place
        docs = view.body.get("documents")
        if docs is None:
            docs = view.sequences.get("documents", ())
            raw = getattr(docs, "raw", None)  # a kind-1 run's bytes: read only the keys' fields
            names = tracker.top_level(row.sketch)
            if raw is not None and names is not None:
                docs = pick_fields(raw, names)
        tracker.feed(self.table.sketches, row.namespace, row.sketch, docs)

    def _row(self, rows: dict[int, Row], app: str | None, shape_id: int | None,
             view: CommandLike | None, data: Data | None) -> Row:
        if shape_id is not None and self.table.full:
            return self.table.overflow  # no row for it: no need to know its shape
        if view is None:
            assert data is not None
            view = command_view(make_frame(data))  # no copy: the view reads it in place
        shape = self._shape(view, shape_id)
        if shape_id is None:
            shape_id = hash_json(shape[0])
            row = rows.get(shape_id)
            if row is not None:
                return row
        skeleton, namespace, command = shape
        row = self.table.add(Row(shape_id, app_key(app), namespace, command, skeleton, time.time()))
        if row is not self.table.overflow:
            rows[shape_id] = row
            if command == "insert" and namespace is not None and self.tracker is not None:
                row.sketch = self.tracker.keys_for(namespace)
        return row

    def _shape(self, view: CommandLike, shape_id: int | None) -> Shape:
        cached = self._shapes.get(shape_id) if shape_id is not None else None
        if cached is not None:
            return cached
        skeleton = skeleton_of(view.name, view.body, view.sequences, self.marker)
        command = canonical(view.name)
        shape = (skeleton, namespace_for(command, view.db, view.body), command)
        if self.tracker is not None and shape[1] is not None:
            self._learn(shape[1], command, view)
        if shape_id is not None:
            computed = hash_json(skeleton)
            if computed != shape_id:  # the C hasher and the skeleton disagree: a bug of ours
                self.mismatches += 1
                if self.mismatches == 1:
                    log.error("internal_error", error=f"shape id mismatch for {command}: C {shape_id:x}, Python {computed:x}")
            if len(self._shapes) < MAX_CACHED_SHAPES:
                self._shapes[shape_id] = shape
        return shape

    def _learn(self, namespace: str, command: str, view: CommandLike) -> None:
        """The keys a new shape's queries fix by equality become keys to sketch."""
        assert self.tracker is not None
        try:
            keys = keys_of(command, view.body, view.sequences)
        except ProtocolError:  # a doubtful part (wire.ambiguous): nothing learned from it
            return
        for key in keys:
            self.tracker.learn(namespace, key)

    def successor(self, row: Row) -> Row:
        """The row of the table being filled that continues a retired one (a late reply)."""
        if row.shape is None:
            return self.table.overflow
        rows = self._apps.get(row.app)
        if rows is None:
            rows = self._apps[row.app] = {}
        mine = rows.get(row.shape_id)
        if mine is None:
            mine = self.table.add(row.empty_copy(time.time()))
            if mine is not self.table.overflow:
                rows[row.shape_id] = mine
                mine.sketch = row.sketch
        return mine

    # -- flushing ---------------------------------------------------------------------

    def take(self) -> ProfileTable:
        """The table filled since the last take (frozen from now on); an empty one goes on."""
        taken, self.table = self.table, ProfileTable(self.max_shapes)
        self.table.sketches.salt_id = taken.sketches.salt_id
        self._apps = {}
        for row in taken.rows.values():
            row.retired = True
        taken.overflow.retired = True
        self.taken.merge(taken)
        return taken

    def snapshot(self) -> ProfileTable:
        """Everything recorded since start: the tables taken plus the one being filled."""
        out = ProfileTable(len(self.taken) + len(self.table) + 1, self.taken.since)  # room for both
        out.merge(self.taken)
        out.merge(self.table)
        return out

    def document(self, enabled: bool, sink: str | None) -> dict[str, Any]:
        """``GET /profile``'s JSON (a fleet's worker answers its supervisor with the same):
        the snapshot, and whether the profile is on and where it goes (``profile:``)."""
        doc = self.snapshot().to_json()
        doc["enabled"] = enabled
        doc["sink"] = sink
        return doc
