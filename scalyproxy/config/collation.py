"""A collection's ``collation:`` (its default collation, as ``create`` takes it), read from YAML.

The fields and their values are MongoDB's collation document; ``locale`` is
required, and ``{locale: simple}`` (binary comparison) takes no other field.
"""

from __future__ import annotations

from typing import Any, Final

import yaml

from scalyproxy.config.model import COLLATION_FIELDS
from scalyproxy.config.nodes import (
    INVALID,
    Invalid,
    Issues,
    join,
    mapping,
    read_bool,
    read_choice,
    read_number,
    read_str,
    unknown_keys,
)

_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "caseFirst": ("upper", "lower", "off"),
    "alternate": ("non-ignorable", "shifted"),
    "maxVariable": ("punct", "space"),
}
_BOOLS: Final = ("caseLevel", "numericOrdering", "backwards", "normalization")


def read_collation(node: yaml.Node, path: str, issues: Issues) -> dict[str, Any] | Invalid:
    """``{locale: fr, strength: 2, ...}`` as a plain dict; every problem recorded in ``issues``."""
    entries = mapping(node, path, issues, 'a collation document, e.g. {locale: "fr", strength: 2}')
    if entries is None:
        return INVALID
    unknown_keys(entries, COLLATION_FIELDS, path, issues)
    if "locale" not in entries:
        issues.add(node, join(path, "locale"), 'missing (a collation names its locale, e.g. "en" or "simple")')
        return INVALID
    out: dict[str, Any] = {}
    ok = True
    for key, (_, value_node) in entries.items():
        if key not in COLLATION_FIELDS:
            ok = False
            continue
        value = _field(key, value_node, join(path, key), issues)
        ok = ok and not isinstance(value, Invalid)
        out[key] = value
    if ok and out["locale"] == "simple" and len(out) > 1:
        others = ", ".join(k for k in out if k != "locale")
        issues.add(node, path, f"the simple collation takes no other field (remove {others})")
        ok = False
    return out if ok else INVALID


def _field(key: str, node: yaml.Node, path: str, issues: Issues) -> Any:
    if key == "locale":
        locale = read_str(node, path, issues, 'e.g. "en", "fr_CA" or "simple"')
        if locale == "":
            issues.add(node, path, "must not be empty")
            return INVALID
        return locale
    if key == "strength":
        strength = read_number(node, path, issues, integer=True, minimum=1, maximum=5)
        return strength if isinstance(strength, Invalid) else int(strength)
    if key in _BOOLS:
        return read_bool(node, path, issues)
    return read_choice(node, path, issues, _CHOICES[key])
