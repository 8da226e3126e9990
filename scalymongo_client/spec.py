"""A Document class compiled for the policy engine: its namespace, config and engine."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from scalyproxy.config import CollectionConfig, ProxyConfig, load_config_text
from scalyproxy.policy import Engine

__all__ = ["DEFAULT_POLICY", "ModelSpec", "compile_entry", "config_text"]

DEFAULT_POLICY: dict[str, Any] = {
    "allow_marker": "scaly:allow-global",
    "unknown_namespaces": "allow",
    "targeting": "full",
    "rules": {
        "global_query": "enforce",
        "shard_key_write": "enforce",
        "schema": "enforce",
        "unindexed_query": "warn",
    },
    "deny_commands": [],
}
"""The ``policy:`` section a Python-declared Document is checked with (the proxy's defaults)."""


@dataclass(frozen=True)
class ModelSpec:
    """What the checks need to know about one model: where it lives and which engine judges it."""

    namespace: str
    config: ProxyConfig
    engine: Engine = field(repr=False, compare=False)

    @property
    def db(self) -> str:
        return self.namespace.partition(".")[0]

    @property
    def collection(self) -> str:
        return self.namespace.partition(".")[2]

    @property
    def marker(self) -> str:
        """The token ``allow_global=True`` adds to a command's comment."""
        return self.config.policy.allow_marker

    @property
    def collection_config(self) -> CollectionConfig:
        return self.config.collections[self.namespace]

    @property
    def shard_key(self) -> tuple[str, ...]:
        """The declared shard-key fields, in order (empty when the collection declares none)."""
        index = self.collection_config.shard_key
        return index.fields if index is not None else ()

    def validate(self, document: Mapping[str, Any]) -> list[str]:
        """The schema messages for ``document`` (empty when it matches the structure)."""
        return list(self.engine.validate_document(self.namespace, document))

    @classmethod
    def from_config(cls, config: ProxyConfig, namespace: str, engine: Engine | None = None) -> ModelSpec:
        """The spec of ``namespace`` in a loaded proxy config (one engine may serve many models)."""
        return cls(namespace, config, engine if engine is not None else Engine.from_config(config))


def config_text(
    collections: Mapping[str, Mapping[str, Any]],
    policy: Mapping[str, Any] | None = None,
    header: Mapping[str, Any] | None = None,
) -> str:
    """A proxy config as YAML: optional top-level settings, the policy, then the collections."""
    doc: dict[str, Any] = dict(header or {})
    doc["policy"] = dict(policy if policy is not None else DEFAULT_POLICY)
    doc["collections"] = {ns: dict(entry) for ns, entry in collections.items()}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, allow_unicode=True)


def compile_entry(namespace: str, entry: Mapping[str, Any], source: str) -> ModelSpec:
    """Compile one collection entry (YAML form) with the default policy; ConfigError if invalid."""
    text = config_text({namespace: entry})
    config = load_config_text(text, source)
    return ModelSpec.from_config(config, namespace)

