"""One source of truth with the proxy: Document classes -> proxy config YAML -> classes.

``export_config`` writes the proxy config for Document classes (the
``export-config`` command); ``documents_from_config`` creates Document classes
from a proxy config, checked by an engine compiled from that very config
(``Connection(..., config=...)``). The YAML is exactly the proxy's format;
each collection carries ``model: <ClassName>`` (a key the proxy ignores) so the
classes come back with their names (without it a name is made from the
collection name: ``blog_posts`` -> ``BlogPosts``).
"""

from __future__ import annotations

import json
import os
import re
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from scalymongo_client.document import Document
from scalymongo_client.errors import DefinitionError
from scalymongo_client.spec import DEFAULT_POLICY, ModelSpec
from scalyproxy.config import ProxyConfig, load_config, load_config_text
from scalyproxy.policy import Engine

__all__ = ["class_name_for", "documents_from_config", "export_config", "module_documents"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")


def module_documents(module: types.ModuleType) -> list[type[Document]]:
    """The Document classes defined in ``module`` (not imported into it) that declare a namespace."""
    found = []
    for value in vars(module).values():
        if (
            isinstance(value, type)
            and issubclass(value, Document)
            and value.__module__ == module.__name__
            and value.namespace() is not None
        ):
            found.append(value)
    return found


def _yaml_key(ns: str) -> str:
    return ns if _BARE_KEY.fullmatch(ns) else json.dumps(ns)


def _indent(text: str, spaces: int) -> str:
    pad = " " * spaces
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


def export_config(
    classes: Iterable[type[Document]],
    *,
    listen: str | None = None,
    upstream: str | None = None,
    policy: Mapping[str, Any] | None = None,
    header_comment: str | None = None,
) -> str:
    """The proxy config (YAML text) for ``classes``; validated by the proxy's loader before returning."""
    entries: dict[str, tuple[str, dict[str, Any]]] = {}  # namespace -> (class name, entry)
    for cls in classes:
        ns = cls.namespace()
        if ns is None:
            raise DefinitionError(f"{cls.__qualname__} declares no __database__ and __collection__")
        if ns in entries:
            raise DefinitionError(f"{cls.__qualname__} and {entries[ns][0]} both declare {ns}")
        entries[ns] = (cls.__name__, {"model": cls.__name__, **cls.config_entry()})
    head: dict[str, Any] = {}
    if listen:
        head["listen"] = listen
    if upstream:
        head["upstream"] = upstream
    head["policy"] = dict(policy if policy is not None else DEFAULT_POLICY)
    parts = [f"# {line}\n" for line in (header_comment or "").splitlines()]
    parts.append(yaml.safe_dump(head, sort_keys=False, default_flow_style=False))
    parts.append("collections:\n" if entries else "collections: {}\n")
    for ns, (_class_name, entry) in entries.items():
        parts.append(f"  {_yaml_key(ns)}:\n")
        parts.append(_indent(yaml.safe_dump(entry, sort_keys=False, default_flow_style=False), 4))
    text = "".join(parts)
    load_config_text(text, "<exported config>")
    return text


def class_name_for(namespace: str, taken: Iterable[str] = ()) -> str:
    """A class name from a namespace: ``blog.blog_posts`` -> ``BlogPosts`` (``BlogBlogPosts`` if taken)."""
    db, _, coll = namespace.partition(".")

    def camel(text: str) -> str:
        name = "".join(part[:1].upper() + part[1:] for part in re.split(r"[^0-9A-Za-z]+", text) if part)
        return name if name and not name[0].isdigit() else f"C{name}"

    name = camel(coll)
    return camel(f"{db}_{coll}") if name in set(taken) else name


def documents_from_config(
    source: str | os.PathLike[str] | None = None, *, text: str | None = None
) -> dict[str, type[Document]]:
    """Document classes (by class name) for every collection of a proxy config.

    Give a file path, or the YAML ``text``. The classes are not registered
    globally; they are checked by one engine compiled from the whole config
    (its policy, sub-pipelines into other declared collections included).
    """
    if text is None:
        if source is None:
            raise TypeError("documents_from_config needs a path or text=")
        config = load_config(source)
        text = Path(source).read_text(encoding="utf-8")
    else:
        config = load_config_text(text, os.fspath(source) if source is not None else "<string>")
    raw = yaml.safe_load(text) or {}
    return _classes(config, raw.get("collections") or {})


def _classes(config: ProxyConfig, raw: Mapping[str, Any]) -> dict[str, type[Document]]:
    engine = Engine.from_config(config)
    out: dict[str, type[Document]] = {}
    for ns, coll in config.collections.items():
        name = coll.model or class_name_for(ns, out)
        if name in out:
            name = class_name_for(ns, out)
        spec = ModelSpec.from_config(config, ns, engine)
        out[name] = _make_class(name, spec, raw.get(ns) or {})
    return out


def _make_class(name: str, spec: ModelSpec, entry: Mapping[str, Any]) -> type[Document]:
    attrs = {
        "structure": entry.get("structure") or {},
        "required_fields": tuple(entry.get("required") or ()),
        "indexes": tuple(entry.get("indexes") or ()),
        "additional_fields": bool(entry.get("additional_fields", False)),
        "rules": dict(entry.get("rules") or {}),
        "collation": entry.get("collation"),
        "__database__": spec.db,
        "__collection__": spec.collection,
        "_scaly_spec": spec,
        "__doc__": f"Documents of {spec.namespace}, declared in the proxy config.",
        "__module__": __name__,
    }
    return types.new_class(name, (Document,), {"register": False}, lambda ns: ns.update(attrs))
