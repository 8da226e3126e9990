"""The sharding catalogue: ``config.collections`` documents, read the same way by
the drift check and by ``init-config``.

mongos keeps one document per sharded collection: ``{_id: "db.coll", key:
{field: 1 | "hashed", ...}, unique: bool}``. Older servers mark dropped ones
``dropped: true``; 8.0 tracks some unsharded collections with
``unsplittable: true``: neither counts as sharded. Pure: the callers read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def is_sharded(doc: Mapping[str, Any]) -> bool:
    """Whether a ``config.collections`` document describes a sharded collection."""
    return isinstance(doc.get("key"), Mapping) and not doc.get("dropped") and not doc.get("unsplittable")


def shard_key(doc: Mapping[str, Any] | None) -> list[tuple[str, Any]] | None:
    """The (field, direction) pairs of a catalogue document's shard key, or None when not sharded."""
    if doc is None or not is_sharded(doc):
        return None
    return [(str(name), direction) for name, direction in doc["key"].items()]


def describe(keys: Sequence[tuple[str, Any]]) -> str:
    """``{author: 1, title: 1}`` / ``{email: hashed}``: how messages and comments show a key."""
    inner = ", ".join(f"{name}: {'hashed' if d == 'hashed' else 1}" for name, d in keys)
    return "{" + inner + "}"
