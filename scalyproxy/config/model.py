"""The typed, validated config: frozen dataclasses, nothing else.

Everything here is produced by :mod:`scalyproxy.config.loader`; the engine in
:mod:`scalyproxy.policy` compiles it into fast lookups.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["enforce", "warn", "off"]
UnknownNamespaces = Literal["allow", "warn", "deny"]
Targeting = Literal["full", "prefix"]
IndexDirection = Literal[1, -1, "hashed", "text", "2d", "2dsphere"]

MODES: tuple[Mode, ...] = ("enforce", "warn", "off")
UNKNOWN_NAMESPACE_MODES: tuple[UnknownNamespaces, ...] = ("allow", "warn", "deny")
TARGETING_MODES: tuple[Targeting, ...] = ("full", "prefix")
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")

#: The MongoDB ``$type`` aliases a structure may name, plus ``number`` and ``any``.
BSON_TYPE_NAMES: tuple[str, ...] = (
    "double",
    "string",
    "object",
    "array",
    "binData",
    "objectId",
    "bool",
    "date",
    "null",
    "regex",
    "javascript",
    "int",
    "timestamp",
    "long",
    "decimal",
    "minKey",
    "maxKey",
)
TYPE_NAMES: tuple[str, ...] = (*BSON_TYPE_NAMES, "number", "any")
NUMERIC_TYPES: frozenset[str] = frozenset({"int", "long", "double", "decimal"})


#: The fields of a collation document and what each accepts (docs: "Collation Document").
COLLATION_FIELDS: tuple[str, ...] = (
    "locale",
    "caseLevel",
    "caseFirst",
    "strength",
    "numericOrdering",
    "alternate",
    "maxVariable",
    "backwards",
    "normalization",
)


def is_simple_collation(collation: object) -> bool:
    """``None``, an empty document and ``{locale: "simple"}`` all mean binary comparison."""
    if not isinstance(collation, Mapping) or not collation:
        return True
    return collation.get("locale") == "simple"


@dataclass(frozen=True)
class HostPort:
    """``HOST:PORT`` or ``[IPv6]:PORT``; port 0 asks the OS for a free port."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> HostPort:
        """Parse ``HOST:PORT`` / ``[::1]:PORT``; raise ValueError with a hint."""
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep or not rest.startswith(":"):
                raise ValueError(f"bad address {text!r} (write [IPv6]:PORT, e.g. [::1]:27017)")
            port_text = rest[1:]
        else:
            host, sep, port_text = text.rpartition(":")
            if not sep or ":" in host:
                raise ValueError(f"bad address {text!r} (write HOST:PORT, e.g. 127.0.0.1:27017)")
        if not host:
            raise ValueError(f"bad address {text!r}: empty host (write HOST:PORT)")
        if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
            raise ValueError(f"bad port in {text!r} (a number from 0 to 65535)")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class TlsConfig:
    cert_file: str
    key_file: str
    ca_file: str | None = None


@dataclass(frozen=True)
class Limits:
    max_connections: int = 10000
    idle_timeout_s: float = 600
    message_read_timeout_s: float = 30
    connect_timeout_s: float = 5
    upstream_timeout_s: float = 0  # 0 = no timeout
    max_message_size: int = 48_000_000


@dataclass(frozen=True)
class RulesConfig:
    """The mode of each rule (``enforce | warn | off``)."""

    global_query: Mode = "enforce"
    shard_key_write: Mode = "enforce"
    schema: Mode = "enforce"
    unindexed_query: Mode = "warn"
    pipeline_update: Mode = "warn"


RULE_NAMES: tuple[str, ...] = (
    "global_query",
    "shard_key_write",
    "schema",
    "unindexed_query",
    "pipeline_update",
)


@dataclass(frozen=True)
class PolicyConfig:
    allow_marker: str = "scaly:allow-global"
    unknown_namespaces: UnknownNamespaces = "allow"
    targeting: Targeting = "full"
    rules: RulesConfig = field(default_factory=RulesConfig)
    deny_commands: tuple[str, ...] = ()


TypeKind = Literal["scalar", "object", "array"]


@dataclass(frozen=True)
class TypeSpec:
    """One node of a declared structure.

    ``scalar``: a value whose BSON type is one of ``types`` (aliases as written,
    ``number`` and ``any`` included). ``object``: an embedded document with its
    own ``fields``, ``required`` names and ``additional_fields`` switch.
    ``array``: an array whose every element matches ``items``. ``nullable``
    adds BSON null to what the node accepts.
    """

    kind: TypeKind
    types: tuple[str, ...] = ()
    nullable: bool = False
    fields: Mapping[str, TypeSpec] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    additional_fields: bool = False
    items: TypeSpec | None = None
    line: int | None = None

    def label(self) -> str:
        """How messages name what this node expects: ``int``, ``string or null``..."""
        if self.kind == "scalar":
            names = list(self.types)
        else:
            names = [self.kind]
        if self.nullable and "null" not in names and "any" not in names:
            names.append("null")
        return " or ".join(names)


@dataclass(frozen=True)
class IndexConfig:
    keys: tuple[tuple[str, IndexDirection], ...]
    shard_key: bool = False
    unique: bool = False
    sparse: bool = False
    name: str | None = None
    line: int | None = None

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.keys)

    @property
    def hashed(self) -> bool:
        return any(d == "hashed" for _, d in self.keys)


@dataclass(frozen=True)
class CollectionConfig:
    namespace: str  # "db.coll"
    structure: TypeSpec | None  # kind "object" (the document), None = not declared
    rules: RulesConfig  # effective: policy.rules with this collection's overrides
    indexes: tuple[IndexConfig, ...] = ()
    rule_overrides: Mapping[str, Mode] = field(default_factory=dict)
    model: str | None = None  # the client library's class name for it (``model:``); the proxy ignores it
    line: int | None = None
    #: the collection's default collation as declared (``collation:``), None = the simple collation
    collation: Mapping[str, object] | None = None

    @property
    def db(self) -> str:
        return self.namespace.partition(".")[0]

    @property
    def name(self) -> str:
        return self.namespace.partition(".")[2]

    @property
    def simple_collation(self) -> bool:
        """Whether the declared default collation is the simple one (binary comparison)."""
        return is_simple_collation(self.collation)

    @property
    def shard_key(self) -> IndexConfig | None:
        for index in self.indexes:
            if index.shard_key:
                return index
        return None


DEFAULT_SAMPLE_RATE = 0.01  # from bench.bench_profile's sketches run: docs/advisor.md


@dataclass(frozen=True)
class ProfileConfig:
    """The traffic profile (``profile:``): see docs/profile.md."""

    enabled: bool = True
    max_shapes: int = 10_000  # rows (namespace, command, shape, appName); the rest go to an overflow row
    sink: str | None = None  # "file:PATH" (JSON lines) or "mongodb://HOST[:PORT]/DB.COLLECTION"
    flush_interval_s: float = 10.0
    #: value sketches of candidate shard keys (docs/advisor.md): on when a salt is set
    salt: str | None = None  # the per-deployment secret that keys the hash of every sketched value
    sample_rate: float = DEFAULT_SAMPLE_RATE  # the share of inserts whose documents are sketched
    sketch_keys: int = 16  # keys sketched per namespace at most
    #: keys to sketch besides the declared shard key and indexes and what traffic fixes by equality
    candidates: Mapping[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class ProxyConfig:
    listen: HostPort = field(default_factory=lambda: HostPort("127.0.0.1", 27017))
    workers: int = 1  # processes accepting on listen (SO_REUSEPORT) under a supervisor when > 1
    upstream: str = "mongodb://127.0.0.1:27018"
    tls: TlsConfig | None = None
    limits: Limits = field(default_factory=Limits)
    admin_listen: HostPort | None = None
    log_level: str = "info"
    log_values: bool = False
    #: a refusal/warning repeated within this many seconds is counted, not logged (0: log every one)
    log_repeats_s: float = 1.0
    read_only: bool = False
    report_size: int = 1000
    drift_check: bool | Literal["strict"] = False
    drift_check_interval_s: float = 60
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    profile: ProfileConfig = field(default_factory=ProfileConfig)
    collections: Mapping[str, CollectionConfig] = field(default_factory=dict)
    source_path: str | None = None
    source_hash: str = ""

    @property
    def upstream_hosts(self) -> tuple[HostPort, ...]:
        """The hosts of :attr:`upstream` (validated at load time)."""
        from pymongo.uri_parser import parse_uri

        return tuple(HostPort(h, p) for h, p in parse_uri(self.upstream)["nodelist"])
