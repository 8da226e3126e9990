"""Query shapes: a filter with every value replaced by its type name.

``{"author": "a", "n": {"$in": [1, 2]}}`` -> ``{"author":"string","n":{"$in":["int"]}}``.
Arrays collapse to their distinct element shapes, in the order of their JSON
text, so that shapes group well: ``[1, "a"]`` and ``["a", 1, 2]`` both give
``["int","string"]``, as their skeletons (:mod:`scalyproxy.evidence.skeleton`)
are equal, which lets the engine cache a verdict, finding and shape included,
by skeleton (:meth:`~scalyproxy.policy.engine.Engine.decide_message`).
No document value ever appears in a shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from scalyproxy.policy.bsontypes import type_name

_MAX_DEPTH: Final = 12
_MAX_LEN: Final = 2000


def _shape(value: Any, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return "..."
    if isinstance(value, Mapping):
        return {str(k): _shape(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        out: list[Any] = []
        for item in value:
            shaped = _shape(item, depth + 1)
            if shaped not in out:
                out.append(shaped)
        if len(out) > 1:
            out.sort(key=_text)
        return out
    return type_name(value)


def _text(shaped: Any) -> str:
    return json.dumps(shaped, separators=(",", ":"))


def shape_of(value: Any) -> str:
    """A compact JSON rendering of the value's shape (bounded length)."""
    text = json.dumps(_shape(value, 0), separators=(",", ":"))
    return text if len(text) <= _MAX_LEN else text[: _MAX_LEN - 3] + "..."
