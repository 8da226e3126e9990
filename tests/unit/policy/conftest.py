"""Configs and helpers shared by the engine tests."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from scalyproxy.config import ProxyConfig, load_config, load_config_text
from scalyproxy.policy import Command, Engine, Verdict

ROOT = Path(__file__).resolve().parents[3]

SHOP = """
collections:
  shop.orders:
    structure:
      customer: {id: int, region: string}
      total: number
      created: date
      status: string?
      tags: [string]
      lines:
        - sku: string
          qty: int
      meta: object
      note: any
      big: long
      flags: int
      stamp: timestamp
    required: [created, lines.sku]
    indexes:
      - fields: {customer.region: 1, customer.id: 1}
        shard_key: true
      - fields: {created: -1, total: 1}
  shop.users:
    structure: {email: string, name: string, age: "int | null"}
    indexes:
      - fields: {email: hashed}
        shard_key: true
  shop.logs:
    structure: {msg: string, level: string}
    additional_fields: true
    indexes: [{fields: [level]}]
  shop.plain:
    indexes: [{fields: [region, day], shard_key: true}]
"""


def blog_text() -> str:
    return (ROOT / "config" / "blog.yaml").read_text()


def engine_for(text: str) -> Engine:
    return Engine.from_config(load_config_text(text))


def merged(
    *,
    targeting: str = "full",
    unknown: str = "allow",
    deny: str = "[]",
    rules: Mapping[str, str] | None = None,
    blog_rules: str = "{unindexed_query: off}",
    read_only: bool = False,
) -> ProxyConfig:
    """The blog config plus the shop collections, with some policy settings changed."""
    text = blog_text().replace("collections:\n", "collections:\n" + SHOP.split("collections:\n", 1)[1], 1)
    text = text.replace("targeting: full", f"targeting: {targeting}")
    text = text.replace("unknown_namespaces: allow", f"unknown_namespaces: {unknown}")
    text = text.replace("deny_commands: []", f"deny_commands: {deny}")
    text = text.replace("rules: {unindexed_query: off}", f"rules: {blog_rules}")
    for rule, mode in (rules or {}).items():
        line = re.compile(rf"^    {rule}: \w+$", re.M)
        if line.search(text):
            text = line.sub(f"    {rule}: {mode}", text)
        else:
            text = text.replace("    unindexed_query: warn\n", f"    unindexed_query: warn\n    {rule}: {mode}\n")
    if read_only:
        text += "read_only: true\n"
    return load_config_text(text)


def run(engine: Engine, body: Mapping[str, Any], sequences: Mapping[str, Sequence[Mapping[str, Any]]] | None = None) -> Verdict:
    cmd = Command.from_body(body)
    if sequences is not None:
        cmd = Command(cmd.name, cmd.db, cmd.body, sequences)
    return engine.decide(cmd)


@pytest.fixture(scope="session")
def blog_engine() -> Engine:
    return Engine.from_config(load_config(ROOT / "config" / "blog.yaml"))


@pytest.fixture(scope="session")
def engine() -> Engine:
    """blog + shop collections, default policy (unindexed_query: warn except blog_posts: off)."""
    return Engine.from_config(merged())
