"""global_query against mongos' own routing, case by case from the MongoDB server's unit tests.

Each row names its source: the file under the mongodb/mongo repository and the
TEST in it. Only cases whose routing does not depend on chunk boundaries are
taken. mongos' verdict is written as:

- ``T``: targeted: one shard, or a finite set of points each on one shard
  (extractShardKeyFromQuery finds the key, or the flattened index bounds are
  points, or empty);
- ``G``: global: a range, or no key (the proxy refuses it with ScalyGlobalQuery);
- ``E:T`` / ``E:G``: mongos rejects the command itself (a parse error), so there
  is no routing to match; the proxy reads an unknown operator as fixing
  nothing: it forwards the command (``E:T``, the server answers with its own
  error) when the rest of the filter targets, and refuses it otherwise (``E:G``).

Where the source states mongos' three-way classification (single key, multiple
keys, MinKey to MaxKey: ``QueryTargetingInfo``, analyzeShardKey's single-shard,
multi-shard and scatter-gather), the row also gives the verdict of our
``targeting: prefix`` rule, which accepts everything but the scatter-gather.

Every query row is run through every command that routes by a query: find,
count, distinct, aggregate ``$match``, update (one and many), delete (one and
many), findAndModify and the 8.0 bulkWrite update and delete; rows with
``let`` skip count and distinct, which take no ``let``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from bson.min_key import MinKey
from bson.regex import Regex

from scalyproxy.config import load_config_text
from scalyproxy.policy import Engine, Verdict

from .conftest import run

SKP = "src/mongo/s/shard_key_pattern_test.cpp"
CMQ = "src/mongo/s/chunk_manager_query_test.cpp"
CRI = "src/mongo/s/collection_routing_info_targeter_test.cpp"
WWSK = "src/mongo/s/write_ops/write_without_shard_key_util_test.cpp"
ASK = "src/mongo/db/s/analyze_shard_key_read_write_distribution_test.cpp"

CI = {"locale": "en_US", "strength": 1, "caseLevel": False}  # the tests' caseInsensitiveCollation
SIMPLE = {"locale": "simple"}
NONSIMPLE = {"locale": "fr"}  # stands for the tests' mock collators (reverse string, "lowercase")

COLLECTIONS = {
    "k.single": "{fields: [a], shard_key: true}",
    "k.compound": "{fields: [a, b], shard_key: true}",
    "k.nested": "{fields: [a.b, c], shard_key: true}",
    "k.deep": "{fields: [a.b.c], shard_key: true}",
    "k.numeric": "{fields: [a.0.0], shard_key: true}",
    "k.hashed": "{fields: {a.b: hashed}, shard_key: true}",
    "k.hashed_range": "{fields: {a.b: hashed, c.d: 1}, shard_key: true}",
    "k.range_hashed": "{fields: {a.b: 1, c.d: hashed}, shard_key: true}",
    "k.single_nonsimple": "{fields: [a], shard_key: true}",
    "rw.range0": "{fields: [a.x, b.y], shard_key: true}",
    "rw.range0_ci": "{fields: [a.x, b.y], shard_key: true}",
    "rw.range0_simple": "{fields: [a.x, b.y], shard_key: true}",
    "rw.hashed0": "{fields: {a.x: 1, b.y: hashed}, shard_key: true}",
    "rw.hashed0_ci": "{fields: {a.x: 1, b.y: hashed}, shard_key: true}",
    "rw.hashed0_simple": "{fields: {a.x: 1, b.y: hashed}, shard_key: true}",
    "rw.range1": "{fields: [a, b.y], shard_key: true}",
    "rw.hashed2": "{fields: {a: hashed}, shard_key: true}",
    "w.ab": "{fields: [a, b], shard_key: true}",
}
DEFAULT_COLLATIONS = {
    "k.single_nonsimple": "{locale: fr}",
    "rw.range0_ci": "{locale: en_US, strength: 1, caseLevel: false}",
    "rw.hashed0_ci": "{locale: en_US, strength: 1, caseLevel: false}",
    "rw.range0_simple": "{locale: simple}",
    "rw.hashed0_simple": "{locale: simple}",
}


def config_text(targeting: str) -> str:
    lines = [
        f"policy:\n  targeting: {targeting}\n  rules: {{unindexed_query: off, shard_key_write: off}}\ncollections:"
    ]
    for ns, index in COLLECTIONS.items():
        collation = DEFAULT_COLLATIONS.get(ns)
        lines.append(f"  {ns}:\n    indexes: [{index}]" + (f"\n    collation: {collation}" if collation else ""))
    return "\n".join(lines) + "\n"


ENGINES = {mode: Engine.from_config(load_config_text(config_text(mode))) for mode in ("full", "prefix")}


@dataclass(frozen=True)
class Case:
    source: str  # "<file> <TEST name>"
    ns: str
    filter: dict[str, Any]
    full: str  # T | G | E:T | E:G
    prefix: str | None = None  # our prefix mode, where the source states mongos' classification
    collation: dict[str, Any] | None = None
    let: dict[str, Any] | None = None
    note: str = ""


def s(test: str) -> str:
    return f"{SKP} ShardKeyPatternTest.{test}"


def q(test: str) -> str:
    return f"{CMQ} ChunkManagerQueryTest.{test}"


def a(test: str) -> str:
    return f"{ASK} {test}"


EXTRACTED = "extractShardKeyFromQuery finds no key, but the index bounds are points"
CASES: list[Case] = [
    # -- shard_key_pattern_test.cpp: extractShardKeyFromQuery -------------------------------
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"a": 10}, "T"),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"a": 10, "b": "20"}, "T"),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"a": {"b": 10}, "c": 30}, "T"),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"a": 10, "b": {"$gt": 20}}, "T"),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"a": {"$gt": 10}}, "G"),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"a": 10, "b": {"$invalid": "20"}}, "E:T", note="unknown operator"),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"a": {"$eq": [10, 20]}, "c": 30}, "T", note=EXTRACTED + " ([10, 20] and 10)"),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"a": {"$eq": 10}}, "T"),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"$or": [{"a": {"$eq": 10}}]}, "T"),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"$and": [{"a": {"$eq": 10}}, {"b": "20"}]}, "T"),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"a": {"$all": [10]}}, "T"),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"$or": [{"a": {"$eq": 10}}, {"a": 10}]}, "T", note=EXTRACTED),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"$and": [{"a": 10}, {"a": 10}]}, "T", note=EXTRACTED),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"a": {"$all": [10, 10]}}, "T", note=EXTRACTED),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"$or": [{"a": {"$eq": 10}}, {"b": "20"}]}, "G"),
    Case(s("ExtractQueryShardKeySingle"), "k.single", {"a": Regex("abc"), "b": "20"}, "G"),
    Case(s("ExtractQueryShardKeyCompound"), "k.compound", {"a": 10, "b": "20"}, "T"),
    Case(s("ExtractQueryShardKeyCompound"), "k.compound", {"a": 10, "b": "20", "c": 30}, "T"),
    Case(s("ExtractQueryShardKeyCompound"), "k.compound", {"c": 30, "b": "20", "a": 10}, "T"),
    Case(s("ExtractQueryShardKeyCompound"), "k.compound", {"a": 10, "b": [1, 2]}, "T", note=EXTRACTED + " (b: [1, 2] and 1)"),
    Case(s("ExtractQueryShardKeyCompound"), "k.compound", {"a": 10, "b": {"$invalid": True}}, "E:G", note="unknown operator"),
    Case(s("ExtractQueryShardKeyCompound"), "k.compound", {"b": 20}, "G"),
    Case(s("ExtractQueryShardKeyCompound"), "k.compound", {"": 10, "b": "20"}, "G"),
    Case(s("ExtractQueryShardKeyCompound"), "k.compound", {"a": {"$eq": 10}, "b": {"$all": ["20"]}}, "T"),
    Case(s("ExtractQueryShardKeyCompound"), "k.compound", {"$and": [{"a": {"$eq": 10}, "b": {"$eq": "20"}}]}, "T"),
    Case(s("ExtractQueryShardKeyCompound"), "k.compound", {"$and": [{"a": {"$eq": 10}}, {"b": {"$eq": "20"}}]}, "T"),
    Case(s("ExtractQueryShardKeyCompound"), "k.compound", {"a": 10, "b": {"$gt": 20}}, "G"),
    Case(s("ExtractQueryShardKeyCompound"), "k.compound", {"$or": [{"a": {"$eq": 10}}, {"b": "20"}]}, "G"),
    Case(s("ExtractQueryShardKeyCompound"), "k.compound", {"b": 20, "a": 10}, "T"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"a": {"b": 10}, "c": 30}, "T"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"a.b": {"$eq": 10}, "c": 30, "d": 40}, "T"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"$or": [{"a.b": 10, "c": 30, "d": 40}]}, "T"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"a.b": {"$all": [10]}, "c": 30, "d": 40}, "T"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"a": {"b": 10, "d": 40}, "c": 30}, "T"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"$and": [{"a.b": {"$eq": 10}}, {"c": 30}]}, "T"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"a": {"b": {"$eq": 10}}, "c": 30}, "G"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"$and": [{"a": {"b": {"$eq": 10}}}, {"c": 30}]}, "G"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"$or": [{"a": {"b": {"$eq": 10}}}, {"c": 30}]}, "G"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"a": 10, "c": 30}, "G"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"a": {"b": 10}, "c": {"$gt": 30}}, "G"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"a": {"d": 40}, "c": 30}, "G", note="the sub-field is missing"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"a": [{"b": 10}, {"b": 20}], "c": 30}, "G"),
    Case(s("ExtractQueryShardKeyNested"), "k.nested", {"a": {"b": {"$eq": [10, 20]}}, "c": 30}, "G"),
    Case(s("ExtractQueryShardKeyDeepNested"), "k.deep", {"a": {"b": {"c": 10}}}, "T"),
    Case(s("ExtractQueryShardKeyDeepNested"), "k.deep", {"a.b.c": 10}, "T"),
    Case(s("ExtractQueryShardKeyDeepNested"), "k.deep", {"a.b.c": {"$eq": 10}}, "T"),
    Case(s("ExtractQueryShardKeyDeepNested"), "k.deep", {"a.b.c": [10]}, "T", note=EXTRACTED + " ([10] and 10)"),
    Case(s("ExtractQueryShardKeyDeepNested"), "k.deep", {"a.b": [{"c": 10}]}, "G"),
    Case(s("ExtractQueryShardKeyDeepNested"), "k.deep", {"a": [{"b": {"c": 10}}]}, "G"),
    Case(s("ExtractQueryShardKeyDeepNested"), "k.deep", {"a": {"b": [{"c": 10}]}}, "G"),
    Case(s("ExtractQueryShardKeyDeepNested"), "k.deep", {"a": {"b": {"c": [10, 20]}}}, "G"),
    Case(s("ExtractQueryShardKeyDeepNested"), "k.deep", {"a": {"b": [{"c": 10}, {"c": 20}]}}, "G"),
    Case(s("ExtractQueryShardKeyDeepNested"), "k.deep", {"a": [{"b": {"c": 10}}, {"b": {"c": 20}}]}, "G"),
    Case(s("ExtractQueryShardKeyDeepNested"), "k.deep", {"a": [{"b": [{"c": 10}, {"c": 20}]}, {"b": [{"c": 30}, {"c": 40}]}]}, "G"),
    Case(s("ExtractQueryShardKeyWithNumericFieldNames"), "k.numeric", {"a": {"0": {"0": 10}}}, "T"),
    Case(s("ExtractQueryShardKeyWithNumericFieldNames"), "k.numeric", {"a.0.0": 10}, "T"),
    Case(s("ExtractQueryShardKeyWithNumericFieldNames"), "k.numeric", {"a.0.0": {"$eq": 10}}, "T"),
    Case(s("ExtractQueryShardKeyWithNumericFieldNames"), "k.numeric", {"a.0": {"0": "value"}}, "T"),
    Case(s("ExtractQueryShardKeyWithNumericFieldNames"), "k.numeric", {"a.0.0": [10]}, "T", note=EXTRACTED),
    Case(s("ExtractQueryShardKeyWithNumericFieldNames"), "k.numeric", {"a.0": [{"0": 10}]}, "G"),
    Case(s("ExtractQueryShardKeyWithNumericFieldNames"), "k.numeric", {"a": [{"0": {"0": 10}}]}, "G"),
    Case(s("ExtractQueryShardKeyWithNumericFieldNames"), "k.numeric", {"a": {"0": [{"0": 10}]}}, "G"),
    Case(s("ExtractQueryShardKeyWithNumericFieldNames"), "k.numeric", {"a.0": {"0": ["value"]}}, "G"),
    Case(s("ExtractQueryShardKeyWithNumericFieldNames"), "k.numeric", {"a": {"0": {"2": ["value"]}}}, "G"),
    Case(s("ExtractQueryShardKeyWithNumericFieldNames"), "k.numeric", {"a.0": {"2": ["value"]}}, "G"),
    Case(s("ExtractQueryShardKeyWithNumericFieldNames"), "k.numeric", {}, "G"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed", {"a.b": "12345"}, "T"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed", {"a": {"b": "12345"}}, "T"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed", {"a.b": {"$eq": "12345"}}, "T"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed", {"a": {"b": "12345"}, "c": 30}, "T"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed", {"a": {"c": 30, "b": "12345"}}, "T"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed", {"$and": [{"a.b": {"$eq": "12345"}}]}, "T"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed", {"a": {"b": {"$eq": "12345"}}}, "G"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed", {"a.b": {"$gt": "12345"}}, "G"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed", {"a": {"c": "12345"}}, "G", note="the sub-field is missing"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed", {"a": {"b": ["12345"]}}, "G"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed", {"a": [{"b": "12345"}]}, "G"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed_range", {"a.b": "12345", "c.d": "12345"}, "T"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed_range", {"a": {"b": "12345", "p": 1}, "c": {"d": "12345", "q": 2}}, "T"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed_range", {"a.b": "12345"}, "G"),
    Case(s("ExtractQueryShardKeyHashed"), "k.hashed_range", {"a.b": [10], "c.d": 1}, "G"),
    # -- chunk_manager_query_test.cpp: getShardIdsForQuery and QueryTargetingInfo ------------
    Case(q("EmptyQuerySingleShard"), "k.single", {}, "G", "G"),
    Case(q("UniversalRangeMultiShard"), "k.single", {"b": 1}, "G", "G"),
    Case(q("EqualityRangeSingleShard"), "k.single", {"a": "x"}, "T", "T"),
    Case(q("EqualityRangeMultiShard"), "k.single", {"a": "y"}, "T", "T"),
    Case(q("SetRangeMultiShard"), "k.single", {"a": {"$in": ["u", "y"]}}, "T", "T"),
    Case(q("GTRangeMultiShard"), "k.single", {"a": {"$gt": "x"}}, "G", "T"),
    Case(q("GTERangeMultiShard"), "k.single", {"a": {"$gte": "x"}}, "G", "T"),
    Case(q("LTRangeMultiShard"), "k.single", {"a": {"$lt": "y"}}, "G", "T"),
    Case(q("LTERangeMultiShard"), "k.single", {"a": {"$lte": "y"}}, "G", "T"),
    Case(q("OrEqualities"), "k.single", {"$or": [{"a": "u"}, {"a": "y"}]}, "T", "T"),
    Case(q("OrEqualityInequality"), "k.single", {"$or": [{"a": "u"}, {"a": {"$gte": "y"}}]}, "G", "T"),
    Case(q("OrEqualityInequalityUnhelpful"), "k.single", {"$or": [{"a": "u"}, {"a": {"$gte": "zz"}}, {}]}, "G", "G"),
    Case(q("UnsatisfiableRangeSingleShard"), "k.single", {"a": {"$gt": "x", "$lt": "x"}}, "T", "T"),
    Case(q("EqualityThenUnsatisfiable"), "k.compound", {"a": 1, "b": {"$gt": 4, "$lt": 4}}, "T", "T"),
    Case(q("InequalityThenUnsatisfiable"), "k.compound", {"a": {"$gt": 1}, "b": {"$gt": 4, "$lt": 4}}, "T", "T"),
    Case(
        q("OrEqualityUnsatisfiableInequality"), "k.single",
        {"$or": [{"a": "x"}, {"a": {"$gt": "u", "$lt": "u"}}, {"a": {"$gte": "y"}}]}, "G", "T",
    ),
    Case(
        q("InMultiShard"), "k.compound", {"a": {"$in": [0, 5, 10]}, "b": {"$in": [0, 5, 25]}}, "G", "T",
        note="flattenBounds makes b a range after the multi-point a",
    ),
    Case(q("CollationStringsMultiShard"), "k.single", {"a": "y"}, "G", "G", collation=NONSIMPLE),
    Case(q("DefaultCollationStringsMultiShard"), "k.single_nonsimple", {"a": "y"}, "G", "G", collation=NONSIMPLE),
    Case(q("DefaultCollationStringsMultiShard"), "k.single_nonsimple", {"a": "y"}, "G", "G", note="the default alone"),
    Case(q("SimpleCollationStringsMultiShard"), "k.single_nonsimple", {"a": "y"}, "T", "T", collation=SIMPLE),
    Case(q("CollationNumbersMultiShard"), "k.single_nonsimple", {"a": 5}, "T", "T", collation=NONSIMPLE),
    Case(q("DefaultCollationNumbersMultiShard"), "k.single_nonsimple", {"a": 5}, "T", "T"),
    Case(q("SimpleCollationNumbersMultiShard"), "k.single_nonsimple", {"a": 5}, "T", "T", collation=SIMPLE),
    # -- collection_routing_info_targeter_test.cpp: targetUpdate / targetDelete --------------
    Case(f"{CRI} TargetUpdateWithRangePrefixHashedShardKey", "k.range_hashed", {"_id": 1}, "G", note="op-style by _id: all shards"),
    Case(f"{CRI} TargetUpdateWithRangePrefixHashedShardKey", "k.range_hashed", {"a.b": 100, "c.d": "val"}, "T"),
    Case(f"{CRI} TargetUpdateWithHashedPrefixHashedShardKey", "k.hashed_range", {"a": {"b": 7}, "c": {"d": 10}}, "T"),
    Case(f"{CRI} TargetUpdateWithHashedPrefixHashedShardKey", "k.hashed_range", {"a.b": {"$gt": 101}}, "G"),
    Case(f"{CRI} TargetDeleteWithExactId", "k.single", {"_id": 68755000}, "G", note="every chunk"),
    Case(f"{CRI} TargetDeleteWithRangePrefixHashedShardKey", "k.range_hashed", {"a.b": {"$gt": 0}}, "G"),
    Case(f"{CRI} TargetDeleteWithRangePrefixHashedShardKey", "k.range_hashed", {"k": 0}, "G"),
    Case(f"{CRI} TargetDeleteWithRangePrefixHashedShardKey", "k.range_hashed", {"a.b": -101, "c.d": 5}, "T"),
    Case(f"{CRI} TargetDeleteWithRangePrefixHashedShardKey", "k.range_hashed", {"a.b": MinKey(), "c.d": 4}, "T"),
    Case(f"{CRI} TargetDeleteWithRangePrefixHashedShardKey", "k.range_hashed", {"a.b": 0, "c.d": 5}, "T"),
    Case(f"{CRI} TargetDeleteWithHashedPrefixHashedShardKey", "k.hashed_range", {"a": {"b": 3}, "c": {"d": 10}}, "T"),
    Case(f"{CRI} TargetDeleteWithHashedPrefixHashedShardKey", "k.hashed_range", {"a.b": {"$gt": 101}}, "G"),
    # -- write_without_shard_key_util_test.cpp: useTwoPhaseProtocol ---------------------------
    Case(f"{WWSK} WriteQueryContainingFullShardKeyCanTargetSingleDocument", "w.ab", {"a": 1, "b": 1}, "T"),
    Case(f"{WWSK} WriteQueryContainingPartialShardKeyCannotTargetSingleDocument", "w.ab", {"a": 1}, "G"),
    Case(f"{WWSK} WriteQueryWithoutShardKeyOrUnderscoreIdCannotTargetSingleDocument", "w.ab", {"x": 1}, "G"),
    Case(f"{WWSK} FindAndModifyQueryWithOnlyIdMustUseTwoPhaseProtocol", "w.ab", {"_id": 1}, "G"),
    Case(
        f"{WWSK} WriteQueryWithFullShardKeyAndCollationWithCollatableTypesUsesTwoPhaseProtocol", "w.ab",
        {"a": "a", "b": "b"}, "G", collation=NONSIMPLE,
    ),
    Case(
        f"{WWSK} WriteQueryWithFullShardKeyAndCollationWithoutCollatableTypesDoesNotUseTwoPhaseProtocol", "w.ab",
        {"a": 1, "b": 1}, "T", collation=NONSIMPLE,
    ),
    Case(f"{WWSK} WriteQueryWithOnlyIdThatIsNotADirectEqualityUsesTwoPhaseProtocol", "w.ab", {"_id": {"$gt": 1}}, "G"),
    # -- analyze_shard_key_read_write_distribution_test.cpp: reads and writes ---------------
    Case(a("ReadDistributionFilterByShardKeyEqualityTest.ShardKeyEqualityOrdered"), "rw.range0", {"a.x": -100, "b.y": "A"}, "T", "T"),
    Case(a("ReadDistributionFilterByShardKeyEqualityTest.ShardKeyEqualityOrdered"), "rw.range0", {"a": {"x": 0}, "b.y": "A"}, "T", "T"),
    Case(a("ReadDistributionFilterByShardKeyEqualityTest.ShardKeyEqualityOrdered"), "rw.range0", {"a": {"x": 0}, "b": {"y": "A"}}, "T", "T"),
    Case(a("ReadDistributionFilterByShardKeyEqualityTest.ShardKeyEqualityNotOrdered"), "rw.range0", {"b.y": "A", "a.x": 0}, "T", "T"),
    Case(a("ReadDistributionFilterByShardKeyEqualityTest.ShardKeyEqualityEveryFieldIsNull"), "rw.range0", {"a.x": None, "b.y": None}, "T", "T"),
    Case(a("ReadDistributionFilterByShardKeyEqualityTest.ShardKeyEqualityPrefixFieldIsNull"), "rw.range0", {"a.x": None, "b.y": "A"}, "T", "T"),
    Case(a("ReadDistributionFilterByShardKeyEqualityTest.ShardKeyEqualitySuffixFieldIsNull"), "rw.range0", {"a.x": 0, "b.y": None}, "T", "T"),
    Case(a("ReadDistributionFilterByShardKeyEqualityTest.ShardKeyEqualityAdditionalFields"), "rw.range0", {"_id": 0, "a.x": 100, "b.y": "A"}, "T", "T"),
    *[
        Case(a(f"{kind}DistributionFilterByShardKeyEqualityTest.ShardKeyEqualityNonSimpleCollation_ShardKeyContainsCollatableFields"),
             ns, {"a.x": -100, "b.y": "A"}, "G", "T", collation=coll, note=why)
        for kind in ("Read", "Write")
        for ns, coll, why in (
            ("rw.range0_ci", None, "non-simple default, no collation given"),
            ("rw.range0_simple", CI, "simple default, non-simple collation given"),
            ("rw.range0", CI, "no default, non-simple collation given"),
            ("rw.hashed0_ci", None, "hashed; non-simple default, no collation given"),
            ("rw.hashed0_simple", CI, "hashed; simple default, non-simple collation given"),
            ("rw.hashed0", CI, "hashed; no default, non-simple collation given"),
        )
    ],
    *[
        Case(a(f"{kind}DistributionFilterByShardKeyEqualityTest.ShardKeyEqualityNonSimpleCollation_ShardKeyDoesNotContainCollatableFields"),
             ns, {"a.x": -100, "b.y": 0}, "T", "T", collation=coll)
        for kind in ("Read", "Write")
        for ns, coll in (("rw.range0_ci", None), ("rw.range0_simple", CI), ("rw.range0", CI))
    ],
    *[
        Case(a(f"{kind}DistributionFilterByShardKeyEqualityTest.ShardKeyEqualitySimpleCollation"),
             ns, {"a.x": -100, "b.y": "A"}, "T", "T", collation=coll)
        for kind in ("Read", "Write")
        for ns, coll in (("rw.range0_simple", None), ("rw.range0_ci", SIMPLE), ("rw.range0", SIMPLE), ("rw.range0", None))
    ],
    Case(a("ReadDistributionFilterByShardKeyEqualityTest.ShardKeyEqualityHashed"), "rw.hashed2", {"a": -100}, "T", "T"),
    Case(
        a("ReadDistributionFilterByShardKeyEqualityTest.ShardKeyEqualityExpressionWithLetParameters"), "rw.range0",
        {"$expr": {"$and": [{"$eq": ["$a.x", "$$value"]}, {"$eq": ["$b.y", "A"]}]}}, "T", "T", let={"value": 100},
    ),
    Case(a("ReadDistributionFilterByShardKeyRangeTest.ShardKeyPrefixEqualityDotted"), "rw.range0", {"a.x": 0}, "G", "T"),
    Case(a("ReadDistributionFilterByShardKeyRangeTest.ShardKeyPrefixEqualityNotDotted"), "rw.range1", {"a": {"x": 0}}, "G", "T"),
    Case(a("ReadDistributionFilterByShardKeyRangeTest.ShardKeyPrefixRangeMinKey"), "rw.range0", {"a.x": {"$lt": 1}}, "G", "T"),
    Case(a("ReadDistributionFilterByShardKeyRangeTest.ShardKeyPrefixRangeMaxKey"), "rw.range0", {"a.x": {"$gte": 2}}, "G", "T"),
    Case(a("ReadDistributionFilterByShardKeyRangeTest.ShardKeyPrefixRangeNoMinOrMaxKey"), "rw.range0", {"a.x": {"$gte": -3, "$lt": 3}}, "G", "T"),
    Case(
        a("ReadDistributionFilterByShardKeyRangeTest.FullShardKeyRange"), "rw.range0",
        {"a.x": {"$gte": -4, "$lt": 4}, "b.y": {"$gte": "A", "$lt": "Z"}}, "G", "T",
    ),
    Case(
        a("ReadDistributionFilterByShardKeyRangeTest.ShardKeyNonEquality"), "rw.range0", {"a.x": {"$ne": 5}}, "G", "G",
        note="mongos: multi-shard (two ranges); prefix mode counts no negation",
    ),
    Case(a("ReadDistributionFilterByShardKeyRangeTest.ShardKeyRangeHashed"), "rw.hashed2", {"a": {"$gte": -100}}, "G", "G"),
    Case(a("ReadDistributionNotFilterByShardKeyTest.ShardKeySuffixEquality"), "rw.range0", {"b.y": "A"}, "G", "G"),
    Case(a("ReadDistributionNotFilterByShardKeyTest.NoShardKey"), "rw.range0", {"_id": 1}, "G", "G"),
    Case(a("ReadDistributionNotFilterByShardKeyTest.ShardKeyPrefixEqualityNotDotted"), "rw.range0", {"a": {"x": 0}}, "G", "G"),
    Case(a("ReadDistributionNotFilterByShardKeyTest.ShardKeyPrefixEqualityDotted"), "rw.range1", {"a.x": 0}, "G", "G"),
    Case(
        a("ReadDistributionNotFilterByShardKeyTest.RuntimeConstants"), "rw.range0",
        {"$expr": {"$and": [{"$eq": ["$ts", "$$NOW"]}, {"$eq": ["$clusterTime", "$$CLUSTER_TIME"]}]}}, "G", "G",
    ),
]

READS = ("find", "count", "distinct", "aggregate")
WRITES = ("update", "updateMany", "bulkUpdate", "delete", "deleteMany", "bulkDelete", "findAndModify")


def body(form: str, ns: str, filt: Any, collation: Any = None, let: Any = None, update: Any = None) -> dict[str, Any]:
    """The command ``form`` with ``filt`` as its query (and ``collation``, ``let`` where given)."""
    db, coll = ns.split(".", 1)
    extra = {"collation": collation} if collation is not None else {}
    mods = update if update is not None else {"$set": {"z": 1}}
    commands: dict[str, dict[str, Any]] = {
        "find": {"find": coll, "filter": filt, **extra},
        "count": {"count": coll, "query": filt, **extra},
        "distinct": {"distinct": coll, "key": "z", "query": filt, **extra},
        "aggregate": {"aggregate": coll, "pipeline": [{"$match": filt}], "cursor": {}, **extra},
        "update": {"update": coll, "updates": [{"q": filt, "u": mods, **extra}]},
        "updateMany": {"update": coll, "updates": [{"q": filt, "u": mods, "multi": True, **extra}]},
        "delete": {"delete": coll, "deletes": [{"q": filt, "limit": 1, **extra}]},
        "deleteMany": {"delete": coll, "deletes": [{"q": filt, "limit": 0, **extra}]},
        "findAndModify": {"findAndModify": coll, "query": filt, "update": mods, **extra},
        "bulkUpdate": {"bulkWrite": 1, "ops": [{"update": 0, "filter": filt, "updateMods": mods, **extra}], "nsInfo": [{"ns": ns}]},
        "bulkDelete": {"bulkWrite": 1, "ops": [{"delete": 0, "filter": filt, **extra}], "nsInfo": [{"ns": ns}]},
    }
    out = commands[form]
    if let is not None:
        out["let"] = let
    out["$db"] = "admin" if form.startswith("bulk") else db
    return out


def assert_verdict(verdict: Verdict, expected: str, why: str) -> None:
    expected = expected.removeprefix("E:")
    if expected == "G":
        assert verdict.refusal is not None, f"mongos does not target it, the proxy allowed it: {why}"
        assert verdict.refusal.rule == "global_query" and verdict.refusal.code == 29001, verdict.refusal
    else:
        assert verdict.allowed, f"mongos targets it ({expected}), the proxy refused it: {why}: {verdict.refusal}"


def _forms(case: Case) -> tuple[str, ...]:
    return (READS[0], READS[3]) + WRITES if case.let is not None else READS + WRITES


PARAMS = [
    pytest.param(case, form, id=f"{case.source.rsplit(' ', 1)[1]}-{case.ns}-{i}-{form}")
    for i, case in enumerate(CASES)
    for form in _forms(case)
]


@pytest.mark.parametrize(("case", "form"), PARAMS)
def test_full_targeting_is_mongos(case: Case, form: str) -> None:
    verdict = run(ENGINES["full"], body(form, case.ns, case.filter, case.collation, case.let))
    assert_verdict(verdict, case.full, f"{case.source} {case.filter} {case.note}")


PREFIX_PARAMS = [pytest.param(c, id=f"{c.source.rsplit(' ', 1)[1]}-{c.ns}-{i}") for i, c in enumerate(CASES) if c.prefix]


@pytest.mark.parametrize("case", PREFIX_PARAMS)
def test_prefix_targeting_is_mongos_not_scatter_gather(case: Case) -> None:
    """``targeting: prefix`` accepts mongos' single-shard and multi-shard queries, not its scatter-gather ones."""
    assert case.prefix is not None
    for form in _forms(case):
        verdict = run(ENGINES["prefix"], body(form, case.ns, case.filter, case.collation, case.let))
        assert_verdict(verdict, case.prefix, f"{case.source} {case.filter} {case.note} ({form})")


# -- replacement updates: routed by the replacement document when the filter is an exact _id ----

REPLACE = {"a": {"x": 0}, "b": {"y": "A"}, "c": 0}


@dataclass(frozen=True)
class Replacement:
    source: str
    ns: str
    query: dict[str, Any]
    replacement: dict[str, Any]
    upsert: bool
    full: str
    collation: dict[str, Any] | None = None


REPLACEMENTS: list[Replacement] = [
    Replacement(f"{CRI} TargetUpdateWithRangePrefixHashedShardKey", "k.range_hashed", {"_id": 1}, {"p": 111}, False, "T"),
    Replacement(a("WriteDistributionFilterByShardKeyRangeReplacementUpdateTest.NotUpsert"), "rw.range0",
                {"a.x": {"$lt": 0}, "_id": 0}, REPLACE, False, "T"),
    Replacement(a("WriteDistributionFilterByShardKeyRangeReplacementUpdateTest.NotUpsertEveryFieldIsNull"), "rw.range0",
                {"a.x": {"$lt": 0}, "_id": 0}, {"a": {"x": 0}}, False, "T"),
    Replacement(a("WriteDistributionFilterByShardKeyRangeReplacementUpdateTest.NotUpsertPrefixFieldIsNull"), "rw.range0",
                {"a.x": {"$lt": 0}, "_id": 0}, {"b": {"y": "A"}}, False, "T"),
    Replacement(a("WriteDistributionFilterByShardKeyRangeReplacementUpdateTest.NotUpsertSuffixFieldIsNull"), "rw.range0",
                {"a.x": {"$lt": 0}, "_id": 0}, {"a": {"x": 0}}, False, "T"),
    Replacement(a("WriteDistributionFilterByShardKeyRangeReplacementUpdateTest.NonUpsertNotExactIdQuery"), "rw.range0",
                {"a.x": {"$lt": 0}}, REPLACE, False, "G"),
    Replacement(a("WriteDistributionFilterByShardKeyRangeReplacementUpdateTest.NonUpsertNotExactIdQuery"), "rw.range0",
                {"a.x": {"$lt": 0}, "_id": {"$lt": 0}}, REPLACE, False, "G"),
    Replacement(a("WriteDistributionFilterByShardKeyRangeReplacementUpdateTest.NonUpsertNotExactIdQuery"), "rw.range0",
                {"a.x": {"$lt": 0}, "_id": "0"}, REPLACE, False, "G", CI),
    Replacement(a("WriteDistributionFilterByShardKeyRangeReplacementUpdateTest.Upsert"), "rw.range0",
                {"a.x": {"$lt": 0}}, REPLACE, True, "G"),
    Replacement(a("WriteDistributionNotFilterByShardKeyReplacementUpdateTest.NotUpsert"), "rw.range0",
                {"_id": 0}, {"_id": 0, **REPLACE}, False, "T"),
    Replacement(a("WriteDistributionNotFilterByShardKeyReplacementUpdateTest.Upsert"), "rw.range0",
                {"_id": 0}, {"_id": 0, **REPLACE}, True, "G"),
    Replacement(f"{WWSK} UpdateAndDeleteQueryContainingUnderscoreIdCanTargetSingleDocument", "w.ab", {"_id": 1}, {"v": 1}, False, "T"),
    Replacement(f"{WWSK} WriteQueryWithOnlyIdAndCollationWithCollatableTypeUsesTwoPhaseProtocol", "w.ab",
                {"_id": "hello"}, {"v": 1}, False, "G", NONSIMPLE),
    Replacement(f"{WWSK} WriteQueryWithOnlyIdAndCollationWithoutCollatableTypeDoesNotUseTwoPhaseProtocol", "w.ab",
                {"_id": 1}, {"v": 1}, False, "T", NONSIMPLE),
    Replacement(f"{WWSK} WriteQueryWithOnlyIdAndUpsertUsesTwoPhaseProtocol", "w.ab", {"_id": {"$eq": 1}}, {"v": 1}, True, "G"),
    Replacement(f"{WWSK} WriteQueryContainingPartialShardKeyAndIdPerformingAnUpsertUsesTwoPhaseProtocol", "w.ab",
                {"a": 1, "_id": {"$eq": 1}}, {"v": 1}, True, "G"),
    Replacement(f"{WWSK} WriteQueryWithOnlyIdThatIsNotADirectEqualityUsesTwoPhaseProtocol", "w.ab",
                {"_id": {"$gt": 1}}, {"v": 1}, False, "G"),
]


def replacement_body(form: str, r: Replacement) -> dict[str, Any]:
    cmd = body(form, r.ns, r.query, r.collation, update=r.replacement)
    statement = cmd["updates"][0] if form == "update" else cmd["ops"][0]
    statement["upsert"] = r.upsert
    return cmd


@pytest.mark.parametrize("form", ["update", "bulkUpdate"])
@pytest.mark.parametrize("r", REPLACEMENTS, ids=[f"{r.source.rsplit(' ', 1)[1]}-{i}" for i, r in enumerate(REPLACEMENTS)])
def test_replacement_routing_is_mongos(r: Replacement, form: str) -> None:
    assert_verdict(run(ENGINES["full"], replacement_body(form, r)), r.full, f"{r.source} {r.query}")


def test_find_and_modify_never_routes_by_its_replacement() -> None:
    """write_without_shard_key_util_test.cpp FindAndModifyQueryWithOnlyIdMustUseTwoPhaseProtocol:
    findAndModify takes the two-phase protocol (a broadcast read) even for an exact _id."""
    cmd = body("findAndModify", "w.ab", {"_id": 1}, update={"v": 1})
    assert_verdict(run(ENGINES["full"], cmd), "G", "findAndModify by _id")


def test_every_source_file_is_represented() -> None:
    sources = {c.source.split(" ")[0] for c in CASES} | {r.source.split(" ")[0] for r in REPLACEMENTS}
    assert sources == {SKP, CMQ, CRI, WWSK, ASK}
    assert len(CASES) + len(REPLACEMENTS) >= 150
