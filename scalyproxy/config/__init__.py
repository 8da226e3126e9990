"""YAML config -> typed, validated config; errors name the file, line and key.

Pure except for reading the file in :func:`load_config`.
"""

from __future__ import annotations

from scalyproxy.config.errors import ConfigError, ConfigIssue
from scalyproxy.config.loader import (
    load_config,
    load_config_and_text,
    load_config_text,
    load_snapshot,
    parse_workers,
)
from scalyproxy.config.model import (
    NUMERIC_TYPES,
    TYPE_NAMES,
    CollectionConfig,
    HostPort,
    IndexConfig,
    Limits,
    Mode,
    PolicyConfig,
    ProfileConfig,
    ProxyConfig,
    RulesConfig,
    TlsConfig,
    TypeSpec,
)

__all__ = [
    "NUMERIC_TYPES",
    "TYPE_NAMES",
    "CollectionConfig",
    "ConfigError",
    "ConfigIssue",
    "HostPort",
    "IndexConfig",
    "Limits",
    "Mode",
    "PolicyConfig",
    "ProfileConfig",
    "ProxyConfig",
    "RulesConfig",
    "TlsConfig",
    "TypeSpec",
    "load_config",
    "load_config_and_text",
    "load_config_text",
    "load_snapshot",
    "parse_workers",
]
