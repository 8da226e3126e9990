"""YAML text -> :class:`ProxyConfig`, or a :class:`ConfigError` listing every problem."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from scalyproxy.config.collation import read_collation
from scalyproxy.config.errors import ConfigError
from scalyproxy.config.model import (
    LOG_LEVELS,
    MODES,
    RULE_NAMES,
    TARGETING_MODES,
    UNKNOWN_NAMESPACE_MODES,
    CollectionConfig,
    HostPort,
    IndexConfig,
    IndexDirection,
    Limits,
    Mode,
    PolicyConfig,
    ProfileConfig,
    ProxyConfig,
    RulesConfig,
    TlsConfig,
)
from scalyproxy.config.nodes import (
    INVALID,
    Invalid,
    Issues,
    compose,
    join,
    kind_of,
    mapping,
    read_bool,
    read_choice,
    read_number,
    read_sequence,
    read_str,
    scalar_value,
    unknown_keys,
)
from scalyproxy.config.structure import StructureBuilder

Entries = dict[str, tuple[yaml.Node, yaml.Node]]

TOP_KEYS = (
    "listen",
    "workers",
    "upstream",
    "tls",
    "limits",
    "admin_listen",
    "log_level",
    "log_values",
    "log_repeats_s",
    "read_only",
    "report_size",
    "drift_check",
    "drift_check_interval_s",
    "policy",
    "profile",
    "collections",
)
POLICY_KEYS = ("allow_marker", "unknown_namespaces", "targeting", "rules", "deny_commands")
COLLECTION_KEYS = ("model", "structure", "required", "additional_fields", "rules", "indexes", "collation")
INDEX_KEYS = ("fields", "shard_key", "unique", "sparse", "name")
TLS_KEYS = ("cert_file", "key_file", "ca_file")
PROFILE_KEYS = ("enabled", "max_shapes", "sink", "flush_interval_s", "salt", "sample_rate", "sketch_keys",
                "candidates")
_INT_LIMITS = {"max_connections": (1.0, None), "max_message_size": (1024.0, 2_147_483_647.0)}
_FLOAT_LIMITS = {
    "idle_timeout_s": 0.001,
    "message_read_timeout_s": 0.001,
    "connect_timeout_s": 0.001,
    "upstream_timeout_s": 0.0,
}
_DIRECTIONS: dict[object, IndexDirection] = {
    1: 1,
    -1: -1,
    "hashed": "hashed",
    "text": "text",
    "2d": "2d",
    "2dsphere": "2dsphere",
}


MAX_WORKERS = 256
MAX_LOG_REPEATS_S = 3600.0  # pending repeats wait that long at most for their summary line


def usable_cores() -> int:
    """``workers: auto``: the CPUs this process may run on (its affinity mask, which a
    container's cpuset narrows), not every CPU of the machine."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def workers_of(value: object) -> int | None:
    """The worker count ``workers: N|auto`` asks for (config or ``--workers``); None when it is
    neither ``auto`` nor an integer from 1 to MAX_WORKERS."""
    if value == "auto":
        return usable_cores()
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS:
        return value
    return None


def parse_workers(text: str) -> int:
    """``--workers N|auto``; ValueError naming the fix."""
    workers = workers_of(int(text) if text.isdigit() else text)
    if workers is not None:
        return workers
    raise ValueError(f"--workers: bad value {text!r} (an integer from 1 to {MAX_WORKERS}, or auto)")


def load_snapshot(text: str, path: str | os.PathLike[str]) -> ProxyConfig:
    """The config of ``path`` from its text as read earlier (a fleet's workers all load the
    very text their supervisor validated, whatever the file says by then)."""
    source = os.fspath(path)
    return _load(text, source, Path(source).resolve().parent)


def load_config(path: str | os.PathLike[str]) -> ProxyConfig:
    """Read, validate and return the config at ``path``; raise ConfigError with every problem."""
    return load_config_and_text(path)[0]


def load_config_and_text(path: str | os.PathLike[str]) -> tuple[ProxyConfig, str]:
    """:func:`load_config`, and the text it was read from."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([_issue(None, "", f"cannot read the config file: {exc}")], source) from None
    return _load(text, source, Path(source).resolve().parent), text


def load_config_text(text: str, source: str = "<string>") -> ProxyConfig:
    """Validate YAML text; ``source`` names it in error messages."""
    return _load(text, source, None)


def _issue(line: int | None, path: str, message: str) -> Any:
    from scalyproxy.config.errors import ConfigIssue

    return ConfigIssue(line, path, message)


def _load(text: str, source: str, base_dir: Path | None) -> ProxyConfig:
    issues = Issues()
    root = compose(text, issues)
    cfg = ProxyConfig()
    if root is not None:
        cfg = _Reader(issues, base_dir).top(root)
    if issues.items:
        raise ConfigError(issues.items, source)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return replace(cfg, source_path=None if base_dir is None else source, source_hash=digest)


class _Reader:
    def __init__(self, issues: Issues, base_dir: Path | None) -> None:
        self.issues = issues
        self.base_dir = base_dir

    # -- top level ------------------------------------------------------------

    def top(self, node: yaml.Node) -> ProxyConfig:
        entries = mapping(node, "", self.issues, "a mapping of settings")
        if entries is None:
            return ProxyConfig()
        unknown_keys(entries, TOP_KEYS, "", self.issues)
        values: dict[str, Any] = {}
        for key in ("listen", "admin_listen"):
            if key in entries:
                values[key] = self.host_port(entries[key][1], key)
        if "upstream" in entries:
            values["upstream"] = self.upstream(entries["upstream"][1])
        if "tls" in entries:
            values["tls"] = self.tls(entries["tls"][1])
        if "limits" in entries:
            values["limits"] = self.limits(entries["limits"][1])
        self._simple(entries, values)
        policy = self.policy(entries["policy"][1]) if "policy" in entries else PolicyConfig()
        values["policy"] = policy
        if "profile" in entries:
            values["profile"] = self.profile(entries["profile"][1])
        if "collections" in entries:
            values["collections"] = self.collections(entries["collections"][1], policy.rules)
        return ProxyConfig(**{k: v for k, v in values.items() if v is not INVALID})

    def _simple(self, entries: Entries, values: dict[str, Any]) -> None:
        issues = self.issues
        for key in ("log_values", "read_only"):
            if key in entries:
                values[key] = read_bool(entries[key][1], key, issues)
        if "log_level" in entries:
            values["log_level"] = read_choice(entries["log_level"][1], "log_level", issues, LOG_LEVELS)
        if "log_repeats_s" in entries:
            node = entries["log_repeats_s"][1]
            values["log_repeats_s"] = _float(read_number(node, "log_repeats_s", issues, integer=False,
                                                         minimum=0.0, maximum=MAX_LOG_REPEATS_S))
        if "report_size" in entries:
            values["report_size"] = _int(read_number(entries["report_size"][1], "report_size", issues, integer=True, minimum=1))
        if "drift_check_interval_s" in entries:
            node = entries["drift_check_interval_s"][1]
            values["drift_check_interval_s"] = read_number(node, "drift_check_interval_s", issues, integer=False, minimum=0.001)
        if "drift_check" in entries:
            values["drift_check"] = self.drift_check(entries["drift_check"][1])
        if "workers" in entries:
            values["workers"] = self.workers(entries["workers"][1])

    def workers(self, node: yaml.Node) -> int | Invalid:
        workers = workers_of(scalar_value(node) if isinstance(node, yaml.ScalarNode) else None)
        if workers is not None:
            return workers
        self.issues.add(node, "workers", f"bad value {kind_of(node)} (an integer from 1 to {MAX_WORKERS}, or auto)")
        return INVALID

    def drift_check(self, node: yaml.Node) -> bool | str | Invalid:
        value = scalar_value(node) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, bool) or value == "strict":
            return value
        self.issues.add(node, "drift_check", f"bad value {kind_of(node)} (one of: true | false | strict)")
        return INVALID

    def host_port(self, node: yaml.Node, path: str) -> HostPort | Invalid:
        text = read_str(node, path, self.issues, "write HOST:PORT, e.g. 127.0.0.1:27017")
        if isinstance(text, Invalid):
            return INVALID
        try:
            return HostPort.parse(text)
        except ValueError as exc:
            self.issues.add(node, path, str(exc))
            return INVALID

    def upstream(self, node: yaml.Node) -> str | Invalid:
        text = read_str(node, "upstream", self.issues, "a mongodb:// URI")
        if isinstance(text, Invalid):
            return INVALID
        problem = upstream_problem(text)
        if problem:
            self.issues.add(node, "upstream", problem)
            return INVALID
        return text

    def tls(self, node: yaml.Node) -> TlsConfig | Invalid:
        entries = mapping(node, "tls", self.issues)
        if entries is None:
            return INVALID
        unknown_keys(entries, TLS_KEYS, "tls", self.issues)
        files: dict[str, str | None] = {"ca_file": None}
        for key in TLS_KEYS:
            if key not in entries:
                if key != "ca_file":
                    self.issues.add(node, join("tls", key), "missing (the listener needs a certificate and a key)")
                continue
            text = read_str(entries[key][1], join("tls", key), self.issues, "a file path")
            if not isinstance(text, Invalid):
                files[key] = self._file(text, entries[key][1], join("tls", key))
        if files.get("cert_file") is None or files.get("key_file") is None:
            return INVALID
        return TlsConfig(str(files["cert_file"]), str(files["key_file"]), files["ca_file"])

    def _file(self, text: str, node: yaml.Node, path: str) -> str:
        """Relative paths are relative to the config file's folder (when loaded from a file)."""
        if self.base_dir is None:
            return text
        full = Path(text) if Path(text).is_absolute() else self.base_dir / text
        if not full.is_file():
            self.issues.add(node, path, f"file not found: {full}")
        return str(full)

    def limits(self, node: yaml.Node) -> Limits | Invalid:
        entries = mapping(node, "limits", self.issues)
        if entries is None:
            return INVALID
        unknown_keys(entries, (*_INT_LIMITS, *_FLOAT_LIMITS), "limits", self.issues)
        values: dict[str, Any] = {}
        for key, (low, high) in _INT_LIMITS.items():
            if key in entries:
                path = join("limits", key)
                values[key] = _int(read_number(entries[key][1], path, self.issues, integer=True, minimum=low, maximum=high))
        for key, low in _FLOAT_LIMITS.items():
            if key in entries:
                path = join("limits", key)
                values[key] = read_number(entries[key][1], path, self.issues, integer=False, minimum=low)
        return Limits(**{k: v for k, v in values.items() if v is not INVALID})

    # -- profile --------------------------------------------------------------

    def profile(self, node: yaml.Node) -> ProfileConfig | Invalid:
        entries = mapping(node, "profile", self.issues)
        if entries is None:
            return INVALID
        unknown_keys(entries, PROFILE_KEYS, "profile", self.issues)
        values: dict[str, Any] = {}
        if "enabled" in entries:
            values["enabled"] = read_bool(entries["enabled"][1], "profile.enabled", self.issues)
        if "max_shapes" in entries:
            number = read_number(entries["max_shapes"][1], "profile.max_shapes", self.issues,
                                 integer=True, minimum=1, maximum=10_000_000)
            values["max_shapes"] = _int(number)
        if "flush_interval_s" in entries:
            values["flush_interval_s"] = read_number(entries["flush_interval_s"][1], "profile.flush_interval_s",
                                                     self.issues, integer=False, minimum=0.1)
        if "sink" in entries:
            values["sink"] = self.sink(entries["sink"][1])
        if "salt" in entries:
            values["salt"] = self.salt(entries["salt"][1])
        if "sample_rate" in entries:
            values["sample_rate"] = read_number(entries["sample_rate"][1], "profile.sample_rate", self.issues,
                                                integer=False, minimum=0.0001, maximum=1.0)
        if "sketch_keys" in entries:
            number = read_number(entries["sketch_keys"][1], "profile.sketch_keys", self.issues,
                                 integer=True, minimum=1, maximum=1000)
            values["sketch_keys"] = _int(number)
        if "candidates" in entries:
            values["candidates"] = self.candidates(entries["candidates"][1])
        return ProfileConfig(**{k: v for k, v in values.items() if v is not INVALID})

    def salt(self, node: yaml.Node) -> str | None | Invalid:
        if isinstance(node, yaml.ScalarNode) and scalar_value(node) is None:
            return None
        text = read_str(node, "profile.salt", self.issues, "a per-deployment secret, e.g. 32 random hex digits")
        if isinstance(text, str) and len(text) < 16:
            self.issues.add(node, "profile.salt", "too short: use at least 16 characters (e.g. `openssl rand -hex 16`)")
            return INVALID
        return text

    def candidates(self, node: yaml.Node) -> dict[str, tuple[tuple[str, ...], ...]] | Invalid:
        entries = mapping(node, "profile.candidates", self.issues, "a mapping of db.collection to a list of keys")
        if entries is None:
            return INVALID
        out: dict[str, tuple[tuple[str, ...], ...]] = {}
        for ns, value_node, path in self.namespaced(entries, "profile.candidates"):
            items = read_sequence(value_node, path, self.issues, 'a list of keys ("field" or "a,b")')
            keys: list[tuple[str, ...]] = []
            for i, item in enumerate(items or []):
                text = read_str(item, join(path, i), self.issues, '"field", "a.b" or "a,b" for a compound key')
                if isinstance(text, Invalid):
                    continue
                fields = tuple(f.strip().removesuffix(":hashed") for f in text.split(","))
                if not all(f and not f.startswith("$") for f in fields):
                    self.issues.add(item, join(path, i), f"bad key {text!r}: field paths separated by commas")
                    continue
                keys.append(fields)
            out[ns] = tuple(keys)
        return out

    def namespaced(self, entries: dict[str, tuple[yaml.Node, yaml.Node]],
                   parent: str) -> Iterator[tuple[str, yaml.Node, str]]:
        """The entries keyed by a valid "db.collection" (the others are issues): name, value, path."""
        for ns, (key_node, value_node) in entries.items():
            path = join(parent, ns)
            problem = namespace_problem(ns)
            if problem:
                self.issues.add(key_node, path, problem)
                continue
            yield ns, value_node, path

    def sink(self, node: yaml.Node) -> str | None | Invalid:
        if isinstance(node, yaml.ScalarNode) and scalar_value(node) is None:
            return None
        hint = "file:PATH or mongodb://HOST[:PORT]/DB.COLLECTION"
        text = read_str(node, "profile.sink", self.issues, hint)
        if isinstance(text, Invalid):
            return INVALID
        if text.startswith("file:"):
            path = text[len("file:"):]
            if not path:
                self.issues.add(node, "profile.sink", f"file: needs a path ({hint})")
                return INVALID
            if self.base_dir is not None and not Path(path).is_absolute():
                path = str(self.base_dir / path)
            return "file:" + path
        problem = sink_uri_problem(text)
        if problem:
            self.issues.add(node, "profile.sink", problem)
            return INVALID
        return text

    # -- policy ---------------------------------------------------------------

    def policy(self, node: yaml.Node) -> PolicyConfig:
        entries = mapping(node, "policy", self.issues)
        if entries is None:
            return PolicyConfig()
        unknown_keys(entries, POLICY_KEYS, "policy", self.issues)
        values: dict[str, Any] = {}
        if "allow_marker" in entries:
            marker = read_str(entries["allow_marker"][1], "policy.allow_marker", self.issues)
            if marker == "":
                self.issues.add(entries["allow_marker"][1], "policy.allow_marker", "must not be empty")
                marker = INVALID
            values["allow_marker"] = marker
        for key, choices in (("unknown_namespaces", UNKNOWN_NAMESPACE_MODES), ("targeting", TARGETING_MODES)):
            if key in entries:
                values[key] = read_choice(entries[key][1], join("policy", key), self.issues, choices)
        if "rules" in entries:
            overrides = self.rules(entries["rules"][1], "policy.rules")
            values["rules"] = replace(RulesConfig(), **overrides)
        if "deny_commands" in entries:
            values["deny_commands"] = self.deny_commands(entries["deny_commands"][1])
        return PolicyConfig(**{k: v for k, v in values.items() if v is not INVALID})

    def rules(self, node: yaml.Node, path: str) -> dict[str, Mode]:
        entries = mapping(node, path, self.issues)
        if entries is None:
            return {}
        unknown_keys(entries, RULE_NAMES, path, self.issues)
        out: dict[str, Mode] = {}
        for key in RULE_NAMES:
            if key in entries:
                mode = _mode(entries[key][1], join(path, key), self.issues)
                if not isinstance(mode, Invalid):
                    out[key] = mode  # type: ignore[assignment]
        return out

    def deny_commands(self, node: yaml.Node) -> tuple[str, ...] | Invalid:
        items = read_sequence(node, "policy.deny_commands", self.issues, "a list of command names")
        if items is None:
            return INVALID
        names: list[str] = []
        for i, item in enumerate(items):
            name = read_str(item, join("policy.deny_commands", i), self.issues, "a command name")
            if isinstance(name, str) and name:
                names.append(name)
        return tuple(names)

    # -- collections ----------------------------------------------------------

    def collections(self, node: yaml.Node, base_rules: RulesConfig) -> dict[str, CollectionConfig] | Invalid:
        if isinstance(node, yaml.ScalarNode) and scalar_value(node) is None:
            return {}
        entries = mapping(node, "collections", self.issues, 'a mapping of "db.collection" names')
        if entries is None:
            return INVALID
        out: dict[str, CollectionConfig] = {}
        for ns, value_node, path in self.namespaced(entries, "collections"):
            coll = self.collection(ns, value_node, path, base_rules)
            if coll is not None:
                out[ns] = coll
        return out

    def collection(self, ns: str, node: yaml.Node, path: str, base_rules: RulesConfig) -> CollectionConfig | None:
        entries = mapping(node, path, self.issues)
        if entries is None:
            return None
        unknown_keys(entries, COLLECTION_KEYS, path, self.issues)
        model: str | None = None
        if "model" in entries:
            name = read_str(entries["model"][1], join(path, "model"), self.issues, "a Python class name")
            if isinstance(name, str):
                if name.isidentifier():
                    model = name
                else:
                    self.issues.add(
                        entries["model"][1], join(path, "model"),
                        f"{name!r} is not a Python class name (letters, digits, _; e.g. BlogPost)",
                    )
        additional = False
        if "additional_fields" in entries:
            value = read_bool(entries["additional_fields"][1], join(path, "additional_fields"), self.issues)
            additional = value is True
        builder = StructureBuilder(self.issues, additional)
        if "structure" in entries:
            builder.parse_root(entries["structure"][1], join(path, "structure"))
        if "required" in entries:
            self.required(builder, entries["required"][1], join(path, "required"))
        overrides: dict[str, Mode] = {}
        if "rules" in entries:
            overrides = self.rules(entries["rules"][1], join(path, "rules"))
        indexes: tuple[IndexConfig, ...] = ()
        if "indexes" in entries:
            indexes = self.indexes(entries["indexes"][1], join(path, "indexes"), builder)
        collation = None
        if "collation" in entries:
            read = read_collation(entries["collation"][1], join(path, "collation"), self.issues)
            collation = None if isinstance(read, Invalid) else read
        return CollectionConfig(
            namespace=ns,
            structure=builder.freeze(),
            rules=replace(base_rules, **overrides),
            indexes=indexes,
            rule_overrides=overrides,
            model=model,
            line=key_line(node),
            collation=collation,
        )

    def required(self, builder: StructureBuilder, node: yaml.Node, path: str) -> None:
        items = read_sequence(node, path, self.issues, "a list of field names")
        if items is None:
            return
        if builder.root is None:
            self.issues.add(node, path, "'required' needs a 'structure' to refer to")
            return
        for i, item in enumerate(items):
            name = read_str(item, join(path, i), self.issues, "a field name, dotted for sub-fields")
            if isinstance(name, str):
                builder.require(name, item, join(path, i))

    def indexes(self, node: yaml.Node, path: str, builder: StructureBuilder) -> tuple[IndexConfig, ...]:
        items = read_sequence(node, path, self.issues, "a list of indexes")
        if items is None:
            return ()
        out = [ix for i, item in enumerate(items) if (ix := self.index(item, join(path, i), builder)) is not None]
        # (positions in `out` equal positions in the file unless an index was unreadable)
        for extra in [ix for ix in out if ix.shard_key][1:]:
            self.issues.items.append(
                _issue(extra.line, join(path, out.index(extra)), "two shard keys (at most one index per collection has shard_key: true)")
            )
        return tuple(out)

    def index(self, node: yaml.Node, path: str, builder: StructureBuilder) -> IndexConfig | None:
        entries = mapping(node, path, self.issues, "an index mapping with 'fields'")
        if entries is None:
            return None
        unknown_keys(entries, INDEX_KEYS, path, self.issues)
        if "fields" not in entries:
            self.issues.add(node, join(path, "fields"), "missing (a list of fields, or a mapping field: 1 | -1 | hashed)")
            return None
        keys = self.index_keys(entries["fields"][1], join(path, "fields"))
        flags = {k: read_bool(entries[k][1], join(path, k), self.issues) for k in ("shard_key", "unique", "sparse") if k in entries}
        name = read_str(entries["name"][1], join(path, "name"), self.issues) if "name" in entries else None
        if keys is None:
            return None
        index = IndexConfig(
            keys=keys,
            shard_key=flags.get("shard_key") is True,
            unique=flags.get("unique") is True,
            sparse=flags.get("sparse") is True,
            name=name if isinstance(name, str) else None,
            line=key_line(node),
        )
        self.check_index(index, entries["fields"][1], join(path, "fields"), builder)
        return index

    def index_keys(self, node: yaml.Node, path: str) -> tuple[tuple[str, IndexDirection], ...] | None:
        pairs: list[tuple[str, IndexDirection]] = []
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                name = read_str(item, join(path, i), self.issues, "a field name")
                if isinstance(name, str):
                    pairs.append((name, 1))
        else:
            entries = mapping(node, path, self.issues, "a list of fields or a mapping field: 1 | -1 | hashed")
            if entries is None:
                return None
            for name, (_, value_node) in entries.items():
                value = scalar_value(value_node) if isinstance(value_node, yaml.ScalarNode) else None
                direction = _DIRECTIONS.get(value) if not isinstance(value, bool) else None
                if direction is None:
                    self.issues.add(value_node, join(path, name), f"bad index direction {kind_of(value_node)} (1 | -1 | hashed)")
                    continue
                pairs.append((name, direction))
        return self._index_pairs(pairs, node, path)

    def _index_pairs(
        self, pairs: list[tuple[str, IndexDirection]], node: yaml.Node, path: str
    ) -> tuple[tuple[str, IndexDirection], ...] | None:
        names = [n for n, _ in pairs]
        if not pairs:
            self.issues.add(node, path, "an index needs at least one field")
            return None
        for name in {n for n in names if names.count(n) > 1}:
            self.issues.add(node, path, f"field {name!r} appears twice in the index")
        for name in names:
            if not name or name.startswith("$") or ".." in name or name.startswith(".") or name.endswith("."):
                self.issues.add(node, path, f"bad index field name {name!r}")
        if sum(1 for _, d in pairs if d == "hashed") > 1:
            self.issues.add(node, path, "an index can have at most one hashed field")
        return tuple(pairs)

    def check_index(self, index: IndexConfig, node: yaml.Node, path: str, builder: StructureBuilder) -> None:
        if index.unique and index.hashed:
            self.issues.add(node, path, "a hashed index cannot be unique (drop unique: true)")
        special = [f for f, d in index.keys if d in ("text", "2d", "2dsphere")]
        if index.shard_key:
            if special:
                self.issues.add(node, path, "a shard key cannot use text or geo index fields")
            for name, direction in index.keys:
                if direction == -1:
                    self.issues.add(
                        _value_node(node, name) or node, join(path, name),
                        f"shard-key field {name!r} is descending (-1): MongoDB shards only on "
                        f"ascending or hashed fields (write {name}: 1, or {name}: hashed)",
                    )
            for name in index.fields:
                if builder.root is not None:
                    builder.shard_key_field(name, node, path)
            return
        if builder.root is not None and not builder.root.additional:
            for name in index.fields:
                if not _declared(builder, name):
                    self.issues.add(node, path, f"index field {name!r} is missing from the structure")


def _value_node(node: yaml.Node, key: str) -> yaml.Node | None:
    """The value of ``key`` in a YAML mapping node (for its line), else None."""
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key and isinstance(value_node, yaml.Node):
                return value_node
    return None


def _declared(builder: StructureBuilder, dotted: str) -> bool:
    current = builder.root
    for part in dotted.split("."):
        if current is None:
            return False
        if current.kind == "array":
            current = current.items
        if current is None or current.kind != "object":
            return current is not None and current.kind == "scalar" and ("object" in current.types or "any" in current.types)
        if part == "_id" and current is builder.root:
            return True
        current = current.fields.get(part)
    return current is not None


def _mode(node: yaml.Node, path: str, issues: Issues) -> str | Invalid:
    # YAML 1.1 reads a bare `off` as false: accept it as the mode "off".
    if isinstance(node, yaml.ScalarNode) and scalar_value(node) is False and node.value.lower() == "off":
        return "off"
    return read_choice(node, path, issues, MODES)


def key_line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _int(value: float | Invalid) -> int | Invalid:
    return value if isinstance(value, Invalid) else int(value)


def _float(value: float | Invalid) -> float | Invalid:
    return value if isinstance(value, Invalid) else float(value)


def namespace_problem(ns: str) -> str:
    db, dot, coll = ns.partition(".")
    if not dot or not db or not coll:
        return 'bad namespace (write "<database>.<collection>", e.g. blog.blog_posts)'
    bad = [c for c in '/\\. "$' if c in db]
    if bad:
        return f"bad database name {db!r} (no {' '.join(repr(c) for c in bad)})"
    if "$" in coll or "\x00" in coll:
        return f"bad collection name {coll!r} (no '$')"
    return ""


def sink_uri_problem(uri: str) -> str:
    """Why a profile sink is not ``mongodb://HOST[:PORT][,...]/DB.COLLECTION[?options]`` ("" when it is)."""
    hint = "(file:PATH or mongodb://HOST[:PORT]/DB.COLLECTION)"
    if not uri.startswith("mongodb://"):
        return f"unknown sink {uri[:40]!r} {hint}"
    problem = upstream_problem(uri)
    if problem:
        return problem
    from pymongo.uri_parser import parse_uri

    parsed = parse_uri(uri)
    if not parsed.get("database") or not parsed.get("collection"):
        return f"the sink URI must name a database and a collection after the hosts, e.g. mongodb://h:27017/scaly.profile {hint}"
    return ""


def upstream_problem(uri: str) -> str:
    if not uri.startswith("mongodb://"):
        return "expected a mongodb:// URI listing the mongos hosts (mongodb+srv:// is not supported)"
    from pymongo.errors import ConfigurationError, InvalidURI
    from pymongo.uri_parser import parse_uri

    try:
        parsed = parse_uri(uri)
    except (ConfigurationError, InvalidURI, ValueError) as exc:
        return f"bad MongoDB URI: {exc}"
    if not parsed["nodelist"]:
        return "the URI names no host (mongodb://HOST:PORT[,HOST:PORT...])"
    return ""
