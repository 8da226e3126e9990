"""Command names as the server knows them: aliases, namespaces, which ones write.

The server looks a command up by the first key of the body, case-sensitively,
and a few commands are registered under a second name. An alias is checked
exactly like its canonical name. The list follows the MongoDB server's command
registrations (``BasicCommand("name", "alias")``); see docs/policy.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from scalyproxy.wire.ambiguous import name_field

ALIASES: Final[dict[str, str]] = {
    "findandmodify": "findAndModify",
    "deleteIndexes": "dropIndexes",
    "mapreduce": "mapReduce",
    "ismaster": "isMaster",
    "buildinfo": "buildInfo",
    "dbstats": "dbStats",
    "collstats": "collStats",
    "dbhash": "dbHash",
    "getlasterror": "getLastError",
    "shardcollection": "shardCollection",
    "enablesharding": "enableSharding",
    "addshard": "addShard",
    "removeshard": "removeShard",
    "moveprimary": "movePrimary",
    "movechunk": "moveChunk",
    "listshards": "listShards",
    "flushrouterconfig": "flushRouterConfig",
    "getshardversion": "getShardVersion",
    "datasize": "dataSize",
    "availablequeryoptions": "availableQueryOptions",
}

#: The kind-1 document sequences each command takes (OP_MSG); any other is refused.
SEQUENCE_FIELDS: Final[dict[str, frozenset[str]]] = {
    "insert": frozenset({"documents"}),
    "update": frozenset({"updates"}),
    "delete": frozenset({"deletes"}),
    "bulkWrite": frozenset({"ops", "nsInfo"}),
}


def canonical(name: str) -> str:
    return ALIASES.get(name, name)


#: Commands whose first value is a collection name in the command's database.
COLLECTION_COMMANDS: Final[frozenset[str]] = frozenset(
    {
        "find",
        "insert",
        "update",
        "delete",
        "count",
        "distinct",
        "aggregate",
        "findAndModify",
        "mapReduce",
        "create",
        "drop",
        "createIndexes",
        "dropIndexes",
        "listIndexes",
        "collMod",
        "collStats",
        "validate",
        "compact",
        "reIndex",
        "convertToCapped",
        "cloneCollectionAsCapped",
        "killCursors",
        "createSearchIndexes",
        "dropSearchIndex",
        "updateSearchIndex",
        "listSearchIndexes",
        "geoSearch",
    }
)

#: Commands whose first value is a full "db.collection" namespace.
FULL_NAMESPACE_COMMANDS: Final[frozenset[str]] = frozenset(
    {
        "renameCollection",
        "shardCollection",
        "reshardCollection",
        "refineCollectionShardKey",
        "unshardCollection",
        "moveCollection",
        "analyzeShardKey",
        "configureQueryAnalyzer",
        "dataSize",
        "split",
        "moveChunk",
        "mergeChunks",
        "clearJumboFlag",
        "cleanupOrphaned",
    }
)

#: Commands that always write (read_only refuses them).
WRITE_COMMANDS: Final[frozenset[str]] = frozenset(
    {
        "insert",
        "update",
        "delete",
        "findAndModify",
        "bulkWrite",
        "create",
        "drop",
        "dropDatabase",
        "createIndexes",
        "dropIndexes",
        "collMod",
        "renameCollection",
        "convertToCapped",
        "cloneCollectionAsCapped",
        "compact",
        "reIndex",
        "applyOps",
        "shardCollection",
        "reshardCollection",
        "refineCollectionShardKey",
        "unshardCollection",
        "moveCollection",
        "cleanupOrphaned",
        "createSearchIndexes",
        "dropSearchIndex",
        "updateSearchIndex",
        "createUser",
        "updateUser",
        "dropUser",
        "dropAllUsersFromDatabase",
        "grantRolesToUser",
        "revokeRolesFromUser",
        "createRole",
        "updateRole",
        "dropRole",
        "dropAllRolesFromDatabase",
        "grantPrivilegesToRole",
        "revokePrivilegesFromRole",
        "grantRolesToRole",
        "revokeRolesFromRole",
    }
)

#: Pipeline stages that write.
WRITE_STAGES: Final[frozenset[str]] = frozenset({"$out", "$merge"})

#: First stages that read metadata, not documents: no shard key needed.
METADATA_STAGES: Final[frozenset[str]] = frozenset(
    {"$collStats", "$indexStats", "$planCacheStats", "$listSearchIndexes", "$shardedDataDistribution"}
)


def namespace_of(name: str, db: str, body: Mapping[str, Any]) -> str | None:
    """The namespace a (canonical) command addresses, when its first value names one."""
    if name == "getMore":
        coll = name_field(body, "collection")
        return f"{db}.{coll}" if isinstance(coll, str) and coll else None
    if name in COLLECTION_COMMANDS:
        coll = name_field(body, _first_key(body))
        return f"{db}.{coll}" if isinstance(coll, str) and coll else None
    if name in FULL_NAMESPACE_COMMANDS:
        ns = name_field(body, _first_key(body))
        return ns if isinstance(ns, str) and "." in ns else None
    return None


def _first_key(body: Mapping[str, Any]) -> str:
    return next(iter(body), "")


def is_write(name: str, body: Mapping[str, Any]) -> bool:
    """Whether a (canonical) command writes; aggregate and mapReduce by their output."""
    if name in WRITE_COMMANDS:
        return True
    if name == "aggregate":
        pipeline = body.get("pipeline")
        if isinstance(pipeline, list):
            return any(isinstance(s, Mapping) and not WRITE_STAGES.isdisjoint(s) for s in pipeline)
        return False
    if name == "mapReduce":
        out = body.get("out")
        return not (isinstance(out, Mapping) and "inline" in out)
    return False
