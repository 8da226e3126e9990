"""The table that lets the C extension decide the common targeted find and insert.

:func:`scalyproxy._scan.fast_decide` reads an OP_MSG's bytes and answers with
the engine's own "allowed" verdict, or None to let :meth:`Engine.decide` look.
This module compiles, per declared namespace, what that answer rests on; it
gives a command slot (find, insert) only where the Python engine's checks for
it reduce to what the C code tests:

- find: the filter gives every shard-key field directly by a scalar literal
  (so ``global_query`` passes in both targeting modes, and the shard-key index
  serves the filter for ``unindexed_query``); no collation, no kind-1 section;
  a sort only when ``unindexed_query`` is off. Not on a collection whose
  declared default collation is not simple (a string key value would not
  target there).
- insert: each document carries every shard-key field (``shard_key_write``) and
  the compiled structure confirms it (``schema``); documents in one kind-1
  ``documents`` section or a body array of documents.

Commands denied by ``deny_commands``, inserts of a read-only proxy, namespaces
not declared, and anything the C code is unsure of all go to the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scalyproxy.policy.compiled import CompiledCollection
from scalyproxy.policy.model import Verdict

if TYPE_CHECKING:
    from scalyproxy.policy.engine import Engine

try:
    from scalyproxy import _scan
except ImportError:  # pragma: no cover - the pure-Python install: the engine decides everything
    _scan = None  # type: ignore[assignment]

#: One table entry: (find verdict, insert verdict, shard-key paths, check key presence on insert,
#: compiled structure or None, any sort allowed on find) - the layout _scan.c reads.
Entry = tuple[Verdict | None, Verdict | None, tuple[bytes, ...], bool, object | None, bool]


def build_table(engine: Engine) -> dict[str, Entry]:
    """The fast-path table of a compiled policy (empty without the C extension)."""
    if _scan is None:
        return {}
    table: dict[str, Entry] = {}
    for ns, cc in engine._collections.items():
        entry = _entry(engine, cc)
        if entry[0] is not None or entry[1] is not None:
            table[ns] = entry
    return table


def _entry(engine: Engine, cc: CompiledCollection) -> Entry:
    key = cc.shard_key
    paths = key.paths if key is not None else ()
    find = None
    if key is not None and "find" not in engine._deny and cc.config.simple_collation and (
        cc.unindexed_query == "off" or cc.indexes.serves_filter(dict.fromkeys(paths, 1))
    ):
        find = engine._allowed("find", cc.namespace)
    schema = None
    if cc.schema_mode != "off":
        assert cc.schema is not None
        schema = cc.schema.compiled  # None: a structure the C checker cannot express
    insert = None
    # an insert is a write: a read-only proxy refuses it (shard_key_write is "off" without a key)
    if "insert" not in engine._deny and not engine._read_only and (cc.schema_mode == "off" or schema is not None):
        insert = engine._allowed("insert", cc.namespace)
    encoded = tuple(p.encode() for p in paths)
    return (find, insert, encoded, cc.shard_key_write != "off", schema, cc.unindexed_query == "off")
