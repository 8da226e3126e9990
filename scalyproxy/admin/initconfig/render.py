"""A :class:`ConfigPlan` -> the config's YAML text, every choice explained in a comment. Pure.

Block style throughout, one field per line, the reason beside it (further
reasons on comment lines below, at the same column). Keys that YAML would
read as something else (``on``, ``null``, ``1.10``, names with spaces) are
double-quoted. Nested required fields go in their document's ``$required``;
the collection's top-level ones in ``required:``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Final

import yaml

from scalyproxy.admin.initconfig.model import CollectionPlan, ConfigPlan, Field, IndexPlan, Node
from scalyproxy.config.model import RULE_NAMES

COMMENT_COLUMN: Final = 44
_OPENNESS: Final = ("open:", "strict:")
_BARE_KEY: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
_BARE_PATH: Final = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def yaml_key(name: str, pattern: re.Pattern[str] = _BARE_KEY) -> str:
    """``name`` as a YAML key or list item: bare when YAML reads it back as the same string."""
    if pattern.fullmatch(name):
        try:
            if yaml.safe_load(name) == name:
                return name
        except yaml.YAMLError:
            pass
    return json.dumps(name, ensure_ascii=False)


def _path_key(name: str) -> str:
    return yaml_key(name, _BARE_PATH)


def _clean(text: str) -> str:
    return " ".join(text.split())


def _lines(text: str, notes: Iterable[str]) -> list[str]:
    """``text`` with the first note beside it and the others on comment lines below."""
    notes = [_clean(n) for n in notes if n]
    if not notes:
        return [text]
    column = max(COMMENT_COLUMN, len(text) + 2)
    out = [f"{text.ljust(column)}# {notes[0]}"]
    out += [f"{' ' * column}# {n}" for n in notes[1:]]
    return out


# -- structure ----------------------------------------------------------------------


def type_text(node: Node) -> str:
    """A scalar node as the config writes it: ``string``, ``string?``, ``int | long | null``."""
    types = list(node.types)
    if not types:
        return '"null"'
    if "any" in types:
        return "any"
    if node.nullable:
        return f"{types[0]}?" if len(types) == 1 else " | ".join([*types, "null"])
    return " | ".join(types)


def _flow_item(node: Node, text: str) -> str:
    """An array element inside ``[...]``: a type with ``?`` or ``|`` is quoted (the docs' advice)."""
    if node.kind != "scalar" or re.fullmatch(r'[A-Za-z]+|"null"', text):
        return text
    return json.dumps(text)


def inline(node: Node) -> str | None:
    """The node on one line, or None when it needs a block."""
    if node.kind == "scalar":
        return type_text(node)
    if node.kind == "array" and not node.nullable and node.items is not None:
        inner = inline(node.items)
        if inner is not None and node.items.kind != "object":
            return f"[{_flow_item(node.items, inner)}]"
    if node.kind == "object" and not node.fields:
        metas = ", ".join(f"{k}: {v}" for k, v in _metas(node, None))
        return "{" + metas + "}"
    return None


def _metas(node: Node, default_additional: bool | None) -> list[tuple[str, str]]:
    out = []
    if node.nullable:
        out.append(("$nullable", "true"))
    if default_additional is None or node.additional != default_additional:
        out.append(("$additional_fields", "true" if node.additional else "false"))
    required = [yaml_key(f.name) for f in node.fields if f.required]
    if required:
        out.append(("$required", "[" + ", ".join(required) + "]"))
    return out


def _notes(node: Node) -> list[str]:
    notes = list(node.notes)
    if node.kind == "array" and node.items is not None:
        notes += [f"elements: {n}" for n in _notes(node.items)]
    return notes


def field_lines(f: Field, indent: int, default_additional: bool) -> list[str]:
    pad = " " * indent
    notes = [f.note, *_notes(f.node)]
    text = inline(f.node)
    if text is not None:
        return _lines(f"{pad}{yaml_key(f.name)}: {text}", notes)
    return [*_lines(f"{pad}{yaml_key(f.name)}:", notes), *block(f.node, indent + 2, default_additional)]


def block(node: Node, indent: int, default_additional: bool) -> list[str]:
    """The lines of an embedded document or array under its key, at ``indent``."""
    pad = " " * indent
    if node.kind == "object":
        metas = [f"{pad}{k}: {v}" for k, v in _metas(node, default_additional)]
        fields = [line for f in node.fields for line in field_lines(f, indent, default_additional)]
        return metas + fields
    assert node.kind == "array" and node.items is not None
    if node.nullable:
        text = inline(node.items)
        head = [f"{pad}$array: {text}"] if text is not None else [f"{pad}$array:", *block(node.items, indent + 2, default_additional)]
        return [*head, f"{pad}$nullable: true"]
    text = inline(node.items)
    if text is not None:
        return [f"{pad}- {text}"]
    lines = block(node.items, indent + 2, default_additional)
    return [f"{pad}- {lines[0][indent + 2:]}", *lines[1:]]


def structure_lines(root: Node, indent: int) -> list[str]:
    """``structure:`` and, when the collection has them, ``required:`` and ``additional_fields:``."""
    pad = " " * indent
    why = [n for n in root.notes if n.startswith(_OPENNESS)]
    out = [f"{pad}# {_clean(n)}" for n in root.notes if n not in why]
    out.append(f"{pad}structure:" if root.fields else f"{pad}structure: {{}}")
    out += [line for f in root.fields for line in field_lines(f, indent + 2, root.additional)]
    required = [yaml_key(f.name) for f in root.fields if f.required]
    if required:
        out.append(f"{pad}required: [{', '.join(required)}]")
    if not why:
        why = ["open: any field is accepted"] if root.additional else [
            "strict: every field the sample showed is declared; any other is reported"]
    out += _lines(f"{pad}additional_fields: {'true' if root.additional else 'false'}", why)
    return out


# -- indexes ------------------------------------------------------------------------


def _fields_text(keys: Sequence[tuple[str, object]]) -> str:
    if all(d == 1 for _, d in keys):
        return "[" + ", ".join(_path_key(f) for f, _ in keys) + "]"
    return "{" + ", ".join(f"{_path_key(f)}: {d}" for f, d in keys) + "}"


def index_lines(plan: IndexPlan, indent: int) -> list[str]:
    pad = " " * indent
    out = _lines(f"{pad}- fields: {_fields_text(plan.keys)}", plan.notes)
    for flag in ("shard_key", "unique", "sparse"):
        if getattr(plan, flag):
            out.append(f"{pad}  {flag}: true")
    if plan.name:
        out.append(f"{pad}  name: {_path_key(plan.name)}")
    return out


# -- the whole file -------------------------------------------------------------------


def collection_lines(plan: CollectionPlan) -> list[str]:
    key = f"  {_path_key(plan.namespace)}:"
    body: list[str] = []
    if plan.collation:
        body += _lines(f"    collation: {plan.collation}",
                       ["the collection's default: a string shard-key value targets only under the simple collation"])
    body += [f"    # {_clean(n)}" for n in plan.structure_notes]
    if plan.structure is not None:
        body += structure_lines(plan.structure, 4)
    if plan.indexes:
        body.append("    indexes:")
        body += [line for ix in plan.indexes for line in index_lines(ix, 6)]
    body += [f"    # skipped {_clean(s)}" for s in plan.skipped_indexes]
    if not any(not line.lstrip().startswith("#") for line in body):
        key += " {}"
    return [*_lines(key, plan.notes), *body]


def _rules() -> list[str]:
    out = _lines("  rules:", ["shadow mode: every rule warns, none refuses (see docs/onboarding.md)"])
    return out + [f"    {name}: warn" for name in RULE_NAMES]


def render(plan: ConfigPlan) -> str:
    lines = [f"# {_clean(h)}" if h else "#" for h in plan.header]
    lines += _lines("listen: 127.0.0.1:27017", ["where drivers connect: the proxy's address"])
    lines += _lines(f"upstream: {json.dumps(plan.upstream)}", ["the --from URI without credentials", *plan.upstream_notes])
    lines += _lines("# admin_listen: 127.0.0.1:9216", ["uncomment for /metrics and the shadow-mode /report"])
    lines += ["policy:", '  allow_marker: "scaly:allow-global"']
    lines += _lines("  unknown_namespaces: allow", ["collections not listed below pass unchecked"])
    lines += ["  targeting: full", *_rules(), "  deny_commands: []"]
    lines.append("collections:" if plan.collections else "collections: {}")
    for coll in plan.collections:
        lines += collection_lines(coll)
    if plan.skipped:
        lines.append("# Not included:")
        lines += [f"#   {_clean(s)}" for s in plan.skipped]
    return "\n".join(lines) + "\n"
