"""The table that lets the C extension decide the common targeted commands.

:func:`scalyproxy._scan.fast_decide` reads an OP_MSG's bytes and answers with
the engine's own "allowed" verdict, or None to let :meth:`Engine.decide` look.
This module compiles, per declared namespace, what that answer rests on; it
gives a command a slot only where the Python engine's checks for it reduce to
what the C code tests. "Targeted" below means: the query gives every
shard-key field directly by a scalar literal (string, number, date, ObjectId,
binary, boolean, null, timestamp, MinKey/MaxKey), with no ``$``-prefixed
field. Then ``global_query`` passes in both targeting modes, an upsert's
"full key by equality" check passes, and the shard-key index serves the query
(``unindexed_query``; a slot needs that index to serve it, or the rule off).

- find: a targeted ``filter``; a ``sort`` only when ``unindexed_query`` is off.
- count, distinct: a targeted ``query``.
- aggregate: a first stage ``$match`` that is targeted, every stage one of
  :data:`SIMPLE_STAGES` (none reads another collection or writes), given as a
  document with that one key; a second-stage ``$sort`` only when
  ``unindexed_query`` is off.
- delete: every statement's ``q`` targeted.
- update: every statement's ``q`` targeted and its ``u`` an operator update
  (operators of :data:`UPDATE_OPERATORS`, each with a document of paths)
  whose paths (and ``$rename`` targets) touch no shard-key field, and whose
  paths and values the compiled structure confirms as
  ``Schema.updates.check`` would (``$rename`` only without a structure check).
- findAndModify: a targeted ``query``; ``remove: true`` or an ``update`` as
  for update; a ``sort`` only when ``unindexed_query`` is off.
- insert: each document carries every shard-key field (``shard_key_write``)
  and the compiled structure confirms it (``schema``).

For all but insert: no ``collation`` anywhere (body or statement), no ``$``
field in a statement, the collection has a shard key and its declared default
collation is simple (under another one a string key value does not target). Statements and
inserted documents come from a non-empty body array or exactly one kind-1
section of the right name; the other commands take no kind-1 section.
Commands denied by ``deny_commands``, writes of a read-only proxy, namespaces
not declared, aliases (``findandmodify``), and anything the C code is unsure of
all go to the engine. The ``comment`` and its allow marker play no part: the
engine reads the marker only for a query that is not targeted.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Final

from scalyproxy.policy.compiled import CompiledCollection
from scalyproxy.policy.model import Verdict

try:
    from scalyproxy import _scan
except ImportError:  # pragma: no cover - the pure-Python install: the engine decides everything
    _scan = None  # type: ignore[assignment]

#: The commands with a slot, in the order of an entry (and of COMMANDS in _scan.c).
COMMANDS: Final = ("find", "insert", "update", "delete", "findAndModify", "count", "distinct", "aggregate")
#: The update operators the C code reads (``$rename`` only where the structure is not checked).
UPDATE_OPERATORS: Final = (
    "$set", "$setOnInsert", "$unset", "$inc", "$mul", "$min", "$max", "$push", "$addToSet",
    "$pull", "$pullAll", "$pop", "$currentDate", "$bit", "$rename",
)  # fmt: skip
#: Aggregation stages that read no other collection and write nothing.
SIMPLE_STAGES: Final = (
    "$match", "$sort", "$project", "$addFields", "$set", "$unset", "$limit", "$skip", "$group",
    "$count", "$unwind", "$replaceRoot", "$replaceWith", "$sortByCount", "$bucket", "$bucketAuto", "$sample",
)  # fmt: skip

#: The engine's cached "allowed" verdict of a command on a namespace.
AllowedVerdict = Callable[[str, str], Verdict]


#: One table entry, the layout _scan.c reads: a verdict slot per command of COMMANDS (None where
#: the engine must look), then the shard-key paths as bytes, whether inserted documents must carry
#: them, the compiled structure that confirms documents and updates (or None), and whether any sort
#: is allowed (unindexed_query is off).
Entry = tuple[Verdict | None | tuple[bytes, ...] | bool | object, ...]
KEYS, KEY_WRITE, SCHEMA, ANY_SORT = range(len(COMMANDS), len(COMMANDS) + 4)


def slot(entry: Entry, command: str) -> Verdict | None:
    """The verdict slot of one command in an entry."""
    verdict = entry[COMMANDS.index(command)]
    assert verdict is None or isinstance(verdict, Verdict)
    return verdict


def build_table(
    collections: Mapping[str, CompiledCollection], deny: Collection[str], read_only: bool, allowed: AllowedVerdict
) -> dict[str, Entry]:
    """The fast-path table of a compiled policy (empty without the C extension): its
    collections, the denied commands, read_only, and where the allowed verdicts come from."""
    if _scan is None:
        return {}
    table: dict[str, Entry] = {}
    for ns, cc in collections.items():
        entry = _entry(cc, deny, read_only, allowed)
        if any(v is not None for v in entry[: len(COMMANDS)]):
            table[ns] = entry
    return table


def _entry(cc: CompiledCollection, deny: Collection[str], read_only: bool, allowed: AllowedVerdict) -> Entry:
    key = cc.shard_key
    paths = key.paths if key is not None else ()
    # a query giving the full key by literals: targeted (under the simple collation); and served by
    # the key's index unless the rule is off
    served = (
        key is not None
        and cc.config.simple_collation
        and (cc.unindexed_query == "off" or cc.indexes.serves_filter(dict.fromkeys(paths, 1)))
    )
    schema = None
    if cc.schema_mode != "off":
        assert cc.schema is not None
        schema = cc.schema.compiled  # None: a structure the C checker cannot express
    checkable = cc.schema_mode == "off" or schema is not None  # documents and updates can be confirmed in C
    writable = not read_only  # update, delete, findAndModify and insert write (aggregates here do not)
    # (shard_key_write is "off" without a key, so an insert slot needs no key)
    wanted = {
        "find": served,
        "insert": writable and checkable,
        "update": served and writable and checkable,
        "delete": served and writable,
        "findAndModify": served and writable and checkable,
        "count": served,
        "distinct": served,
        "aggregate": served,
    }
    slots = tuple(allowed(c, cc.namespace) if wanted[c] and c not in deny else None for c in COMMANDS)
    encoded = tuple(p.encode() for p in paths)
    return (*slots, encoded, cc.shard_key_write != "off", schema, cc.unindexed_query == "off")
