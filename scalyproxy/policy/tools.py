"""What ``scalyproxy check | explain | export-jsonschema [--create]`` do; each returns the exit status.

``explain`` exits 0 when the command would be forwarded (warnings are printed
but do not change the status), 1 when it would be refused, 2 on bad input (a
config that does not load, a command that is not extended JSON).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from scalyproxy.config import ConfigError, ProxyConfig, load_config
from scalyproxy.policy.engine import Engine
from scalyproxy.policy.jsonschema import coll_mod, create
from scalyproxy.policy.model import Command, Finding, Verdict


def _load(path: str) -> ProxyConfig | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"{path}: {len(exc.issues)} problem(s); the config was not loaded", file=sys.stderr)
        return None


def summary(cfg: ProxyConfig) -> str:
    colls = list(cfg.collections.values())
    sharded = sum(1 for c in colls if c.shard_key is not None)
    structured = sum(1 for c in colls if c.structure is not None)
    policy = cfg.policy
    return (
        f"OK: {len(colls)} collections ({sharded} sharded, {structured} with a structure), "
        f"listen {cfg.listen}, upstream {cfg.upstream}, targeting {policy.targeting}, "
        f"unknown namespaces {policy.unknown_namespaces}, read_only {str(cfg.read_only).lower()}"
    )


def check(path: str) -> int:
    """0 and a one-line summary when the config is valid; 1 and every error on stderr."""
    cfg = _load(path)
    if cfg is None:
        return 1
    print(summary(cfg))
    return 0


def _parse_command(command_json: str) -> Mapping[str, Any] | str:
    from bson import json_util

    try:
        body = json_util.loads(command_json)
    except (ValueError, TypeError) as exc:
        return f"the command is not valid extended JSON: {exc}"
    if not isinstance(body, Mapping) or not body:
        return "the command must be a non-empty JSON object, e.g. '{\"find\": \"coll\", \"filter\": {}, \"$db\": \"db\"}'"
    return body


def _finding_lines(label: str, finding: Finding) -> list[str]:
    lines = [
        f"{label}: {finding.rule} ({finding.code_name}, code {finding.code})",
        f"  namespace: {finding.namespace or '-'}",
        f"  reason: {finding.message}",
    ]
    if finding.shape is not None:
        lines.append(f"  shape: {finding.shape}")
    return lines


def format_verdict(verdict: Verdict) -> str:
    lines = [
        f"verdict: {'allowed' if verdict.allowed else 'refused'}",
        f"command: {verdict.command}",
        f"namespaces: {', '.join(verdict.namespaces) or '-'}",
    ]
    if verdict.marker_used:
        lines.append("allow marker: used (a global query was allowed on purpose)")
    if verdict.refusal is not None:
        lines += _finding_lines("rule", verdict.refusal)
    for warning in verdict.warnings:
        lines += _finding_lines("warning", warning)
    return "\n".join(lines)


def explain(path: str, command_json: str) -> int:
    """Print the verdict for one command offline: 0 allowed, 1 refused, 2 bad input."""
    cfg = _load(path)
    if cfg is None:
        return 2
    body = _parse_command(command_json)
    if isinstance(body, str):
        print(body, file=sys.stderr)
        return 2
    try:
        command = Command.from_body(body)
    except ValueError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    verdict = Engine.from_config(cfg).decide(command)
    print(format_verdict(verdict))
    return 0 if verdict.allowed else 1


def export_jsonschema(path: str, create_commands: bool = False) -> int:
    """Print {namespace: collMod command with its $jsonSchema validator} as JSON; with
    ``create_commands``, ``create`` commands that also set each declared default collation."""
    cfg = _load(path)
    if cfg is None:
        return 1
    make = create if create_commands else coll_mod
    out = {ns: cmd for ns, coll in cfg.collections.items() if (cmd := make(coll)) is not None}
    print(json.dumps(out, indent=2))
    return 0
