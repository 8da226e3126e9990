"""One declared collection compiled once: shard key, schema, indexes and rule modes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scalyproxy.config.model import CollectionConfig
from scalyproxy.policy.indexes import IndexSet
from scalyproxy.policy.schema import Schema
from scalyproxy.policy.targeting import ShardKey, is_mapping


class CompiledCollection:
    """Fast lookups for one namespace. Modes are "enforce", "warn" or "off"."""

    __slots__ = (
        "namespace",
        "config",
        "shard_key",
        "schema",
        "indexes",
        "global_query",
        "shard_key_write",
        "schema_mode",
        "unindexed_query",
        "pipeline_update",
        "needs_documents",
    )

    def __init__(self, cfg: CollectionConfig, prefix_targeting: bool) -> None:
        self.namespace = cfg.namespace
        self.config = cfg
        key = cfg.shard_key
        self.shard_key = ShardKey(key.keys, prefix_targeting) if key is not None else None
        self.schema = Schema(cfg.structure) if cfg.structure is not None else None
        self.indexes = IndexSet([ix.keys for ix in cfg.indexes])
        rules = cfg.rules
        self.global_query: str = rules.global_query if self.shard_key else "off"
        self.shard_key_write: str = rules.shard_key_write if self.shard_key else "off"
        self.schema_mode: str = rules.schema if self.schema else "off"
        self.unindexed_query: str = rules.unindexed_query
        self.pipeline_update: str = rules.pipeline_update if self.schema else "off"
        #: whether inserted documents must be read at all (else the documents sequence is never touched)
        self.needs_documents = self.schema_mode != "off" or self.shard_key_write != "off"

    def missing_key_fields(self, doc: Any) -> list[str]:
        """Shard-key fields absent from a document, in key order."""
        if self.shard_key is None:
            return []
        if not is_mapping(doc):
            return list(self.shard_key.paths)
        return [p for p in self.shard_key.paths if not has_path(doc, p)]

    def document_errors(self, doc: Any) -> list[str]:
        """Schema messages for a whole document (shard-key presence when no structure is declared)."""
        if self.schema is not None:
            return self.schema.document_errors(doc)
        return [f"{p}: required field missing (shard key)" for p in self.missing_key_fields(doc)]


def has_path(doc: Mapping[str, Any], path: str) -> bool:
    if path in doc:
        return True
    if "." not in path:
        return False
    current: Any = doc
    for part in path.split("."):
        if not is_mapping(current) or part not in current:
            return False
        current = current[part]
    return True


def get_path(doc: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    current: Any = doc
    for part in path.split("."):
        if not is_mapping(current) or part not in current:
            return False, None
        current = current[part]
    return True, current
