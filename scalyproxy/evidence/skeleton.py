"""Command skeletons: a command reduced to what the policy reads, without its values.

A skeleton is the command itself with every document value replaced by a typed
placeholder, so that the engine that decides live traffic decides it later and
gives the same verdict (tests/property/test_skeleton_faithful.py proves it on
generated commands and configs). It keeps the command name, the namespace, the
keys, operators and structure of filters and documents, ``$in`` with its number
of points, ranges, ``$expr`` field paths, sort and collation, hint, update
operators and their paths, the upsert/multi/limit flags, pipeline stages with
the names the policy reads (``from``, ``foreignField``, ``$out``...), and
whether the comment carried the allow marker (never the comment itself).

It is JSON: placeholders are strings in angle brackets (``"<int>"``,
``"<string#1>"``); a verbatim string that starts with ``<`` or ``\\`` gets a
``\\`` in front, keys too. Arrays of values keep their distinct element
skeletons (``["<set>", ...]``); ``$in``/``$nin``/``$all`` keep their elements
with counts (``["<n>", [3, "<int>"]]``); inserted documents and write
statements keep their distinct skeletons with counts in order of first
appearance (``["<seq>", [1000, {...}]]``), so a 1,000-document insert is one
small skeleton. Top-level keys come sorted after the command name (drivers do
not agree on their order); session and transport fields (``lsid``,
``$clusterTime``, read and write concerns...) are left out.

Values the engine compares with each other are kept as relations, never as
values: where a query puts two or more values on one field path (``$in``,
ranges, ``$or`` branches), each gets its rank among them in BSON order
(``"<int#1>"``, ``"<int#2>"``: equal values share a rank), so the points and
ranges mongos would compute (:mod:`scalyproxy.policy.bounds`) come out the same;
a replacement update ranks the values of its filter and document together, so
"does the replacement keep the shard-key values" is decided as before; a
command with ``$expr`` or ``let`` ranks all its values together (an expression's
constants meet the query's values on any path). Arrays keep their order there.

A key repeated in its document or a string that is not UTF-8 (a
:class:`~scalyproxy.wire.ambiguous.LenientDocument`'s doubt) is kept where it
stands as ``"<ambiguous#R:type>"`` and rebuilt as the codec decodes it, so a rule
that reads it refuses as before.

The 64-bit shape id hashes the JSON skeleton (:func:`hash_json`); the C
extension computes the same id from a command's bytes without decoding them
(``_scan.shape_hash``; it leaves replacements, explain, ``$expr``/``let`` and
ranked values of types it does not order to Python), so the relay's fast path
never builds a skeleton for a shape it has seen.

Pure: no I/O.
"""

from __future__ import annotations

import datetime
import math
import re
import struct
import uuid
from collections.abc import Callable, Mapping
from typing import Any, Final

from bson.binary import Binary
from bson.code import Code
from bson.datetime_ms import DatetimeMS
from bson.dbref import DBRef
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

from scalyproxy.policy.bounds import canon, rank
from scalyproxy.policy.bsontypes import INT32_MAX, INT32_MIN, type_name
from scalyproxy.policy.decision import has_marker
from scalyproxy.policy.model import Command
from scalyproxy.wire.ambiguous import BAD_VALUE, REPEATED, LenientDocument
from scalyproxy.wire.command import DocumentRun
from scalyproxy.wire.errors import ProtocolError

try:
    from scalyproxy import _scan
except ImportError:  # pragma: no cover - the pure-Python install hashes in Python
    _scan = None  # type: ignore[assignment]

Json = Any  # a JSON value: dict, list, str, int, float, bool, None

SET: Final = "<set>"
COUNTED: Final = "<n>"  # $in/$nin/$all: elements with counts, in hash order
SEQ: Final = "<seq>"  # documents and statements: with counts, in order of first appearance
SEQUENCES: Final = "<sequences>"  # the kind-1 sections of an OP_MSG
MARKER: Final = "<marker>"
DEEP: Final = "<deep>"
MAX_DEPTH: Final = 48  # deeper parts become "<deep>" (the C hasher gives up there too)
MARKERS: Final = frozenset({SET, COUNTED, SEQ})

#: Fields of a command body that say how to run it, not what it does: left out.
DROPPED: Final = frozenset({
    "lsid", "txnNumber", "autocommit", "startTransaction", "$clusterTime", "signature",
    "$readPreference", "readConcern", "writeConcern", "maxTimeMS", "apiVersion", "apiStrict",
    "apiDeprecationErrors", "batchSize", "$audit", "$client",
})  # fmt: skip

#: Fields kept verbatim: names, flags and specs the policy reads by value.
VERBATIM_KEYS: Final = frozenset({
    "$db", "sort", "collation", "hint", "upsert", "multi", "remove", "new", "ordered", "to",
    "toCollection", "collection", "key", "out", "bypassDocumentValidation",
})  # fmt: skip
#: In a write statement also ``limit`` (1: a single delete), for the advisor.
STATEMENT_VERBATIM_KEYS: Final = VERBATIM_KEYS | {"limit"}

#: Commands whose first value is a value, not a name (a cursor id).
_FIRST_VALUE_IS_DATA: Final = frozenset({"getMore"})
_OPS_KINDS: Final = ("insert", "update", "delete")  # a bulkWrite op's first key
_LIST_OPS: Final = frozenset({"$in", "$nin", "$all"})
_LOGICAL: Final = frozenset({"$and", "$or", "$nor"})
_NO_PATHS: Final[Mapping[str, Any]] = {}
_MISSING: Final = object()
_NAME_STAGES: Final = frozenset({"$geoNear", "$lookup", "$graphLookup", "$unionWith", "$out", "$merge", "$unset"})

# -- hashing -----------------------------------------------------------------------

_FNV_OFFSET: Final = 0xCBF29CE484222325
_FNV_PRIME: Final = 0x100000001B3
_MASK: Final = (1 << 64) - 1
_u64 = struct.Struct("<Q").pack
_i32 = struct.Struct("<i").pack
_f64 = struct.Struct("<d").pack
_u32 = struct.Struct("<I").pack


def _py_digest(data: bytes) -> int:
    h = _FNV_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _MASK
    h ^= h >> 30
    h = (h * 0xBF58476D1CE4E5B9) & _MASK
    h ^= h >> 27
    h = (h * 0x94D049BB133111EB) & _MASK
    return h ^ (h >> 31)


#: 64-bit FNV-1a with a splitmix64 finish: the node hash the C extension computes too.
digest: Callable[[bytes], int] = _scan.shape_digest if _scan is not None else _py_digest


def hash_json(node: Json) -> int:
    """The shape id of a skeleton (or of any node of one)."""
    cls = node.__class__
    if cls is str:
        if node[:1] == "<":
            return digest(b"T" + node[1:-1].encode("utf-8", "surrogatepass") + b"\x00")
        raw = node.encode("utf-8", "surrogatepass")
        return digest(b"s" + _u32(len(raw)) + raw)
    if cls is dict:
        parts = [b"D"]
        for key, value in node.items():
            parts += (key.encode("utf-8", "surrogatepass"), b"\x00", _u64(hash_json(value)))
        parts.append(b"E")
        return digest(b"".join(parts))
    if cls is list:
        return _hash_list(node)
    if cls is bool:
        return digest(b"b\x01" if node else b"b\x00")
    if cls is int:
        return digest(b"i" + _i32(node))
    if cls is float:
        return digest(b"d" + _f64(node))
    if node is None:
        return digest(b"n")
    raise TypeError(f"not a skeleton node: {type(node).__name__}")


def _hash_list(node: list[Json]) -> int:
    head = node[0] if node else None
    if head.__class__ is str and head in MARKERS:
        parts = [{SET: b"U", COUNTED: b"C", SEQ: b"O"}[head]]
        if head == SET:
            parts += (_u64(hash_json(e)) for e in node[1:])
        else:
            for count, element in node[1:]:
                parts += (_u64(hash_json(element)), _u64(count))
    else:
        parts = [b"A", *(_u64(hash_json(e)) for e in node)]
    parts.append(b"E")
    return digest(b"".join(parts))


# -- leaves ------------------------------------------------------------------------

_TAGS: Final[dict[type, str]] = {
    str: "string", bool: "bool", float: "double", type(None): "null", ObjectId: "objectId",
    datetime.datetime: "date", DatetimeMS: "date", Int64: "long", Decimal128: "decimal",
    Binary: "binData", bytes: "binData", uuid.UUID: "binData", Regex: "regex", re.Pattern: "regex",
    Code: "javascript", Timestamp: "timestamp", MinKey: "minKey", MaxKey: "maxKey", DBRef: "dbref",
}  # fmt: skip


_TAG_NAMES: Final = frozenset({*_TAGS.values(), "int", "object", "array"})


def tag_of(value: Any) -> str:
    """The placeholder type of a leaf value (a DBRef is ``dbref``, not ``object``)."""
    cls = value.__class__
    if cls is int:
        return "int" if INT32_MIN <= value <= INT32_MAX else "long"
    name = _TAGS.get(cls)
    if name is not None:
        return name
    name = type_name(value)  # a subclass, or a value no BSON decoder makes (tests, client code)
    return name if name in _TAG_NAMES else f"other:{name}"


def _is_mapping(value: Any) -> bool:
    return value.__class__ is dict or isinstance(value, Mapping)


def _is_array(value: Any) -> bool:
    # a DocumentRun (a kind-1 section the C scanner validated) is walked a document at a time,
    # never made a list: a 47 MB insert must not be decoded whole to record its shape
    return value.__class__ is list or isinstance(value, list | tuple | DocumentRun)


def escape(text: str) -> str:
    """A verbatim string or key as the skeleton writes it."""
    return "\\" + text if text[:1] in ("<", "\\") else text


def unescape(text: str) -> str:
    return text[1:] if text[:1] == "\\" else text


# -- parts the proxy and the server could read two ways (wire.ambiguous) ---------------


class _Doubt:
    """A doubtful value of a LenientDocument (a repeated key, a string that is not UTF-8): the
    skeleton says so, ``"<ambiguous#R:type>"``, so that the engine reading it refuses as before."""

    __slots__ = ("tag",)

    def __init__(self, reasons: int, value: Any) -> None:
        self.tag = f"<ambiguous#{reasons}:{tag_of(value)}>"


def _items(doc: Mapping[str, Any]) -> Any:
    """A document's items, a doubtful value as a _Doubt (read without the checks that raise)."""
    if doc.__class__ is LenientDocument:
        assert isinstance(doc, LenientDocument)
        doubt = doc.doubt
        if doubt:
            return [(k, _Doubt(doubt[k], v) if k in doubt else v) for k, v in doc.unchecked().items()]
        return doc.unchecked().items()
    return doc.items()


def _get(doc: Mapping[str, Any], key: str, default: Any = None) -> Any:
    if doc.__class__ is LenientDocument:
        assert isinstance(doc, LenientDocument)
        reasons = doc.doubt.get(key)
        if reasons:
            return _Doubt(reasons, doc.unchecked().get(key))
        return doc.unchecked().get(key, default)
    return doc.get(key, default)


def _verbatim_scalar(value: Any) -> Json:
    cls = value.__class__
    if cls is _Doubt:
        return value.tag
    if cls is str:
        return escape(value)
    if cls is bool or value is None:
        return value
    if cls is int or cls is Int64:
        if cls is int and INT32_MIN <= value <= INT32_MAX:
            return value
        return f"<long={int(value)}>"
    if cls is float:
        return value if math.isfinite(value) else "<double>"
    return f"<{tag_of(value)}>"


def _name(value: Any) -> str:
    if value.__class__ is _Doubt:
        return str(value.tag)
    return escape(value) if value.__class__ is str else f"<{tag_of(value)}>"


# -- ranks: how values compare, without the values ---------------------------------
#
# The engine compares some values with each other: the points and ranges a query
# puts on one field path (``{k: {$in: [1, 1]}}`` is one point, ``{k: {$gt: 5,
# $lt: 3}}`` is empty: scalyproxy.policy.bounds), and a replacement document's
# shard-key values with its filter's. Where a query path holds two or more
# values, each gets its rank among them (in BSON order, by type family: equal
# values share a rank, numbers of any type are one family), written after the
# type: ``"<int#2>"``. A replacement statement ranks all the values of its
# filter and document together. A path with one value needs no rank.


def _family(value: Any) -> tuple[Any, Any]:
    """(family, order key) of a leaf, as the engine's bounds compare them (NaN apart)."""
    kind = rank(value)
    if kind is not None:
        return kind, canon(value)[1]
    key = canon(value)
    if key[0] == "?":  # a value the engine compares by identity: ordered by what it shows
        return ("?", tag_of(value)), repr(value)
    return key[0], repr(key)


def _is_nan(value: Any) -> bool:
    if value.__class__ is float:
        return bool(value != value)
    return value.__class__ is Decimal128 and value.to_decimal().is_nan()


def _leaves(value: Any, out: list[Any], depth: int = 0) -> None:
    """The scalars of a value, but not those of ``$expr`` (an expression keeps no ranks)."""
    if depth > MAX_DEPTH:
        return
    if _is_mapping(value):
        for key, item in _items(value):
            if key != "$expr":
                _leaves(item, out, depth + 1)
    elif _is_array(value):
        for item in value:
            _leaves(item, out, depth + 1)
    else:
        out.append(value)


class Ranks:
    """The rank of each value of a group (a query path, a replacement statement) in its family."""

    __slots__ = ("ranks",)

    def __init__(self, values: list[Any]) -> None:
        by_family: dict[Any, set[Any]] = {}
        for v in values:
            if v.__class__ is not _Doubt and not _is_nan(v):
                family, key = _family(v)
                by_family.setdefault(family, set()).add(key)
        self.ranks: dict[tuple[Any, Any], int] = {}
        for family, keys in by_family.items():
            for i, key in enumerate(sorted(keys), 1):
                self.ranks[(family, key)] = i

    def tag(self, value: Any) -> str:
        if _is_nan(value):
            return f"<{tag_of(value)}#nan>"
        number = self.ranks.get(_family(value))
        return f"<{tag_of(value)}>" if number is None else f"<{tag_of(value)}#{number}>"


def path_ranks(query: Mapping[str, Any]) -> dict[str, Ranks]:
    """The ranks of each field path of a query (``$and``/``$or``/``$nor`` branches included) that holds
    two values or more."""
    found: dict[str, list[Any]] = {}
    _path_values(query, found, 0)
    return {path: Ranks(values) for path, values in found.items() if len(values) > 1}


def _path_values(query: Mapping[str, Any], found: dict[str, list[Any]], depth: int) -> None:
    for key, value in _items(query):
        k = str(key)
        if k in _LOGICAL and _is_array(value) and depth < MAX_DEPTH:
            for branch in value:
                if _is_mapping(branch):
                    _path_values(branch, found, depth + 1)
        elif not k.startswith("$"):
            _leaves(value, found.setdefault(k, []), depth + 1)


def _compares_across(body: Mapping[str, Any], sequences: Mapping[str, Any] | None) -> bool:
    """``$expr`` or a ``let`` document anywhere: the engine may compare an expression's constant or a
    let variable with a query's values on any path, so the whole command is ranked as one group."""
    return _has_expr_or_let(body, 0) or any(_has_expr_or_let(d, 0) for d in (sequences or {}).values())


def _has_expr_or_let(value: Any, depth: int) -> bool:
    if depth > MAX_DEPTH:
        return False
    if _is_mapping(value):
        for key, item in _items(value):
            if key == "$expr" or (key == "let" and _is_mapping(item) and _items(item)):
                return True
            if _has_expr_or_let(item, depth + 1):
                return True
        return False
    if _is_array(value):
        return any(_has_expr_or_let(item, depth + 1) for item in value)
    return False


def statement_ranks(query: Any, replacement: Any) -> Ranks:
    values: list[Any] = []
    _leaves(query, values)
    _leaves(replacement, values)
    return Ranks(values)


def _replacement(update: Any) -> bool:
    if not _is_mapping(update):
        return False
    first = next(iter(_items(update)), None)
    return first is not None and not (isinstance(first[0], str) and first[0].startswith("$"))


# -- the skeleton of a command -----------------------------------------------------


class _Builder:
    """Walks one command; each method is one context (what the values there mean)."""

    __slots__ = ("token", "whole", "collect")

    def __init__(self, token: str) -> None:
        self.token = token
        self.whole: Ranks | None = None  # the ranks of every value of the command (see _compares_across)
        self.collect: list[Any] | None = None  # a first pass: the values that get a placeholder

    # generic contexts

    def leaf(self, value: Any, ids: Ranks | None) -> str:
        if value.__class__ is _Doubt:
            return str(value.tag)
        if self.collect is not None:
            self.collect.append(value)
        ranks = ids if ids is not None else self.whole
        if ranks is not None:
            return ranks.tag(value)
        return f"<{tag_of(value)}>"

    def data(self, value: Any, depth: int, ids: Ranks | None = None) -> Json:
        """Values: every leaf a placeholder; arrays as their distinct element skeletons
        (in order where values are numbered: a replacement update)."""
        if depth > MAX_DEPTH:
            return DEEP
        if _is_mapping(value):
            return {escape(str(k)): self.data(v, depth + 1, ids) for k, v in _items(value)}
        if _is_array(value):
            items = [self.data(v, depth + 1, ids) for v in value]
            ranked = ids is not None or self.whole is not None
            return items if ranked else self.as_set(items)  # ranked values: in order
        return self.leaf(value, ids)

    def tree(self, value: Any, depth: int, leaf: Callable[[Any], Json]) -> Json:
        """Documents and arrays as they are (keys escaped, order kept), each scalar by ``leaf``."""
        if depth > MAX_DEPTH:
            return DEEP
        if _is_mapping(value):
            return {escape(str(k)): self.tree(v, depth + 1, leaf) for k, v in _items(value)}
        if _is_array(value):
            return [self.tree(v, depth + 1, leaf) for v in value]
        return leaf(value)

    def verbatim(self, value: Any, depth: int) -> Json:
        """Names and specs (sort, collation, hint, flags): kept, except values of other types."""
        return self.tree(value, depth, _verbatim_scalar)

    def names(self, value: Any, depth: int) -> Json:
        """Stage specs made of names: strings kept, other values placeholders."""
        return self.tree(value, depth, _name)

    def expr(self, value: Any, depth: int) -> Json:
        """Aggregation expressions: field paths (``"$a"``) kept, literals placeholders."""
        if depth > MAX_DEPTH:
            return DEEP
        if _is_mapping(value):
            return {
                escape(str(k)): self.data(v, depth + 1) if k == "$literal" else self.expr(v, depth + 1)
                for k, v in _items(value)
            }
        if _is_array(value):
            return [self.expr(v, depth + 1) for v in value]
        if value.__class__ is str and value.startswith("$"):
            return value
        return self.leaf(value, None)

    @staticmethod
    def as_set(items: list[Json]) -> Json:
        unique = {hash_json(i): i for i in items}
        return [SET, *(unique[h] for h in sorted(unique))]

    @staticmethod
    def counted(items: list[Json], ordered: bool) -> Json:
        counts: dict[int, list[Any]] = {}
        for item in items:
            h = hash_json(item)
            entry = counts.get(h)
            if entry is None:
                counts[h] = [1, item]
            else:
                entry[0] += 1
        keys = counts if ordered else sorted(counts)
        return [SEQ if ordered else COUNTED, *(counts[h] for h in keys)]

    # queries

    def filter(self, value: Any, depth: int, ids: Ranks | None = None,
               paths: Mapping[str, Ranks] | None = None) -> Json:
        """A query; at its root (no ``ids``, no ``paths``) the paths with several values are ranked."""
        if depth > MAX_DEPTH:
            return DEEP
        if not _is_mapping(value):
            return self.data(value, depth, ids)
        if ids is None and paths is None and self.whole is None:
            paths = path_ranks(value)
        out: dict[str, Json] = {}
        for key, item in _items(value):
            k = str(key)
            if k in _LOGICAL and _is_array(item):
                out[escape(k)] = [self.filter(v, depth + 2, ids, paths) for v in item]
            elif k == "$expr":
                out[k] = self.expr(item, depth + 1)
            elif k.startswith("$"):
                out[k] = self.data(item, depth + 1, ids)
            else:
                out[escape(k)] = self.field(item, depth + 1, ids if ids is not None else (paths or {}).get(k))
        return out

    def field(self, value: Any, depth: int, ids: Ranks | None) -> Json:
        if depth > MAX_DEPTH:
            return DEEP
        if _is_mapping(value):
            first = next(iter(_items(value)), ("", None))[0]
            if isinstance(first, str) and first.startswith("$"):
                return self.operators(value, depth, ids)
        return self.data(value, depth, ids)

    def operators(self, value: Mapping[str, Any], depth: int, ids: Ranks | None) -> Json:
        out: dict[str, Json] = {}
        for key, item in _items(value):
            k = str(key)
            if k in _LIST_OPS and _is_array(item):
                out[escape(k)] = self.counted([self.data(v, depth + 2, ids) for v in item], ordered=False)
            elif k == "$exists" and item.__class__ is bool:
                out[k] = item
            elif k == "$not":
                out[k] = self.field(item, depth + 1, ids)
            elif k == "$elemMatch":
                out[k] = self.filter(item, depth + 1, ids, _NO_PATHS)  # its values belong to the outer path
            else:
                out[escape(k)] = self.data(item, depth + 1, ids)
        return out

    # writes

    def update(self, value: Any, depth: int, ids: Ranks | None) -> Json:
        if depth > MAX_DEPTH:
            return DEEP
        if _is_array(value):
            return self.pipeline(value, depth)
        if not _is_mapping(value):
            return self.leaf(value, None)
        if ids is not None:  # a replacement document
            return self.data(value, depth, ids)
        out: dict[str, Json] = {}
        for op, args in _items(value):
            k = str(op)
            if not _is_mapping(args):
                out[escape(k)] = self.data(args, depth + 1)
            elif k in ("$rename", "$currentDate"):
                out[escape(k)] = self.verbatim(args, depth + 1)
            else:
                out[escape(k)] = self.data(args, depth + 1)
        return out

    def statement(self, value: Any, depth: int) -> Json:
        """One update, delete or bulkWrite op: its filter, its update, its flags."""
        if depth > MAX_DEPTH:
            return DEEP
        if not _is_mapping(value):
            return self.data(value, depth)
        query_key = "q" if _get(value, "q", _MISSING) is not _MISSING else "filter"
        update_key = "u" if _get(value, "u", _MISSING) is not _MISSING else "updateMods"
        ids = None
        if self.whole is None and _replacement(_get(value, update_key)):
            ids = statement_ranks(_get(value, query_key), _get(value, update_key))
        out: dict[str, Json] = {}
        for i, (key, item) in enumerate(_items(value)):
            k = str(key)
            if i == 0 and k in _OPS_KINDS:
                out[k] = self.verbatim(item, depth + 1)
            elif k in ("q", "filter"):
                out[k] = self.filter(item, depth + 1, ids if k == query_key else None)
            elif k in ("u", "updateMods"):
                out[k] = self.update(item, depth + 1, ids if k == update_key else None)
            elif k in STATEMENT_VERBATIM_KEYS:
                out[escape(k)] = self.verbatim(item, depth + 1)
            else:
                out[escape(k)] = self.data(item, depth + 1)
        return out

    # aggregation

    def pipeline(self, value: Any, depth: int) -> Json:
        if not _is_array(value):
            return self.data(value, depth)
        return [self.stage(s, depth + 2) for s in value]

    def stage(self, value: Any, depth: int) -> Json:
        if depth > MAX_DEPTH:
            return DEEP
        if not _is_mapping(value):
            return self.data(value, depth)
        return {escape(str(k)): self.stage_spec(str(k), v, depth + 1) for k, v in _items(value)}

    def stage_spec(self, name: str, spec: Any, depth: int) -> Json:
        if name == "$match":
            return self.filter(spec, depth)
        if name == "$sort":
            return self.verbatim(spec, depth)
        if name == "$facet" and _is_mapping(spec):
            return {escape(str(k)): self.pipeline(v, depth + 1) for k, v in _items(spec)}
        if name in ("$set", "$addFields") and _is_mapping(spec):
            return {escape(str(k)): self.expr(v, depth + 1) for k, v in _items(spec)}
        if name == "$project" and _is_mapping(spec):
            return {escape(str(k)): self.projection(v, depth + 1) for k, v in _items(spec)}
        if name in _NAME_STAGES:
            return self.name_spec(spec, depth)
        return self.expr(spec, depth)

    def projection(self, value: Any, depth: int) -> Json:
        if value.__class__ in (bool, int, float, Int64):
            return _verbatim_scalar(value)
        return self.expr(value, depth)

    def name_spec(self, spec: Any, depth: int) -> Json:
        if not _is_mapping(spec):
            return self.names(spec, depth)
        out: dict[str, Json] = {}
        for key, item in _items(spec):
            k = str(key)
            if k in ("query", "restrictSearchWithMatch"):
                out[k] = self.filter(item, depth + 1)
            elif k == "pipeline" or (k == "whenMatched" and _is_array(item)):
                out[k] = self.pipeline(item, depth + 1)
            elif k in ("let", "startWith"):
                out[k] = self.expr(item, depth + 1)
            elif k == "near":
                out[k] = self.data(item, depth + 1)
            else:
                out[escape(k)] = self.names(item, depth + 1)
        return out

    # the command

    def command(self, body: Mapping[str, Any], sequences: Mapping[str, Any] | None, depth: int) -> dict[str, Json]:
        if depth == 0 and self.collect is None and _compares_across(body, sequences):
            first_pass = _Builder(self.token)
            first_pass.collect = []
            first_pass.command(body, sequences, 0)
            self.whole = Ranks(first_pass.collect)
        items = iter(_items(body))
        name, first = next(items, ("", None))
        out: dict[str, Json] = {escape(str(name)): self.first_value(str(name), first, depth)}
        ids = None
        if self.whole is None and _replacement(_get(body, "update")):
            ids = statement_ranks(_get(body, "query"), _get(body, "update"))
        rest: list[tuple[str, Json]] = []
        for key, value in items:
            k = str(key)
            if value.__class__ is _Doubt:  # kept wherever it is: reading it (or len()) refuses
                rest.append((k, value.tag))
                continue
            if k in DROPPED:
                continue
            if k == "comment":
                try:
                    if has_marker(value, self.token, 0):
                        rest.append((k, MARKER))
                except ProtocolError:  # a doubtful part in the comment: its structure, to be read again
                    rest.append((k, self.data(value, depth + 1)))
                continue
            rest.append((k, self.top_field(k, value, depth + 1, ids)))
        rest.sort(key=lambda kv: kv[0])
        out.update((escape(k), v) for k, v in rest)
        if sequences:
            seqs = sorted((str(n), self.top_field(str(n), docs, depth + 1, None)) for n, docs in sequences.items())
            out[SEQUENCES] = {escape(n): v for n, v in seqs}
        return out

    def first_value(self, name: str, value: Any, depth: int) -> Json:
        if name == "explain" and _is_mapping(value) and _items(value):
            return self.command(value, None, depth + 1)
        if name in _FIRST_VALUE_IS_DATA or _is_mapping(value) or _is_array(value):
            return self.data(value, depth + 1)
        return _verbatim_scalar(value)

    def top_field(self, key: str, value: Any, depth: int, ids: Ranks | None) -> Json:
        if key in VERBATIM_KEYS:
            return self.verbatim(value, depth)
        if key in ("filter", "query"):
            return self.filter(value, depth, ids if key == "query" else None)
        if key == "update":
            return self.update(value, depth, ids)
        if key in ("updates", "deletes", "ops") and _is_array(value):
            return self.counted([self.statement(v, depth + 2) for v in value], ordered=True)
        if key == "documents" and _is_array(value):
            return self.counted([self.data(v, depth + 2) for v in value], ordered=True)
        if key == "nsInfo" and _is_array(value):
            return [self.verbatim(v, depth + 2) for v in value]
        if key == "pipeline":
            return self.pipeline(value, depth)
        if key == "let":
            return self.expr(value, depth)
        return self.data(value, depth)


def skeleton_of(name: str, body: Mapping[str, Any], sequences: Mapping[str, Any] | None,
                marker: str) -> dict[str, Json]:
    """The skeleton of a command (``name`` is its first key); ``marker``: the allow marker."""
    del name  # the body's first key is the name
    return _Builder(marker).command(body, sequences, 0)


# -- back to a command the engine decides ------------------------------------------


_RANKED: Final = 1000  # a ranked placeholder "<t#k>" becomes the value made from 1000 + k
_FRESH: Final = 5_000_000  # the others: fresh values from here up, each distinct


class _Values:
    """Values for placeholders: from the rank (equal ranks, equal values; order kept), else fresh."""

    __slots__ = ("next", "marker", "lenient")

    def __init__(self, marker: str) -> None:
        self.next = _FRESH
        self.marker = marker
        self.lenient = False  # every mapping a LenientDocument, as the codec decodes a doubtful document

    def value(self, text: str) -> Any:
        inner = text[1:-1]
        if inner == "marker":
            return self.marker
        if inner.startswith("long="):
            return Int64(int(inner[5:]))
        kind, _, ident = inner.partition("#")
        if kind in _SINGLE:
            return _SINGLE[kind]
        if ident == "nan":
            return Decimal128("NaN") if kind == "decimal" else math.nan
        if kind == "bool":
            return ident == "2"  # ranked: False < True; alone: any
        maker = _MAKERS.get(kind)
        if maker is None:
            return None
        if ident:
            return maker(_RANKED + int(ident))
        self.next += 1
        return maker(self.next)


_SINGLE: Final[dict[str, Any]] = {"null": None, "minKey": MinKey(), "maxKey": MaxKey(), "deep": None}
_EPOCH: Final = datetime.datetime(2000, 1, 1)
#: Each makes a value of its type from a number, keeping the order of the numbers.
_MAKERS: Final[dict[str, Callable[[int], Any]]] = {
    "string": lambda n: f"v{n:08d}",
    "int": lambda n: n,
    "long": Int64,
    "double": float,
    "decimal": lambda n: Decimal128(str(n)),
    "objectId": lambda n: ObjectId(n.to_bytes(12, "big")),
    "date": lambda n: _EPOCH + datetime.timedelta(milliseconds=n),
    "timestamp": lambda n: Timestamp(n, 1),
    "binData": lambda n: Binary(str(n).encode(), 0),
    "regex": lambda n: Regex(f"v{n:08d}"),
    "javascript": lambda n: Code(f"v{n:08d}"),
    "dbref": lambda n: DBRef("v", n),
    "object": lambda n: {},
    "array": lambda n: [],
}


def _rebuild(node: Json, values: _Values) -> Any:
    cls = node.__class__
    if cls is str:
        return values.value(node) if node[:1] == "<" else unescape(node)
    if cls is dict:
        if values.lenient or any(_doubtful(k, v) for k, v in node.items()):
            return _lenient(node, values)
        return {unescape(k): _rebuild(v, values) for k, v in node.items()}
    if cls is list:
        head = node[0] if node else None
        if head.__class__ is str and head == SET:
            return [_rebuild(e, values) for e in node[1:]]
        if head.__class__ is str and head in (COUNTED, SEQ):
            return [_rebuild(element, values) for count, element in node[1:] for _ in range(count)]
        return [_rebuild(e, values) for e in node]
    return node


def _any_doubt(node: Json) -> bool:
    """Whether a doubtful key or value stands anywhere in ``node``."""
    if node.__class__ is dict:
        return any(_doubtful(k, v) or _any_doubt(v) for k, v in node.items())
    if node.__class__ is list:
        return any(_any_doubt(e) for e in node)
    return False


def _doubtful(key: str, value: Json) -> bool:
    return (value.__class__ is str and value.startswith("<ambiguous#")) or not key.isascii() and _surrogates(key)


def _surrogates(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


_NOT_UTF8: Final = "v\udcff"  # a string the decoder made of bytes that are not UTF-8


def _lenient(node: Mapping[str, Json], values: _Values) -> LenientDocument:
    """A document with its doubtful keys as the codec decodes them (repeated, or not UTF-8)."""
    doc = LenientDocument()
    for key, item in node.items():
        name = unescape(key)
        if item.__class__ is not str or not item.startswith("<ambiguous#"):
            doc[name] = _rebuild(item, values)
            continue
        reasons_text, _, kind = item[len("<ambiguous#"):-1].partition(":")
        reasons = int(reasons_text)
        value = _BAD_VALUES.get(kind, _NOT_UTF8) if reasons & BAD_VALUE else values.value(f"<{kind}>")
        doc[name] = value
        if reasons & REPEATED:
            doc[name] = value
    return doc


_BAD_VALUES: Final[dict[str, Any]] = {
    "array": [_NOT_UTF8], "javascript": Code(_NOT_UTF8), "regex": Regex(_NOT_UTF8), "dbref": DBRef(_NOT_UTF8, 1),
}


def command_of(skeleton: Mapping[str, Json], marker: str) -> Command:
    """The command a skeleton stands for, with fresh values; ``marker``: the allow marker
    to put in the comment of a skeleton recorded with one."""
    values = _Values(marker)
    body_json = dict(skeleton)
    seq_json = body_json.pop(SEQUENCES, None)
    # the codec decodes a document with a doubt anywhere in it leniently, every mapping in it
    # a LenientDocument (wire.ambiguous); the rules read them so, and so must the rebuilt one
    values.lenient = _any_doubt(body_json)
    body = _rebuild(body_json, values)
    sequences: dict[str, list[Any]] = {}
    if isinstance(seq_json, dict):
        for k, v in seq_json.items():
            values.lenient = _any_doubt(v)
            sequences[unescape(k)] = _rebuild(v, values)
    values.lenient = False
    name = next(iter(_items(body)), ("", None))[0]
    db = _get(body, "$db")
    return Command(name, db if isinstance(db, str) else "", body, sequences)
