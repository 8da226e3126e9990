"""Value sketches of candidate shard keys: cardinality, heavy hitters, monotonicity. Mergeable.

For each (namespace, key) the proxy sketches the values that inserted documents
give the key (one field, or several for a compound key). A value never enters
a sketch: its keyed hash does (BLAKE2b keyed with ``profile.salt``, 8 bytes),
so what is kept, flushed and merged holds no value of any document:

- ``hll``: an Apache DataSketches HLL sketch (lg_k 12) of the hashes, for the
  number of distinct values and its error bound;
- ``freq``: a DataSketches frequent-items sketch of the hashes (hex), for the
  frequency of the most common values, reported as percentages only;
- ``newmax`` / ``notmax``: how many sampled documents brought a new maximum of
  the key (in BSON order) and how many did not; ``unordered``: values of types
  not ordered here (or of mixed types whose order we do not compute). The
  maximum itself stays in the proxy's memory (:class:`KeyTracker`), never
  stored; the counts merge by addition, so restarts and fleets add up;
- ``documents`` (sampled documents with the key), ``missing`` (without it, or
  with an array on its path: such a document cannot be sharded on the key).

Every sketch records the fingerprint of the salt it was made with
(``salt_id``): sketches of different salts hash the same value differently and
must not be merged; :meth:`SketchTable.merge` keeps the first salt's and counts
the others in ``salt_mismatches``.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, Final

import datasketches as ds

from scalyproxy.policy.bounds import NUMBER, STRING, canon, rank
from scalyproxy.policy.compiled import get_path

LG_K: Final = 12  # HLL: 4,096 buckets, about 1.6% relative standard error
LG_MAX_ITEMS: Final = 9  # frequent items: up to 384 tracked hashes; error about 0.7% of the documents
TOP_VALUES: Final = 5  # mostCommonValues reported
NUM_STD_DEV: Final = 2  # error bounds at about 95% confidence
MONOTONIC_RATIO: Final = 0.7  # as analyzeShardKey's recordIdCorrelationCoefficient threshold
MIN_ORDERED: Final = 10  # fewer ordered samples than this: monotonicity "unknown"
_ERR = ds.frequent_items_error_type.NO_FALSE_POSITIVES

Key = tuple[str, ...]


def key_name(paths: Sequence[str]) -> str:
    return ",".join(paths)


def salt_id(salt: bytes) -> str:
    """A fingerprint of the salt (not the salt): tells sketches that may be merged."""
    return hashlib.blake2b(b"scalyproxy-salt-id", key=salt, digest_size=6).hexdigest()


def identity(value: Any) -> Any:
    """What two values BSON compares equal share (numbers: 1, 1.0 and Decimal 1 alike)."""
    c = canon(value)
    if c.__class__ is tuple and c and c[0] == NUMBER:
        number = c[1]
        if isinstance(number, float | Decimal) and math.isfinite(number) and number == int(number):
            return (NUMBER, int(number))
    return c


def order_of(value: Any) -> Any:
    """The BSON order of a value of a type ordered here (numbers, strings, dates...), else None."""
    if value is None or rank(value) is None:
        return None
    c = canon(value)
    return None if c[1] == "NaN" else c


class KeySketch:
    """The sketches of one candidate key of one namespace (see the module docstring)."""

    __slots__ = ("hll", "freq", "documents", "missing", "newmax", "notmax", "unordered")

    def __init__(self) -> None:
        self.hll = ds.hll_sketch(LG_K)
        self.freq = ds.frequent_strings_sketch(LG_MAX_ITEMS)
        self.documents = 0
        self.missing = 0
        self.newmax = 0
        self.notmax = 0
        self.unordered = 0

    def add(self, digest: bytes, monotonic: bool | None) -> None:
        """One sampled value: its keyed hash; whether it was a new maximum (None: unordered)."""
        self.documents += 1
        self.hll.update(int.from_bytes(digest, "little", signed=True))
        self.freq.update(digest.hex())
        if monotonic is None:
            self.unordered += 1
        elif monotonic:
            self.newmax += 1
        else:
            self.notmax += 1

    def merge(self, other: KeySketch) -> None:
        union = ds.hll_union(LG_K)
        union.update(self.hll)
        union.update(other.hll)
        self.hll = union.get_result()
        self.freq.merge(other.freq)
        self.documents += other.documents
        self.missing += other.missing
        self.newmax += other.newmax
        self.notmax += other.notmax
        self.unordered += other.unordered

    def copy(self) -> KeySketch:
        out = KeySketch()
        out.merge(self)
        return out

    # -- figures ------------------------------------------------------------------------

    def distinct(self) -> dict[str, Any]:
        """numDistinctValues: the estimate and its bounds (about 95%)."""
        if self.documents == 0:
            return {"estimate": 0, "lower": 0, "upper": 0, "relative_error": 0.0}
        return {
            "estimate": round(self.hll.get_estimate()),
            "lower": int(self.hll.get_lower_bound(NUM_STD_DEV)),
            "upper": int(self.hll.get_upper_bound(NUM_STD_DEV) + 0.999999),
            "relative_error": round(abs(ds.hll_sketch.get_rel_err(True, False, LG_K, NUM_STD_DEV)), 4),
        }

    def most_common(self, top: int = TOP_VALUES) -> list[dict[str, float]]:
        """mostCommonValues as percentages of the sampled documents (estimate and its bounds)."""
        total = self.freq.total_weight
        if not total:
            return []
        items = self.freq.get_frequent_items(_ERR)[:top]
        return [{"percentage": round(100 * est / total, 3), "lower": round(100 * lo / total, 3),
                 "upper": round(100 * hi / total, 3)} for _, est, lo, hi in items]

    def max_error_percentage(self) -> float:
        """A value not in most_common is at most this frequent (the sketch's epsilon)."""
        return round(100 * self.freq.epsilon, 3) if self.freq.total_weight else 0.0

    def monotonicity(self) -> dict[str, Any]:
        """analyzeShardKey's monotonicity: ``monotonic``, ``not monotonic`` or ``unknown``."""
        ordered = self.newmax + self.notmax
        ratio = self.newmax / ordered if ordered else None
        if ordered < MIN_ORDERED or self.unordered > ordered:
            kind = "unknown"
        else:
            kind = "monotonic" if ratio is not None and ratio >= MONOTONIC_RATIO else "not monotonic"
        return {"type": kind, "newMaximumRatio": None if ratio is None else round(ratio, 4),
                "orderedSamples": ordered}

    # -- JSON ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "hll": base64.b64encode(self.hll.serialize_compact()).decode(),
            "freq": base64.b64encode(self.freq.serialize()).decode(),
            "documents": self.documents, "missing": self.missing, "newmax": self.newmax,
            "notmax": self.notmax, "unordered": self.unordered,
        }  # fmt: skip

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> KeySketch:
        out = cls()
        try:
            out.hll = ds.hll_sketch.deserialize(_bytes(doc["hll"]))
            out.freq = ds.frequent_strings_sketch.deserialize(_bytes(doc["freq"]))
            for name in ("documents", "missing", "newmax", "notmax", "unordered"):
                setattr(out, name, int(doc.get(name) or 0))
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise ValueError(f"not a key sketch ({type(exc).__name__}: {exc})") from None
        return out


def _bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return base64.b64decode(value, validate=True)
    return bytes(value)  # BSON binary from the MongoDB sink


class SketchTable:
    """The sketches of every (namespace, key), with the salt fingerprint they were made with."""

    def __init__(self, salt: str | None = None) -> None:
        self.salt_id = salt
        self.keys: dict[tuple[str, str], KeySketch] = {}  # (namespace, key name) -> sketch
        self.salt_mismatches = 0  # sketches of another salt left out of a merge

    def __len__(self) -> int:
        return len(self.keys)

    def __iter__(self) -> Iterator[tuple[tuple[str, str], KeySketch]]:
        return iter(self.keys.items())

    def get(self, namespace: str, key: str) -> KeySketch | None:
        return self.keys.get((namespace, key))

    def sketch(self, namespace: str, key: str) -> KeySketch:
        found = self.keys.get((namespace, key))
        if found is None:
            found = self.keys[(namespace, key)] = KeySketch()
        return found

    def _accepts(self, other_salt: str | None) -> bool:
        if self.salt_id is None:
            self.salt_id = other_salt
        return other_salt is None or other_salt == self.salt_id

    def merge(self, other: SketchTable) -> None:
        self.salt_mismatches += other.salt_mismatches
        if not other.keys:
            return
        if not self._accepts(other.salt_id):
            self.salt_mismatches += len(other.keys)
            return
        for ident, sketch in other.keys.items():
            self.add(ident, sketch)

    def add(self, ident: tuple[str, str], sketch: KeySketch) -> None:
        mine = self.keys.get(ident)
        if mine is None:
            self.keys[ident] = sketch.copy()
        else:
            mine.merge(sketch)

    def entries_json(self) -> list[dict[str, Any]]:
        return [{"namespace": ns, "key": key, "salt_id": self.salt_id, **s.to_json()}
                for (ns, key), s in sorted(self.keys.items())]

    def to_json(self) -> dict[str, Any]:
        return {"salt_id": self.salt_id, "salt_mismatches": self.salt_mismatches, "keys": self.entries_json()}

    def merge_entries(self, entries: Iterable[Mapping[str, Any]]) -> None:
        """Add entries of :meth:`entries_json` (a file's lines, a sink's documents)."""
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise ValueError("a sketch entry is a JSON object")
            ns, key = entry.get("namespace"), entry.get("key")
            if not isinstance(ns, str) or not isinstance(key, str):
                raise ValueError("a sketch entry needs a namespace and a key")
            salt = entry.get("salt_id")
            if not self._accepts(salt if isinstance(salt, str) else None):
                self.salt_mismatches += 1
                continue
            self.add((ns, key), KeySketch.from_json(entry))

    @classmethod
    def from_json(cls, doc: Any) -> SketchTable:
        out = cls()
        if doc is None:
            return out
        if not isinstance(doc, Mapping) or not isinstance(doc.get("keys", []), list):
            raise ValueError("'sketches' must be an object with a 'keys' list")
        salt = doc.get("salt_id")
        out.salt_id = salt if isinstance(salt, str) else None
        out.salt_mismatches = int(doc.get("salt_mismatches") or 0)
        out.merge_entries(doc.get("keys") or [])
        return out


# -- the proxy side: which keys, and feeding them ---------------------------------------


class KeyTracker:
    """Which keys of each namespace are sketched, and the running maximum of each (in memory).

    A namespace's keys are the configured ones (``profile.candidates``, the declared
    shard key and indexes) and those learned from traffic (fields a query fixes by
    equality), at most ``max_keys`` per namespace. :meth:`keys_for` returns the
    namespace's list itself (it grows in place), so a profile row keeps it.
    """

    def __init__(self, salt: str, max_keys: int, configured: Mapping[str, Sequence[Key]]) -> None:
        self.salt = salt.encode()
        self.salt_id = salt_id(self.salt)
        self.max_keys = max_keys
        self._keys: dict[str, list[Key]] = {}
        self._max: dict[tuple[str, Key], Any] = {}
        self._names: dict[int, tuple[int, frozenset[bytes] | None]] = {}  # id(key list) -> (length, names)
        self._plans: dict[str, tuple[SketchTable, int, list[Any], list[str]]] = {}  # namespace -> plan
        for ns, keys in configured.items():
            for key in keys:
                self.learn(ns, key)

    def keys_for(self, namespace: str) -> list[Key]:
        keys = self._keys.get(namespace)
        if keys is None:
            keys = self._keys[namespace] = []
        return keys

    def learn(self, namespace: str, key: Key) -> None:
        keys = self.keys_for(namespace)
        if key and key not in keys and len(keys) < self.max_keys:
            keys.append(key)

    def top_level(self, keys: Sequence[Key]) -> frozenset[bytes] | None:
        """The field names the keys read, when all are top-level (None: a dotted path)."""
        cached = self._names.get(id(keys))  # a namespace's list: it only grows
        if cached is not None and cached[0] == len(keys):
            return cached[1]
        paths = {p for key in keys for p in key}
        names = None if any("." in p for p in paths) else frozenset(p.encode() for p in paths)
        self._names[id(keys)] = (len(keys), names)
        return names

    def digest(self, values: Sequence[Any]) -> bytes:
        """The keyed hash of a key's values (one field, or several in key order)."""
        return self._hash([ident_bytes(v) for v in values])

    def _hash(self, idents: Sequence[bytes]) -> bytes:
        data = idents[0] if len(idents) == 1 else bytes([len(idents)]) + b"\x00".join(idents)
        return hashlib.blake2b(data, key=self.salt, digest_size=8).digest()

    def feed(self, table: SketchTable, namespace: str, keys: Sequence[Key], docs: Iterable[Any]) -> None:
        """Sketch the keys' values of sampled inserted documents into ``table``: each path
        of a document is read, identified and ordered once, whatever keys share it."""
        plan = self._plans.get(namespace)
        if plan is None or plan[0] is not table or plan[1] != len(keys):
            if table.salt_id is None:
                table.salt_id = self.salt_id
            plan = self._plans[namespace] = (
                table, len(keys), [(key, table.sketch(namespace, key_name(key)), (namespace, key)) for key in keys],
                list(dict.fromkeys(p for key in keys for p in key)))
        _, _, sketches, paths = plan
        maxima, hash_ = self._max, self._hash
        for doc in docs:
            if not isinstance(doc, Mapping):
                continue
            seen: dict[str, tuple[bytes, Any] | None] = {}
            for path in paths:
                value = doc.get(path, _MISSING) if "." not in path else _value(doc, path)
                if value is _MISSING or value.__class__ in _ARRAYS:
                    seen[path] = None
                else:
                    seen[path] = (ident_bytes(value), _order(value))
            for key, sketch, slot in sketches:
                if len(key) == 1:
                    part = seen[key[0]]
                    if part is None:
                        sketch.missing += 1
                        continue
                    sketch.add(hash_((part[0],)), _new_max(maxima, slot, (part[1],)))
                    continue
                parts = [seen[p] for p in key]
                if None in parts:
                    sketch.missing += 1
                    continue
                idents = [part[0] for part in parts]  # type: ignore[index]
                order = tuple(part[1] for part in parts)  # type: ignore[index]
                sketch.add(hash_(idents), _new_max(maxima, slot, order))


def _new_max(maxima: dict[tuple[str, Key], Any], slot: tuple[str, Key], order: tuple[Any, ...]) -> bool | None:
    """Whether ``order`` is above every value seen for the key (None: not ordered here)."""
    if None in order:
        return None
    last = maxima.get(slot)
    try:
        if last is None or order > last:
            maxima[slot] = order
            return True  # the first value too: a new maximum of nothing
    except TypeError:  # values of one rank whose order Python cannot compare
        return None
    return False


_ARRAYS: Final = frozenset({list, tuple})


def ident_bytes(value: Any) -> bytes:
    """What is hashed for a value: equal for values BSON compares equal (1, 1.0, Int64(1),
    Decimal128("1") alike), different otherwise; the common types without detour."""
    cls = value.__class__
    if cls is str:
        return b"s" + str.encode(value, "utf-8", "surrogatepass")
    if cls is int:
        return b"n" + str(value).encode()
    c = identity(value)
    if c.__class__ is tuple and c and c[0] == NUMBER:
        number = c[1]
        if isinstance(number, int):
            return b"n" + str(number).encode()
        if isinstance(number, float | Decimal):
            return b"n" + str(Decimal(number).normalize()).encode()
        return b"nNaN"
    return b"r" + repr(c).encode()


def _order(value: Any) -> Any:
    cls = value.__class__
    if cls is str:
        return (STRING, value)
    if cls is int:
        return (NUMBER, value)
    return order_of(value)


_MISSING: Final = object()


def _value(doc: Mapping[str, Any], path: str) -> Any:
    """The value a document gives a dotted shard-key path; _MISSING when absent or an array."""
    found, value = get_path(doc, path)
    return value if found and not isinstance(value, list | tuple) else _MISSING
