"""Where the traffic profile is kept between restarts and across a fleet: profile sinks.

A sink is anything with ``write(table) -> rows written`` (blocking; raises on
failure), ``read() -> ProfileTable`` and ``close()``. ``write`` receives the
rows added since the last successful write (a delta) and adds them into what
the sink holds, so that every proxy of a fleet, and every run of one proxy,
adds into the same place:

- ``file:PATH``: appends one JSON line per row to the file
  (:class:`~scalyproxy.sinks.file.FileSink`); reading sums the lines;
- ``mongodb://HOST[:PORT]/DB.COLLECTION``: one document per row, counts and
  latency buckets added with ``$inc``, first/last seen with ``$min``/``$max``
  (:class:`~scalyproxy.sinks.mongo.MongoSink`);
- :class:`~scalyproxy.sinks.memory.MemorySink` for tests.

The proxy writes from a thread, never on the event loop: see
:mod:`scalyproxy.admin.profile_flush`. This is the I/O edge of the profile;
:mod:`scalyproxy.evidence` stays pure.
"""

from __future__ import annotations

from typing import Protocol

from scalyproxy.evidence.table import ProfileTable


class SinkError(Exception):
    """A sink could not be written or read (the message says why)."""


class Sink(Protocol):
    description: str

    def write(self, table: ProfileTable) -> int: ...

    def read(self) -> ProfileTable: ...

    def close(self) -> None: ...


def open_sink(uri: str, timeout_s: float = 5.0) -> Sink:
    """The sink a ``profile.sink`` value names (validated by the config loader)."""
    if uri.startswith("file:"):
        from scalyproxy.sinks.file import FileSink

        return FileSink(uri[len("file:"):])
    if uri.startswith("mongodb://"):
        from scalyproxy.sinks.mongo import MongoSink

        return MongoSink(uri, timeout_s)
    raise SinkError(f"unknown profile sink {uri[:60]!r} (file:PATH or mongodb://HOST/DB.COLLECTION)")
