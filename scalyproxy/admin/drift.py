"""Drift check: the shard keys the cluster really has versus the ones the YAML declares.

``config.collections`` (read through mongos, see :mod:`scalyproxy.admin.catalogue`)
holds one document per sharded collection. For each declared collection
:func:`compare` reports:

- ``other_key``: sharded on other fields (or in another order) than declared;
- ``hashed_vs_ranged``: same fields, but hashed where ranged was declared or back;
- ``not_sharded``: a shard key is declared but the collection is not sharded;
- ``undeclared_shard_key``: the collection is sharded but the YAML declares no shard key;
- ``collation``: the default collation differs (``defaultCollation``, present
  for a sharded collection that has one): other locale, or a field the YAML
  declares with another value (fields it does not declare are not compared).

:func:`compare` is pure; :class:`DriftChecker` reads the catalogue with
pymongo's asyncio client (no threads), at start and every
``drift_check_interval_s``, logs and exposes the mismatches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from scalyproxy.admin.catalogue import describe, shard_key
from scalyproxy.admin.metrics import Metrics
from scalyproxy.config import CollectionConfig
from scalyproxy.config.model import is_simple_collation
from scalyproxy.logs import log
from scalyproxy.server.proxy import Proxy

DISABLED_POLL_S: Final = 1.0  # how often a disabled check looks whether a reload enabled it
KINDS: Final = ("other_key", "hashed_vs_ranged", "not_sharded", "undeclared_shard_key", "collation")


@dataclass(frozen=True)
class Mismatch:
    namespace: str
    kind: str  # one of KINDS
    declared: str | None  # the declared shard key, e.g. "{author: 1, title: 1}"
    actual: str | None  # the cluster's

    def message(self) -> str:
        ns = self.namespace
        if self.kind == "not_sharded":
            return f"{ns}: the config declares shard key {self.declared} but the collection is not sharded"
        if self.kind == "undeclared_shard_key":
            return f"{ns}: the collection is sharded on {self.actual} but the config declares no shard key"
        if self.kind == "collation":
            return f"{ns}: declared default collation {self.declared}, the cluster has {self.actual}"
        if self.kind == "hashed_vs_ranged":
            return f"{ns}: declared shard key {self.declared}, the cluster has {self.actual} (hashed versus ranged)"
        return f"{ns}: declared shard key {self.declared}, the cluster has {self.actual}"


def _style(direction: Any) -> str:
    return "hashed" if direction == "hashed" else "ranged"


def compare(collections: Mapping[str, CollectionConfig], catalogue: Mapping[str, Mapping[str, Any]]) -> list[Mismatch]:
    """Mismatches between declared collections and ``config.collections`` documents (by ``_id``)."""
    out: list[Mismatch] = []
    for ns in sorted(collections):
        declared_index = collections[ns].shard_key
        doc = catalogue.get(ns)
        actual = shard_key(doc)
        declared = list(declared_index.keys) if declared_index is not None else None
        kind = _kind(declared, actual)
        if kind is not None:
            out.append(Mismatch(ns, kind, describe(declared) if declared else None,
                                describe(actual) if actual else None))
        elif actual is not None and doc is not None and not _same_collation(collections[ns].collation, doc.get("defaultCollation")):
            out.append(Mismatch(ns, "collation", describe_collation(collections[ns].collation),
                                describe_collation(doc.get("defaultCollation"))))
    return out


def describe_collation(collation: Any) -> str:
    if is_simple_collation(collation):
        return "simple"
    return "{" + ", ".join(f"{k}: {_value(v)}" for k, v in collation.items()) + "}"


def _value(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else str(value)


def _same_collation(declared: Any, actual: Any) -> bool:
    """The cluster reports every field of its collation; the fields the YAML declares must agree."""
    if is_simple_collation(declared) or is_simple_collation(actual):
        return is_simple_collation(declared) and is_simple_collation(actual)
    return all(actual.get(k) == v for k, v in declared.items())


def _kind(declared: list[tuple[str, Any]] | None, actual: list[tuple[str, Any]] | None) -> str | None:
    if declared is None:
        return None if actual is None else "undeclared_shard_key"
    if actual is None:
        return "not_sharded"
    if [f for f, _ in declared] != [f for f, _ in actual]:
        return "other_key"
    if [_style(d) for _, d in declared] != [_style(d) for _, d in actual]:
        return "hashed_vs_ranged"
    return None


class DriftError(Exception):
    """The catalogue could not be read."""


class DriftChecker:
    """Reads ``config.collections`` through the upstream and compares it with the config."""

    def __init__(self, proxy: Proxy, metrics: Metrics) -> None:
        self.proxy = proxy
        self.metrics = metrics
        self._client: Any = None
        self._last: frozenset[Mismatch] | None = None

    def _mongo(self) -> Any:
        if self._client is None:
            from pymongo import AsyncMongoClient

            timeout_ms = int(max(self.proxy.config.limits.connect_timeout_s, 1) * 1000)
            self._client = AsyncMongoClient(
                self.proxy.config.upstream,
                appname="scalyproxy-drift-check",
                connectTimeoutMS=timeout_ms,
                serverSelectionTimeoutMS=max(timeout_ms, 5000),
                socketTimeoutMS=30_000,
            )
        return self._client

    async def read_catalogue(self, namespaces: Sequence[str]) -> dict[str, Mapping[str, Any]]:
        try:
            cursor = self._mongo().config.collections.find({"_id": {"$in": list(namespaces)}})
            docs = await cursor.to_list(None)
        except Exception as exc:  # any driver error: the check could not run
            raise DriftError(f"cannot read config.collections through {self._hosts()}: {exc}") from None
        return {d["_id"]: d for d in docs if isinstance(d.get("_id"), str)}

    def _hosts(self) -> str:
        return ", ".join(h.address for h in self.proxy.upstreams.hosts)

    async def check(self) -> list[Mismatch]:
        """Run one check: log and expose what differs. Raises DriftError when it cannot run."""
        collections = self.proxy.config.collections
        try:
            catalogue = await self.read_catalogue(sorted(collections))
        except DriftError as exc:
            self.metrics.drift_checks.labels("error").inc()
            log.error("drift_check_failed", reason=str(exc))
            raise
        found = compare(collections, catalogue)
        self._expose(found)
        self._log(found, len(collections))
        return found

    def _expose(self, found: list[Mismatch]) -> None:
        gauge = self.metrics.drift_mismatches
        gauge.clear()
        for m in found:
            gauge.labels(m.namespace, m.kind).set(1)
        self.metrics.drift_checks.labels("mismatch" if found else "ok").inc()

    def _log(self, found: list[Mismatch], declared: int) -> None:
        """Each mismatch is logged when it appears (again after it was resolved), not every period."""
        current = frozenset(found)
        previous = self._last or frozenset()
        for m in found:
            if self._last is None or m not in previous:
                log.warning("drift_mismatch", namespace=m.namespace, kind=m.kind, declared=m.declared,
                            actual=m.actual, reason=m.message())
        for m in previous - current:
            log.info("drift_resolved", namespace=m.namespace, kind=m.kind)
        if self._last is None or current != previous:
            log.info("drift_check", collections=declared, mismatches=len(found))
        self._last = current

    async def run(self, initial_delay: bool) -> None:
        """Check every ``drift_check_interval_s`` while ``drift_check`` is on (it is hot-reloadable)."""
        if initial_delay:
            await asyncio.sleep(self.proxy.config.drift_check_interval_s)
        while True:
            cfg = self.proxy.config
            if not cfg.drift_check:
                if self._last is not None:  # switched off by a reload: nothing is known any more
                    self.metrics.drift_mismatches.clear()
                    self._last = None
                await asyncio.sleep(DISABLED_POLL_S)
                continue
            try:
                await self.check()
            except DriftError:
                pass  # logged and counted
            await asyncio.sleep(self.proxy.config.drift_check_interval_s)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()
