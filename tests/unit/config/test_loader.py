"""The YAML loader: the example config, defaults, and errors that name the line and key."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from scalyproxy.config import (
    ConfigError,
    HostPort,
    Limits,
    ProfileConfig,
    ProxyConfig,
    load_config,
    load_config_text,
    parse_workers,
)

ROOT = Path(__file__).resolve().parents[3]
BLOG = ROOT / "config" / "blog.yaml"


def errors_of(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "test.yaml")
    return [(i.line, i.path, i.message) for i in info.value.issues]


def test_blog_example_loads_as_written() -> None:
    cfg = load_config(BLOG)
    assert cfg.listen == HostPort("127.0.0.1", 27017)
    assert cfg.upstream == "mongodb://127.0.0.1:27018"
    assert cfg.policy.allow_marker == "scaly:allow-global"
    assert cfg.policy.unknown_namespaces == "allow" and cfg.policy.targeting == "full"
    assert cfg.policy.deny_commands == ()
    coll = cfg.collections["blog.blog_posts"]
    assert coll.db == "blog" and coll.name == "blog_posts"
    assert coll.rules.unindexed_query == "off" and coll.rules.global_query == "enforce"
    assert coll.rule_overrides == {"unindexed_query": "off"}
    assert coll.shard_key is not None and coll.shard_key.keys == (("author", 1), ("title", 1))
    assert coll.shard_key.unique
    assert coll.structure is not None
    assert coll.structure.required == ("author", "title")
    comments = coll.structure.fields["comments"]
    assert comments.kind == "array" and comments.items is not None
    assert comments.items.fields["rank"].types == ("int",)
    assert cfg.source_path == str(BLOG)
    assert cfg.source_hash == hashlib.sha256(BLOG.read_bytes()).hexdigest()


def test_empty_config_gives_defaults() -> None:
    cfg = load_config_text("")
    assert cfg.listen == HostPort("127.0.0.1", 27017)
    assert cfg.limits == Limits()
    assert cfg.collections == {}
    assert cfg.source_path is None and len(cfg.source_hash) == 64
    assert ProxyConfig().policy.rules.unindexed_query == "warn"
    assert cfg.log_repeats_s == 1.0


def test_proxy_settings() -> None:
    text = """
listen: "[::1]:0"
upstream: mongodb://h1:1,h2:2/?tls=true
admin_listen: 127.0.0.1:9216
limits: {max_connections: 5, idle_timeout_s: 1.5, message_read_timeout_s: 2, connect_timeout_s: 3, upstream_timeout_s: 0, max_message_size: 2048}
log_level: debug
log_values: true
log_repeats_s: 2
read_only: true
report_size: 10
drift_check: strict
drift_check_interval_s: 5
"""
    cfg = load_config_text(text)
    assert cfg.listen == HostPort("::1", 0) and str(cfg.listen) == "[::1]:0"
    assert cfg.upstream_hosts == (HostPort("h1", 1), HostPort("h2", 2))
    assert cfg.admin_listen == HostPort("127.0.0.1", 9216)
    assert cfg.limits == Limits(5, 1.5, 2, 3, 0, 2048)
    assert (cfg.log_level, cfg.log_values, cfg.read_only, cfg.report_size) == ("debug", True, True, 10)
    assert cfg.drift_check == "strict" and cfg.drift_check_interval_s == 5
    assert cfg.log_repeats_s == 2.0 and isinstance(cfg.log_repeats_s, float)
    assert load_config_text("log_repeats_s: 0\n").log_repeats_s == 0.0


def test_tls_paths_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "server.pem").write_text("x")
    (tmp_path / "server.key").write_text("x")
    path = tmp_path / "proxy.yaml"
    path.write_text("tls:\n  cert_file: server.pem\n  key_file: server.key\n  ca_file: missing-ca.pem\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [(i.line, i.path) for i in info.value.issues] == [(4, "tls.ca_file")]
    assert "file not found" in str(info.value)
    path.write_text("tls:\n  cert_file: server.pem\n  key_file: server.key\n")
    cfg = load_config(path)
    assert cfg.tls is not None and cfg.tls.cert_file == str(tmp_path / "server.pem") and cfg.tls.ca_file is None


@pytest.mark.parametrize(
    ("text", "line", "path", "fragment"),
    [
        ("listen: 27017\n", 1, "listen", "expected a string"),
        ("listen: localhost\n", 1, "listen", "HOST:PORT"),
        ("listen: host:99999\n", 1, "listen", "bad port"),
        ("upstream: http://x\n", 1, "upstream", "mongodb://"),
        ("upstream: mongodb+srv://x.example.com\n", 1, "upstream", "mongodb+srv"),
        ("upstream: mongodb://h:1/?bogusOption=1\n", 1, "upstream", "bad MongoDB URI"),
        ("lisen: 1.2.3.4:5\n", 1, "lisen", "did you mean 'listen'"),
        ("limits:\n  max_connections: 0\n", 2, "limits.max_connections", "out of range"),
        ("limits:\n  idle_timeout_s: soon\n", 2, "limits.idle_timeout_s", "expected a number"),
        ("limits:\n  max_conections: 3\n", 2, "limits.max_conections", "unknown key"),
        ("log_level: loud\n", 1, "log_level", "debug | info | warning | error"),
        ("read_only: maybe\n", 1, "read_only", "true or false"),
        ("log_repeats_s: -1\n", 1, "log_repeats_s", "out of range (at least 0 and at most 3600)"),
        ("log_repeats_s: 3601\n", 1, "log_repeats_s", "out of range"),
        ("log_repeats_s: .nan\n", 1, "log_repeats_s", "out of range"),
        ("log_repeats_s: soon\n", 1, "log_repeats_s", "expected a number"),
        ("log_repeats_s: true\n", 1, "log_repeats_s", "expected a number"),
        ("drift_check: sometimes\n", 1, "drift_check", "strict"),
        ("workers: 0\n", 1, "workers", "an integer from 1 to 256, or auto"),
        ("workers: many\n", 1, "workers", "or auto"),
        ("workers: true\n", 1, "workers", "or auto"),
        ("tls:\n  cert_file: a.pem\n", 2, "tls.key_file", "missing"),
        ("policy:\n  targeting: partial\n", 2, "policy.targeting", "full | prefix"),
        ("policy:\n  unknown_namespaces: block\n", 2, "policy.unknown_namespaces", "allow | warn | deny"),
        ("policy:\n  rules:\n    schema: strict\n", 3, "policy.rules.schema", "enforce | warn | off"),
        ("policy:\n  rules:\n    schemas: warn\n", 3, "policy.rules.schemas", "did you mean 'schema'"),
        ("policy:\n  allow_marker: ''\n", 2, "policy.allow_marker", "must not be empty"),
        ("policy:\n  deny_commands: dropDatabase\n", 2, "policy.deny_commands", "a list of command names"),
        ("collections:\n  nodot:\n    indexes: []\n", 2, "collections.nodot", "<database>.<collection>"),
        ("collections:\n  a.b:\n    structure:\n      x: strnig\n", 4, "collections.a.b.structure.x", "did you mean 'string'"),
        ("collections:\n  a.b:\n    structure:\n      x: [int, string]\n", 4, "collections.a.b.structure.x", "one-element list"),
        ("collections:\n  a.b:\n    structure:\n      x.y: int\n", 4, "collections.a.b.structure.x.y", "bad field name"),
        ("collections:\n  a.b:\n    structure: {x: int}\n    required: [y]\n", 4, "collections.a.b.required.0", "missing from the structure"),
        ("collections:\n  a.b:\n    structure: {x: int}\n    indexes:\n      - fields: [y]\n        shard_key: true\n", 5, "collections.a.b.indexes.0.fields", "shard-key field 'y' is missing from the structure"),
        ("collections:\n  a.b:\n    structure: {x: [int]}\n    indexes:\n      - fields: [x]\n        shard_key: true\n", 5, "collections.a.b.indexes.0.fields", "cannot be an array"),
        ("collections:\n  a.b:\n    structure: {x: [{y: int}]}\n    indexes:\n      - fields: [x.y]\n        shard_key: true\n", 5, "collections.a.b.indexes.0.fields", "cannot be inside an array"),
        ("collections:\n  a.b:\n    indexes:\n      - fields: {x: 2}\n", 4, "collections.a.b.indexes.0.fields.x", "1 | -1 | hashed"),
        ("collections:\n  a.b:\n    indexes:\n      - fields: {x: -1, y: 1}\n        shard_key: true\n", 4, "collections.a.b.indexes.0.fields.x", "shard-key field 'x' is descending (-1)"),
        ("collections:\n  a.b:\n    indexes:\n      - shard_key: true\n        fields:\n          x: 1\n          y: -1\n", 7, "collections.a.b.indexes.0.fields.y", "ascending or hashed fields (write y: 1, or y: hashed)"),
        ("collections:\n  a.b:\n    indexes:\n      - fields: []\n", 4, "collections.a.b.indexes.0.fields", "at least one field"),
        ("collections:\n  a.b:\n    indexes:\n      - fields: {x: hashed, y: hashed}\n", 4, "collections.a.b.indexes.0.fields", "at most one hashed"),
        ("collections:\n  a.b:\n    indexes:\n      - fields: {x: hashed}\n        unique: true\n", 4, "collections.a.b.indexes.0.fields", "cannot be unique"),
        ("collections:\n  a.b:\n    indexes:\n      - field: [x]\n", 4, "collections.a.b.indexes.0.field", "unknown key"),
        ("collections:\n  a.b:\n    structure: {x: int}\n    indexes: [{fields: [z]}]\n", 4, "collections.a.b.indexes.0.fields", "index field 'z' is missing"),
        ("collections:\n  a.b:\n    rules: {schema: on}\n", 3, "collections.a.b.rules.schema", "enforce | warn | off"),
        ("collections:\n  a.b:\n    required: [x]\n", 3, "collections.a.b.required", "needs a 'structure'"),
        ("collections:\n  a.b:\n    strucutre: {}\n", 3, "collections.a.b.strucutre", "did you mean 'structure'"),
        ("collections:\n  a.b:\n    collation: fr\n", 3, "collections.a.b.collation", "expected a collation document"),
        ("collections:\n  a.b:\n    collation: {strength: 2}\n", 3, "collections.a.b.collation.locale", "missing"),
        ("collections:\n  a.b:\n    collation: {locale: fr, strenght: 2}\n", 3, "collections.a.b.collation.strenght", "did you mean 'strength'"),
        ("collections:\n  a.b:\n    collation: {locale: fr, strength: 6}\n", 3, "collections.a.b.collation.strength", "out of range"),
        ("collections:\n  a.b:\n    collation: {locale: fr, caseFirst: up}\n", 3, "collections.a.b.collation.caseFirst", "upper | lower | off"),
        ("collections:\n  a.b:\n    collation: {locale: fr, backwards: 1}\n", 3, "collections.a.b.collation.backwards", "true or false"),
        ("collections:\n  a.b:\n    collation: {locale: simple, strength: 1}\n", 3, "collections.a.b.collation", "takes no other field"),
        ("collections:\n  a.b:\n    collation: {locale: ''}\n", 3, "collections.a.b.collation.locale", "must not be empty"),
        ("a: 1\na: 2\n", 2, "a", "duplicate key"),
        ("listen: [\n", 2, "", "YAML syntax error"),
        ("- just\n- a list\n", 1, "", "expected a mapping of settings"),
    ],
)
def test_error_names_line_and_key(text: str, line: int, path: str, fragment: str) -> None:
    issues = errors_of(text)
    assert any(i[0] == line and i[1] == path and fragment in i[2] for i in issues), issues


def test_two_shard_keys_names_the_second_index() -> None:
    text = """collections:
  a.b:
    indexes:
      - fields: [x]
        shard_key: true
      - fields: [y]
        shard_key: true
"""
    issues = errors_of(text)
    assert [(line, message) for line, _, message in issues] == [
        (6, "two shard keys (at most one index per collection has shard_key: true)")
    ]


@pytest.mark.parametrize(
    "fields", ["[x, y]", "{x: 1, y: 1}", "{x: hashed}", "{x: 1, y: hashed}", "{x: hashed, y: 1}"]
)
def test_ascending_and_hashed_shard_keys_load(fields: str) -> None:
    cfg = load_config_text(f"collections:\n  a.b:\n    indexes:\n      - fields: {fields}\n        shard_key: true\n")
    index = cfg.collections["a.b"].shard_key
    assert index is not None and all(d in (1, "hashed") for _, d in index.keys)


def test_a_descending_field_is_fine_outside_the_shard_key() -> None:
    text = "collections:\n  a.b:\n    indexes:\n      - fields: [x]\n        shard_key: true\n      - fields: {created: -1}\n"
    assert load_config_text(text).collections["a.b"].indexes[1].keys == (("created", -1),)


def test_every_problem_is_reported_in_one_error() -> None:
    text = """listen: nowhere
lisen: 1
policy:
  targeting: sideways
  rules: {schema: strict}
collections:
  blog.posts:
    structure:
      a: strng
      b: [int, int]
    required: [zzz]
    indexes:
      - fields: [a, q]
        shard_key: true
      - fields: [b]
        shard_key: true
"""
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "bad.yaml")
    lines = str(info.value).splitlines()
    assert len(lines) == len(info.value.issues) >= 8
    assert all(line.startswith("bad.yaml:") for line in lines)
    assert "bad.yaml:1: listen: bad address 'nowhere' (write HOST:PORT, e.g. 127.0.0.1:27017)" in lines
    assert any(line.startswith("bad.yaml:9: collections.blog.posts.structure.a: unknown type 'strng'") for line in lines)
    assert "bad.yaml:15: collections.blog.posts.indexes.1: two shard keys (at most one index per collection has shard_key: true)" in lines
    assert not any("shard-key field 'a'" in line for line in lines)  # no cascade from the bad type of a
    assert [i.line for i in info.value.issues] == sorted(i.line or 0 for i in info.value.issues)


def test_off_is_a_mode_even_though_yaml_reads_it_as_false() -> None:
    cfg = load_config_text("policy:\n  rules:\n    unindexed_query: off\n    schema: 'off'\n")
    assert cfg.policy.rules.unindexed_query == "off" and cfg.policy.rules.schema == "off"
    assert errors_of("policy:\n  rules:\n    schema: no\n")[0][1] == "policy.rules.schema"


def test_nullable_union_and_long_form_syntax() -> None:
    text = """collections:
  a.b:
    structure:
      s: string?
      u: int | long | null
      n: "null"
      d:
        x: int
        $nullable: true
        $additional_fields: true
      arr: {$array: string, $nullable: true}
      arr2: ["int?"]
"""
    fields = load_config_text(text).collections["a.b"].structure.fields  # type: ignore[union-attr]
    assert (fields["s"].types, fields["s"].nullable) == (("string",), True)
    assert (fields["u"].types, fields["u"].nullable) == (("int", "long", "null"), False)
    assert fields["u"].label() == "int or long or null"
    assert fields["n"].nullable
    assert fields["d"].kind == "object" and fields["d"].nullable and fields["d"].additional_fields
    assert fields["arr"].kind == "array" and fields["arr"].nullable
    assert fields["arr2"].items is not None and fields["arr2"].items.nullable


def test_required_and_shard_key_paths() -> None:
    text = """collections:
  a.b:
    structure:
      c: {r: string, i: int}
      lines: [{sku: string}]
    required: [lines.sku]
    indexes: [{fields: {c.r: 1, c.i: hashed}, shard_key: true}]
"""
    structure = load_config_text(text).collections["a.b"].structure
    assert structure is not None
    assert structure.required == ("c",)
    assert structure.fields["c"].required == ("r", "i")
    assert structure.fields["lines"].items is not None and structure.fields["lines"].items.required == ("sku",)


def test_local_required_in_an_optional_embedded_document() -> None:
    text = """collections:
  a.b:
    structure:
      c:
        $required: [r]
        r: string
        i: int
      lines:
        - $required: [sku]
          sku: string
"""
    structure = load_config_text(text).collections["a.b"].structure
    assert structure is not None
    assert structure.required == ()  # c and lines stay optional
    assert structure.fields["c"].required == ("r",)
    items = structure.fields["lines"].items
    assert items is not None and items.required == ("sku",)


def test_local_required_is_enforced_only_where_the_document_is() -> None:
    from scalyproxy.policy import Command, Engine

    cfg = load_config_text("""collections:
  a.b:
    structure:
      c: {$required: [r], r: string, i: int}
""")
    engine = Engine.from_config(cfg)

    def insert(doc: dict[str, object]) -> bool:
        body = {"insert": "b", "documents": [doc], "$db": "a"}
        return engine.decide(Command.from_body(body)).allowed

    assert insert({}) and insert({"c": {"r": "x"}})
    assert not insert({"c": {"i": 1}})


def test_local_required_errors() -> None:
    text = """collections:
  a.b:
    structure:
      c:
        $required: [nope, x.y, 3]
        x: {y: int}
      d: {$required: yes, z: int}
"""
    errors = errors_of(text)
    paths = {(line, path) for line, path, _ in errors}
    assert (5, "collections.a.b.structure.c.$required.0") in paths
    assert (5, "collections.a.b.structure.c.$required.1") in paths
    assert (5, "collections.a.b.structure.c.$required.2") in paths
    assert (7, "collections.a.b.structure.d.$required") in paths
    messages = " ".join(m for _, _, m in errors)
    assert "'nope' is not declared in this document" in messages and "without dots" in messages


def test_merge_keys_and_anchors() -> None:
    text = """base: &base {}
collections:
  a.b: &coll
    structure: {x: int}
  a.c: *coll
"""
    assert errors_of(text)[0][1] == "base"
    ok = "collections:\n  a.b: &c\n    structure: {x: int}\n  a.c:\n    <<: *c\n    additional_fields: true\n"
    cfg = load_config_text(ok)
    assert cfg.collections["a.c"].structure is not None and cfg.collections["a.c"].structure.additional_fields


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "nope.yaml")


def test_host_port_parse() -> None:
    assert HostPort.parse("db.example:27017") == HostPort("db.example", 27017)
    assert HostPort.parse("[fe80::1]:1") == HostPort("fe80::1", 1)
    for bad in ("", ":1", "h:", "h:x", "::1:5", "[::1]5", "h:70000"):
        with pytest.raises(ValueError):
            HostPort.parse(bad)


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path: Path) -> None:
    cfg = load_config(path)
    assert cfg.collections


def test_collation_is_the_collections_default() -> None:
    from scalyproxy.config import load_config_text

    text = "collections:\n  a.b:\n    collation: {locale: fr_CA, strength: 2, numericOrdering: true}\n  a.c: {collation: {locale: simple}}\n  a.d: {}\n"
    cfg = load_config_text(text)
    assert cfg.collections["a.b"].collation == {"locale": "fr_CA", "strength": 2, "numericOrdering": True}
    assert not cfg.collections["a.b"].simple_collation
    assert cfg.collections["a.c"].simple_collation and cfg.collections["a.c"].collation == {"locale": "simple"}
    assert cfg.collections["a.d"].collation is None and cfg.collections["a.d"].simple_collation


def test_model_key_names_a_class() -> None:
    from scalyproxy.config import ConfigError, load_config_text

    cfg = load_config_text("collections:\n  a.b:\n    model: Thing\n")
    assert cfg.collections["a.b"].model == "Thing"
    with pytest.raises(ConfigError) as info:
        load_config_text("collections:\n  a.b:\n    model: not a name\n")
    assert ":3:" in str(info.value) and "not a Python class name" in str(info.value)


def test_profile_section(tmp_path: Path) -> None:
    assert load_config_text("").profile == ProfileConfig()  # on by default, no sink
    path = tmp_path / "c.yaml"
    path.write_text("profile: {sink: 'file:data/profile.jsonl', max_shapes: 50, flush_interval_s: 2.5}\n")
    cfg = load_config(path)
    assert cfg.profile == ProfileConfig(True, 50, f"file:{tmp_path}/data/profile.jsonl", 2.5)
    mongo = load_config_text("profile:\n  enabled: false\n  sink: mongodb://a:1,b:2/scaly.profile?tls=false\n")
    assert mongo.profile.sink == "mongodb://a:1,b:2/scaly.profile?tls=false" and not mongo.profile.enabled
    sketches = load_config_text("profile:\n  salt: 0123456789abcdef\n  sample_rate: 0.5\n  sketch_keys: 4\n"
                                "  candidates: {a.b: [x, 'y, z', 'w:hashed']}\n")
    assert sketches.profile.salt == "0123456789abcdef" and sketches.profile.sample_rate == 0.5
    assert sketches.profile.sketch_keys == 4
    assert sketches.profile.candidates == {"a.b": (("x",), ("y", "z"), ("w",))}


@pytest.mark.parametrize(
    "text, line, path, fragment",
    [
        ("profile:\n  sink: http://x\n", 2, "profile.sink", "unknown sink"),
        ("profile:\n  sink: mongodb://h/db\n", 2, "profile.sink", "a database and a collection"),
        ("profile:\n  sink: 'mongodb://h:99999/a.b'\n", 2, "profile.sink", "bad MongoDB URI"),
        ("profile:\n  sink: 'file:'\n", 2, "profile.sink", "needs a path"),
        ("profile:\n  sink: 5\n", 2, "profile.sink", "expected a string"),
        ("x: 1\nprofile:\n  max_shapes: 0\n", 3, "profile.max_shapes", "out of range"),
        ("profile:\n  flush_interval_s: 0\n", 2, "profile.flush_interval_s", "out of range"),
        ("profile:\n  enabled: yes please\n", 2, "profile.enabled", "true or false"),
        ("profile:\n  max_shape: 5\n", 2, "profile.max_shape", "did you mean 'max_shapes'"),
        ("profile: [1]\n", 1, "profile", "expected a mapping"),
        ("profile:\n  salt: short\n", 2, "profile.salt", "too short"),
        ("profile:\n  salt: 12\n", 2, "profile.salt", "expected a string"),
        ("profile:\n  sample_rate: 0\n", 2, "profile.sample_rate", "out of range"),
        ("profile:\n  sample_rate: 2\n", 2, "profile.sample_rate", "out of range"),
        ("profile:\n  sketch_keys: 0\n", 2, "profile.sketch_keys", "out of range"),
        ("profile:\n  candidates: {nodot: [a]}\n", 2, "profile.candidates.nodot", ""),
        ("profile:\n  candidates: {a.b: x}\n", 2, "profile.candidates.a.b", "a list of keys"),
        ("profile:\n  candidates:\n    a.b: ['$x']\n", 3, "profile.candidates.a.b.0", "bad key"),
    ],
)
def test_profile_errors_name_line_and_key(text: str, line: int, path: str, fragment: str) -> None:
    found = errors_of(text)
    assert any(ln == line and p == path and fragment in msg for ln, p, msg in found), found


def test_workers_default_number_and_auto() -> None:
    assert load_config_text("listen: 127.0.0.1:1\n").workers == 1
    assert load_config_text("workers: 3\n").workers == 3
    assert load_config_text("workers: auto\n").workers == len(os.sched_getaffinity(0))


def test_workers_on_the_command_line() -> None:
    assert parse_workers("4") == 4
    assert parse_workers("auto") == len(os.sched_getaffinity(0))
    for bad in ("0", "-1", "two", "257", ""):
        with pytest.raises(ValueError, match="--workers"):
            parse_workers(bad)
