"""docker-compose.yml as the tests read it, without Docker: its ``${VAR:-default}``
references resolved the way ``docker compose`` resolves them, and each service's
``depends_on`` as {service: condition}."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
# ${NAME}, ${NAME:-default} (default when unset or empty), ${NAME-default} (when unset)
_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?-)(?P<default>[^}]*))?\}")


def interpolate(text: str, env: Mapping[str, str]) -> str:
    def value(found: re.Match[str]) -> str:
        name, op, default = found["name"], found["op"], found["default"] or ""
        if op == ":-":
            return env.get(name) or default
        if op == "-":
            return env.get(name, default)
        return env.get(name, "")

    return _VARIABLE.sub(value, text)


def load_compose(path: Path = COMPOSE_FILE, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The compose file with its variables resolved from ``env`` (none set: the defaults)."""
    loaded: dict[str, Any] = yaml.safe_load(interpolate(path.read_text(), env or {}))
    return loaded


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """{dependency: condition}; the short list form means ``service_started``."""
    declared = service.get("depends_on") or {}
    if isinstance(declared, list):
        return dict.fromkeys(declared, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in declared.items()}
