"""Reading YAML nodes with their line numbers, collecting every problem.

PyYAML's ``compose`` keeps a mark (line, column) on each node; the loader
walks nodes rather than plain values so that each error can name its line.
"""

from __future__ import annotations

from typing import Any

import yaml

from scalyproxy.config.errors import ConfigIssue

_MERGE_TAG = "tag:yaml.org,2002:merge"


class Issues:
    """Collects problems; never stops at the first one."""

    def __init__(self) -> None:
        self.items: list[ConfigIssue] = []

    def add(self, node: yaml.Node | None, path: str, message: str) -> None:
        self.items.append(ConfigIssue(line_of(node), path, message))


class Invalid:
    """Marker returned by readers after they recorded a problem."""


INVALID = Invalid()


def line_of(node: yaml.Node | None) -> int | None:
    return None if node is None else node.start_mark.line + 1


def compose(text: str, issues: Issues) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = None if mark is None else mark.line + 1
        issues.items.append(ConfigIssue(line, "", f"YAML syntax error: {exc.problem or exc}"))
    except yaml.YAMLError as exc:
        issues.items.append(ConfigIssue(None, "", f"YAML error: {exc}"))
    return None


def scalar_value(node: yaml.ScalarNode) -> Any:
    """The Python value of a scalar node, as yaml.safe_load would give it."""
    constructor = yaml.constructor.SafeConstructor()
    return constructor.construct_object(node, deep=True)


def join(path: str, key: str | int) -> str:
    return f"{path}.{key}" if path else str(key)


def mapping(
    node: yaml.Node, path: str, issues: Issues, what: str = "a mapping"
) -> dict[str, tuple[yaml.Node, yaml.Node]] | None:
    """The entries of a mapping node by key: (key node, value node). Duplicates are errors."""
    if not isinstance(node, yaml.MappingNode):
        issues.add(node, path, f"expected {what}, got {kind_of(node)}")
        return None
    out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    for key_node, value_node in _merged(node, path, issues):
        if not isinstance(key_node, yaml.ScalarNode):
            issues.add(key_node, path, "keys must be plain strings")
            continue
        key = str(scalar_value(key_node))
        if key in out:
            issues.add(key_node, join(path, key), "duplicate key (remove one of them)")
            continue
        out[key] = (key_node, value_node)
    return out


def _merged(node: yaml.MappingNode, path: str, issues: Issues) -> list[tuple[yaml.Node, yaml.Node]]:
    pairs: list[tuple[yaml.Node, yaml.Node]] = []
    merged: list[tuple[yaml.Node, yaml.Node]] = []
    for key_node, value_node in node.value:
        if key_node.tag != _MERGE_TAG:
            pairs.append((key_node, value_node))
            continue
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        for source in sources:
            if isinstance(source, yaml.MappingNode):
                merged.extend(_merged(source, path, issues))
            else:
                issues.add(source, path, "a merge key (<<) needs a mapping or a list of mappings")
    explicit = {str(k.value) for k, _ in pairs if isinstance(k, yaml.ScalarNode)}
    merged = [(k, v) for k, v in merged if str(k.value) not in explicit]
    return merged + pairs


def kind_of(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    value = scalar_value(node) if isinstance(node, yaml.ScalarNode) else None
    if value is None:
        return "null"
    return f"{type(value).__name__} {value!r}"


def unknown_keys(
    entries: dict[str, tuple[yaml.Node, yaml.Node]], allowed: tuple[str, ...], path: str, issues: Issues
) -> None:
    import difflib

    for key, (key_node, _) in entries.items():
        if key in allowed:
            continue
        close = difflib.get_close_matches(key, allowed, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"allowed: {', '.join(allowed)}"
        issues.add(key_node, join(path, key), f"unknown key ({hint})")


def read_str(node: yaml.Node, path: str, issues: Issues, hint: str = "") -> str | Invalid:
    value = scalar_value(node) if isinstance(node, yaml.ScalarNode) else INVALID
    if isinstance(value, str) and node.tag == "tag:yaml.org,2002:str":
        return value
    issues.add(node, path, f"expected a string, got {kind_of(node)}{_hint(hint)}")
    return INVALID


def read_bool(node: yaml.Node, path: str, issues: Issues) -> bool | Invalid:
    value = scalar_value(node) if isinstance(node, yaml.ScalarNode) else INVALID
    if isinstance(value, bool):
        return value
    issues.add(node, path, f"expected true or false, got {kind_of(node)}")
    return INVALID


def read_number(
    node: yaml.Node, path: str, issues: Issues, *, integer: bool, minimum: float, maximum: float | None = None
) -> float | Invalid:
    value = scalar_value(node) if isinstance(node, yaml.ScalarNode) else INVALID
    ok_types: tuple[type, ...] = (int,) if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, ok_types):
        want = "an integer" if integer else "a number"
        issues.add(node, path, f"expected {want}, got {kind_of(node)}")
        return INVALID
    assert isinstance(value, int | float)
    if value != value or value < minimum or (maximum is not None and value > maximum):  # NaN: never in range
        upper = f" and at most {maximum:g}" if maximum is not None else ""
        issues.add(node, path, f"{value!r} is out of range (at least {minimum:g}{upper})")
        return INVALID
    return value


def read_choice(node: yaml.Node, path: str, issues: Issues, choices: tuple[str, ...]) -> str | Invalid:
    value = scalar_value(node) if isinstance(node, yaml.ScalarNode) else INVALID
    if isinstance(value, str) and value in choices:
        return value
    shown = repr(value) if not isinstance(value, Invalid) else kind_of(node)
    issues.add(node, path, f"bad value {shown} (one of: {' | '.join(choices)})")
    return INVALID


def read_sequence(node: yaml.Node, path: str, issues: Issues, what: str = "a list") -> list[yaml.Node] | None:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    issues.add(node, path, f"expected {what}, got {kind_of(node)}")
    return None


def _hint(hint: str) -> str:
    return f" ({hint})" if hint else ""
