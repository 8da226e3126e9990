"""Reading a live server for ``init-config`` (pymongo, synchronous): the only I/O.

Everything here returns plain data for :mod:`.plan`: the listing of databases
and collections, each collection's indexes and options, the sharding
catalogue where the server has one, and a sample of documents counted on the
fly (documents are not kept).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from scalyproxy.admin.initconfig.infer import DocStats, sample_stats
from scalyproxy.admin.initconfig.plan import SYSTEM_DATABASES

APP_NAME: Final = "scalyproxy-init-config"
_UNSUPPORTED_STAGE: Final = frozenset({238, 40324, 15952})  # NotImplemented, unrecognized stage (two spellings)


class SourceError(Exception):
    """The server could not be read; the message says which and why."""


class BadSource(SourceError):
    """The ``--from`` URI itself is wrong (a usage error)."""


@dataclass(frozen=True)
class Listed:
    """One entry of ``listCollections``."""

    namespace: str
    type: str  # "collection", "view", "timeseries"
    options: Mapping[str, Any]


@dataclass(frozen=True)
class Sampled:
    stats: DocStats | None  # None when the collection could not be read
    method: str  # "$sample" or "find"
    estimated: int | None
    seconds: float
    error: str | None = None


class Cluster:
    """A pymongo client on ``--from``, with the timeouts of the command line."""

    def __init__(self, uri: str, timeout_s: float) -> None:
        import pymongo
        from bson.codec_options import DatetimeConversion
        from pymongo.errors import ConfigurationError, InvalidURI

        self.timeout_s = timeout_s
        self.sample_supported: bool | None = None
        self.sample_refusal = ""
        ms = int(timeout_s * 1000)
        try:
            self.client: Any = pymongo.MongoClient(
                uri, appname=APP_NAME, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms,
                socketTimeoutMS=max(ms, 300_000), document_class=dict,
                datetime_conversion=DatetimeConversion.DATETIME_AUTO,
                unicode_decode_error_handler="replace",
            )
        except (ConfigurationError, InvalidURI, ValueError, TypeError) as exc:
            raise BadSource(f"bad --from URI: {exc}") from None

    def close(self) -> None:
        self.client.close()

    def describe_server(self) -> str:
        """Ping the server (raises SourceError when unreachable) and say what it is."""
        from pymongo.errors import OperationFailure, PyMongoError

        try:
            hello = self.client.admin.command("hello")
            build = self.client.admin.command("buildInfo")
        except OperationFailure as exc:
            raise SourceError(f"the server refused: {_first_line(exc)}") from None
        except PyMongoError as exc:
            hosts = ", ".join(f"{h}:{p}" for h, p in self.client.topology_description.server_descriptions())
            raise SourceError(f"cannot reach {hosts or 'the server'} within {self.timeout_s:g}s: {_first_line(exc)}") from None
        version = build.get("version", "?")
        if "ferretdbVersion" in build:
            return f"FerretDB (answers as MongoDB {version}), not a mongos"
        if hello.get("msg") == "isdbgrid":
            return f"mongos {version}"
        return f"mongod {version}, not a mongos"

    def listing(self) -> list[Listed]:
        """Every collection, view and time-series collection outside admin, config and local."""
        out: list[Listed] = []
        for db in self._databases():
            for info in self.client[db].list_collections():
                out.append(Listed(f"{db}.{info['name']}", str(info.get("type", "collection")), info.get("options") or {}))
        return sorted(out, key=lambda entry: entry.namespace)

    def _databases(self) -> list[str]:
        found = self.client.list_databases(nameOnly=True, authorizedDatabases=True)
        return sorted(d["name"] for d in found if d["name"] not in SYSTEM_DATABASES)

    def indexes(self, ns: str) -> list[Mapping[str, Any]] | str:
        """The ``listIndexes`` documents, or why they could not be read."""
        from pymongo.errors import OperationFailure

        db, _, coll = ns.partition(".")
        try:
            return [dict(ix) for ix in self.client[db][coll].list_indexes()]
        except OperationFailure as exc:
            return _first_line(exc)

    def catalogue(self, namespaces: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        """``config.collections`` entries by namespace; raises SourceError when it cannot be read."""
        from pymongo.errors import PyMongoError

        try:
            docs = list(self.client.config.collections.find({"_id": {"$in": list(namespaces)}}))
        except PyMongoError as exc:
            raise SourceError(_first_line(exc)) from None
        return {d["_id"]: d for d in docs if isinstance(d.get("_id"), str)}

    def sample(self, ns: str, size: int) -> Sampled:
        """Up to ``size`` documents counted: ``$sample``, or the first ones where it is not supported."""
        from bson.errors import InvalidBSON
        from pymongo.errors import OperationFailure

        db, _, name = ns.partition(".")
        coll = self.client[db][name]
        started = time.monotonic()
        estimated = self._estimate(coll)
        try:
            stats, method = self._read(coll, size)
        except (OperationFailure, InvalidBSON) as exc:
            return Sampled(None, "-", estimated, time.monotonic() - started, _first_line(exc))
        return Sampled(stats, method, estimated, time.monotonic() - started)

    def _read(self, coll: Any, size: int) -> tuple[DocStats, str]:
        from pymongo.errors import OperationFailure

        if self.sample_supported is not False:
            try:
                stats = sample_stats(coll.aggregate([{"$sample": {"size": size}}]))
            except OperationFailure as exc:
                if exc.code not in _UNSUPPORTED_STAGE:
                    raise
                self.sample_supported = False
                self.sample_refusal = _first_line(exc)
            else:
                self.sample_supported = True
                return stats, "$sample"
        return sample_stats(coll.find({}, limit=size)), "find"

    @staticmethod
    def _estimate(coll: Any) -> int | None:
        from pymongo.errors import PyMongoError

        try:
            return int(coll.estimated_document_count())
        except PyMongoError:
            return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).split(", full error:")[0].split(", Timeout:")[0].split(" (configured timeouts:")[0]
    return text.splitlines()[0] if text else type(exc).__name__
