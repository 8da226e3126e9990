"""Building a reloaded config: validated and compiled, restart-only settings kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from scalyproxy.admin.reload import build, file_hash, stamp
from scalyproxy.config import ConfigError, HostPort, load_config

BASE = """\
listen: 127.0.0.1:7000
upstream: mongodb://db1:27017
read_only: false
collections:
  db.c:
    indexes:
      - fields: [k]
        shard_key: true
"""


def test_build_swaps_policy_and_keeps_restart_only_fields(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    from_file = load_config(path)
    running = from_file.__class__(**{**from_file.__dict__, "listen": HostPort("127.0.0.1", 9999)})  # --listen
    path.write_text(BASE.replace("read_only: false", "read_only: true").replace("db1", "db2"))
    built = build(str(path), running, from_file)
    assert built.config.read_only is True
    assert built.config.listen == HostPort("127.0.0.1", 9999)  # the override survives
    assert built.config.upstream == "mongodb://db1:27017"  # restart-only: kept
    assert built.changed == ["upstream"]  # the override is not taken for a change
    assert built.from_file.upstream == "mongodb://db2:27017"
    assert built.engine.collection("db.c") is not None


def test_the_profile_sink_needs_a_restart_its_bounds_do_not(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(BASE + "profile: {sink: 'file:a.jsonl', max_shapes: 10, flush_interval_s: 5}\n")
    cfg = load_config(path)
    path.write_text(BASE + "profile: {sink: 'file:b.jsonl', max_shapes: 20, flush_interval_s: 1, enabled: false}\n")
    built = build(str(path), cfg, cfg)
    assert built.changed == ["profile.sink", "profile.flush_interval_s"]
    assert built.config.profile.sink == f"file:{tmp_path}/a.jsonl" and built.config.profile.flush_interval_s == 5
    assert built.config.profile.max_shapes == 20 and built.config.profile.enabled is False


def test_build_raises_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(BASE)
    cfg = load_config(path)
    path.write_text(BASE.replace("shard_key: true", "shard_key: maybe"))
    with pytest.raises(ConfigError) as exc:
        build(str(path), cfg, cfg)
    assert [i.line for i in exc.value.issues] == [8]


def test_stamp_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    assert stamp(str(path)) is None and file_hash(str(path)) is None
    path.write_text(BASE)
    first = stamp(str(path))
    assert first is not None and first[1] == len(BASE)
    assert file_hash(str(path)) == load_config(path).source_hash
