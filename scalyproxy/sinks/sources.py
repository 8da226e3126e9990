"""Reading profiles for ``scalyproxy whatif`` (and ``advise``): files, ``/profile``, sinks.

A SOURCE is a file written by the file sink (JSON lines), a saved ``/profile``
answer (one JSON object), an admin address (``http://HOST:PORT``, whose
``/profile`` is fetched) or a MongoDB sink URI. Several sources merge into
one table. Every failure is a :class:`~scalyproxy.sinks.SinkError` naming the
source.
"""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from scalyproxy.admin.report_cli import admin_url, fetch_json
from scalyproxy.evidence.table import ProfileTable
from scalyproxy.sinks import SinkError
from scalyproxy.sinks.file import read_lines

UNBOUNDED = 10_000_000


def fetch_profile(admin: str) -> dict[str, Any]:
    """A running proxy's ``/profile`` document (SinkError when it cannot be had)."""
    try:
        return fetch_json(admin, "/profile", "rows", "profile")
    except (OSError, ValueError, urllib.error.URLError) as exc:
        raise SinkError(f"cannot read {admin_url(admin, '/profile')}: {exc}") from None


def read_source(source: str) -> ProfileTable:
    if source.startswith(("http://", "https://")):
        try:
            return ProfileTable.from_json(fetch_profile(source), UNBOUNDED)
        except ValueError as exc:
            raise SinkError(f"{source}: {exc}") from None
    if source.startswith("mongodb://"):
        from scalyproxy.config.loader import sink_uri_problem
        from scalyproxy.sinks.mongo import MongoSink

        problem = sink_uri_problem(source)
        if problem:
            raise SinkError(f"{source}: {problem}")
        sink = MongoSink(source)
        try:
            return sink.read()
        finally:
            sink.close()
    return _read_file(Path(source[len("file:"):] if source.startswith("file:") else source))


def _read_file(path: Path) -> ProfileTable:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SinkError(f"cannot read {path}: {exc}") from None
    try:
        doc = json.loads(text)
    except ValueError:  # several JSON lines (or not JSON: read_lines names the line)
        doc = None
    if isinstance(doc, dict) and "rows" in doc:  # a saved /profile
        try:
            return ProfileTable.from_json(doc, UNBOUNDED)
        except ValueError as exc:
            raise SinkError(f"{path}: {exc}") from None
    return read_lines(path, UNBOUNDED)


def read_sources(sources: Iterable[str]) -> ProfileTable:
    """The merged profile of several sources."""
    total = ProfileTable(UNBOUNDED)
    first = True
    for source in sources:
        table = read_source(source)
        if first:
            total.since, first = table.since, False
        total.merge(table)
    return total
