"""``scalyproxy advise``: analyzeShardKey's answers for every candidate key, from the profile.

For each namespace of a profile, the candidates are the current shard key and
each declared index (with ``--config``), the keys the traffic fixes by
equality (:mod:`scalyproxy.evidence.fields`), the keys the proxy sketched, and
those given on the command line. For each candidate:

- the read and write distribution: every profiled shape of the namespace is
  decided by the guard's own engine under a config whose shard key is the
  candidate; the engine's ``read`` and ``write_statement`` checks are where
  each query is routed (:meth:`~scalyproxy.policy.targeting.ShardKey.routing`,
  the targeting code of the ``global_query`` rule), weighted by the commands
  of the row. Names as in MongoDB's ``analyzeShardKey``;
- the key's characteristics from the value sketches
  (:mod:`scalyproxy.evidence.sketches`), when the proxy sketched it;
- the risks and a rank; the best candidate is the recommendation.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from scalyproxy.config.loader import namespace_problem
from scalyproxy.config.model import (
    CollectionConfig,
    IndexConfig,
    PolicyConfig,
    ProxyConfig,
    RulesConfig,
)
from scalyproxy.evidence.fields import READS, keys_of
from scalyproxy.evidence.skeleton import command_of
from scalyproxy.evidence.sketches import KeySketch, key_name
from scalyproxy.evidence.table import ProfileTable
from scalyproxy.evidence.text import table as text_table
from scalyproxy.policy.compiled import CompiledCollection
from scalyproxy.policy.decision import Decision, Statement, key_change, routed_by_replacement
from scalyproxy.policy.engine import Engine
from scalyproxy.policy.model import CommandLike, Verdict
from scalyproxy.policy.targeting import SCATTER, SINGLE, let_variables, nonsimple_collation

WRITES: Final = ("update", "delete", "findAndModify")
LOW_CARDINALITY: Final = 100  # fewer distinct values: at most that many chunks, ever
HOT_VALUE_PERCENT: Final = 5.0  # a value in more documents than this: a chunk that cannot be split
Direction = int | str
KeySpec = tuple[tuple[str, Direction], ...]


class AdviseError(ValueError):
    """Bad input to ``advise`` (a candidate that does not parse...)."""


# -- candidates ----------------------------------------------------------------------


@dataclass
class Candidate:
    namespace: str
    keys: KeySpec
    origins: list[str] = field(default_factory=list)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(p for p, _ in self.keys)

    @property
    def hashed(self) -> bool:
        return any(d == "hashed" for _, d in self.keys)

    @property
    def label(self) -> str:
        return "{" + ", ".join(f"{p}: {d if d == 'hashed' else 1}" for p, d in self.keys) + "}"

    def as_hashed(self) -> Candidate:
        first, *rest = self.keys
        return Candidate(self.namespace, ((first[0], "hashed"), *rest), [*self.origins, "hashed variant"])


def parse_candidate(text: str) -> Candidate:
    """``NS=FIELD[:hashed],FIELD...`` (at most one hashed field, as MongoDB allows)."""
    ns, sep, spec = text.partition("=")
    if not sep or not spec:
        raise AdviseError(f"--candidate {text!r}: expected NS=FIELD[:hashed][,FIELD...], e.g. shop.orders=customer_id")
    problem = namespace_problem(ns)
    if problem:
        raise AdviseError(f"--candidate {text!r}: {problem}")
    keys: list[tuple[str, Direction]] = []
    for part in spec.split(","):
        path, colon, kind = part.strip().partition(":")
        if not path or path.startswith("$") or (colon and kind != "hashed") or path in [p for p, _ in keys]:
            raise AdviseError(f"--candidate {text!r}: bad field {part!r} (FIELD or FIELD:hashed, each once)")
        keys.append((path, "hashed" if colon else 1))
    if sum(d == "hashed" for _, d in keys) > 1:
        raise AdviseError(f"--candidate {text!r}: a shard key has at most one hashed field")
    return Candidate(ns, tuple(keys), ["--candidate"])


def _ranged(fields: Sequence[str]) -> KeySpec:
    return tuple((f, 1) for f in fields)


def candidates_for(namespace: str, profile: ProfileTable, config: ProxyConfig | None,
                   extra: Iterable[Candidate]) -> list[Candidate]:
    """The namespace's candidates, each once, with where it came from."""
    found: dict[KeySpec, Candidate] = {}

    def add(keys: KeySpec, origin: str) -> None:
        entry = found.get(keys)
        if entry is None:
            found[keys] = Candidate(namespace, keys, [origin])
        elif origin not in entry.origins:
            entry.origins.append(origin)

    coll = config.collections.get(namespace) if config is not None else None
    if coll is not None:
        for index in coll.indexes:
            keys = tuple((p, d if d == "hashed" else 1) for p, d in index.keys)
            add(keys, "current shard key" if index.shard_key else f"index {index.name or key_name(index.fields)}")
    if config is not None:
        for key in config.profile.candidates.get(namespace, ()):
            add(_ranged(key), "profile.candidates")
    for row in profile:
        if row.namespace == namespace and row.shape is not None and row.command in (*READS, *WRITES):
            cmd = command_of(row.shape, "")
            for key in keys_of(row.command, cmd.body, cmd.sequences):
                add(_ranged(key), "traffic")
    for (ns, name), _ in profile.sketches:
        if ns == namespace:
            add(_ranged(tuple(name.split(","))), "sketched")
    for candidate in extra:
        if candidate.namespace == namespace:
            for origin in candidate.origins:
                add(candidate.keys, origin)
    return list(found.values())


# -- the distribution: the guard's engine, observed ------------------------------------


class _Observer(Engine):
    """An engine whose read and write checks record where each query would be routed."""

    def __init__(self, cfg: ProxyConfig) -> None:
        super().__init__(cfg)
        self.events: list[tuple[str, int, bool, bool]] = []  # (read|write, routing, key update, single write)
        self._limits: list[Any] = []

    def observe(self, cmd: CommandLike) -> tuple[Verdict, list[tuple[str, int, bool, bool]]]:
        self.events = []
        deletes = cmd.body.get("deletes") or cmd.sequences.get("deletes") or ()
        self._limits = [st.get("limit") if isinstance(st, Mapping) else None for st in deletes]
        verdict = self.decide(cmd)
        return verdict, self.events

    def read(self, d: Decision, cc: CompiledCollection, query: Any, collation: Any, sort: Any = None,
             let: Any = None) -> None:
        if cc.shard_key is None:
            return
        nonsimple = nonsimple_collation(collation, cc.config.collation)
        variables = let_variables(let) if let is not None else None
        self.events.append(("read", cc.shard_key.routing({} if query is None else query, nonsimple, variables),
                            False, False))

    def write_statement(self, d: Decision, cc: CompiledCollection, st: Statement, where: str) -> None:
        key = cc.shard_key
        if key is None:
            return
        if routed_by_replacement(cc, st):
            routing = SINGLE
        else:
            nonsimple = nonsimple_collation(st.collation, cc.config.collation)
            routing = key.routing(st.query, nonsimple, let_variables(st.let) if st.let is not None else None)
        key_update = st.update is not None and bool(key_change(cc, st.query, st.update))
        single = st.one or where == "findAndModify" or self._one_delete(where)
        self.events.append(("write", routing, key_update, single))

    def _one_delete(self, where: str) -> bool:
        kind, _, index = where.partition(".")
        if kind != "deletes" or not index.isdigit() or int(index) >= len(self._limits):
            return False
        return bool(self._limits[int(index)] == 1)


def _config_for(candidate: Candidate, base: ProxyConfig | None) -> ProxyConfig:
    coll = base.collections.get(candidate.namespace) if base is not None else None
    off = RulesConfig(global_query="warn", shard_key_write="warn", schema="off", unindexed_query="off",
                      pipeline_update="off")
    declared = CollectionConfig(candidate.namespace, None, off,
                                (IndexConfig(candidate.keys, shard_key=True),),  # type: ignore[arg-type]
                                collation=coll.collation if coll is not None else None)
    marker = base.policy.allow_marker if base is not None else PolicyConfig().allow_marker
    return ProxyConfig(policy=PolicyConfig(allow_marker=marker), collections={candidate.namespace: declared})


def _percent(part: int, whole: int) -> float:
    return round(100 * part / whole, 2) if whole else 0.0


@dataclass
class Distribution:
    reads: dict[str, int] = field(default_factory=dict)  # sampleSize by command
    writes: dict[str, int] = field(default_factory=dict)
    read_routing: list[int] = field(default_factory=lambda: [0, 0, 0])  # queries by SINGLE, MULTI, SCATTER
    write_routing: list[int] = field(default_factory=lambda: [0, 0, 0])  # statements
    key_updates: int = 0
    single_without_key: int = 0
    scatter_apps: dict[str, int] = field(default_factory=dict)  # scatter-gather reads by appName

    def read_json(self) -> dict[str, Any]:
        return {**_routed(self.reads, READS, self.read_routing, "Reads"),
                "numReadQueries": sum(self.read_routing)}

    def write_json(self) -> dict[str, Any]:
        total = sum(self.write_routing)
        return {**_routed(self.writes, WRITES, self.write_routing, "Writes"),
                "percentageOfShardKeyUpdates": _percent(self.key_updates, total),
                "percentageOfSingleWritesWithoutShardKey": _percent(self.single_without_key, total),
                "numWriteStatements": total}


def _routed(sizes: dict[str, int], commands: Iterable[str], routing: list[int], noun: str) -> dict[str, Any]:
    """``sampleSize`` by command and the three routing percentages, in analyzeShardKey's names
    (``noun``: "Reads" or "Writes")."""
    total = sum(routing)
    single, multi, scatter = routing
    return {
        "sampleSize": {"total": sum(sizes.values()), **{c: sizes.get(c, 0) for c in commands}},
        f"percentageOfSingleShard{noun}": _percent(single, total),
        f"percentageOfMultiShard{noun}": _percent(multi, total),
        f"percentageOfScatterGather{noun}": _percent(scatter, total),
    }


def distribution(profile: ProfileTable, candidate: Candidate, base: ProxyConfig | None) -> Distribution:
    engine = _Observer(_config_for(candidate, base))
    marker = engine.config.policy.allow_marker
    out = Distribution()
    cache: dict[int, list[tuple[str, int, bool, bool]]] = {}
    for row in profile:
        if row.namespace != candidate.namespace or row.shape is None or row.command not in (*READS, *WRITES):
            continue
        events = cache.get(row.shape_id)
        if events is None:
            events = cache[row.shape_id] = engine.observe(command_of(row.shape, marker))[1]
        counts = out.reads if row.command in READS else out.writes
        counts[row.command] = counts.get(row.command, 0) + row.count
        for kind, routing, key_update, single in events:
            if kind == "read":
                out.read_routing[routing] += row.count
                if routing == SCATTER:
                    app = row.app or "-"
                    out.scatter_apps[app] = out.scatter_apps.get(app, 0) + row.count
            else:
                out.write_routing[routing] += row.count
                out.key_updates += row.count if key_update else 0
                out.single_without_key += row.count if single and routing != SINGLE else 0
    return out


# -- characteristics, risks, rank -------------------------------------------------------


def characteristics(sketch: KeySketch | None) -> dict[str, Any] | None:
    if sketch is None or sketch.documents == 0:
        return None
    distinct = sketch.distinct()
    return {
        "numDistinctValues": distinct["estimate"],
        "numDistinctValuesBounds": [distinct["lower"], distinct["upper"]],
        "numDistinctValuesRelativeError": distinct["relative_error"],
        "mostCommonValues": sketch.most_common(),
        "otherValuesAtMostPercentage": sketch.max_error_percentage(),
        "monotonicity": sketch.monotonicity(),
        "numDocsSampled": sketch.documents,
        "numDocsWithoutKey": sketch.missing,
    }


@dataclass
class Assessment:
    candidate: Candidate
    dist: Distribution
    chars: dict[str, Any] | None
    risks: list[str] = field(default_factory=list)
    blocking: bool = False  # a risk that rules the key out (too few values, documents without it)
    rank: int = 0

    @property
    def kind(self) -> str:
        return "hashed" if self.candidate.hashed else "ranged"

    @property
    def targeted(self) -> float:
        """The share (0-100) of read queries and write statements that go to one shard."""
        total = sum(self.dist.read_routing) + sum(self.dist.write_routing)
        return _percent(self.dist.read_routing[SINGLE] + self.dist.write_routing[SINGLE], total)

    @property
    def monotonic(self) -> bool:
        return self.chars is not None and self.chars["monotonicity"]["type"] == "monotonic"

    def as_json(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "key": {p: d for p, d in self.candidate.keys}, "type": self.kind,
            "origins": self.candidate.origins, "readDistribution": self.dist.read_json(),
            "writeDistribution": self.dist.write_json(), "keyCharacteristics": self.chars,
            "percentageOfSingleShardOperations": self.targeted,
            "scatterGatherReadsByApp": dict(sorted(self.dist.scatter_apps.items(), key=lambda kv: -kv[1])),
            "risks": self.risks, "ruledOut": self.blocking,
        }  # fmt: skip


def assess(candidate: Candidate, profile: ProfileTable, base: ProxyConfig | None) -> Assessment:
    sketch = profile.sketches.get(candidate.namespace, key_name(candidate.fields))
    out = Assessment(candidate, distribution(profile, candidate, base), characteristics(sketch))
    _risks(out)
    return out


def _apps(counts: Mapping[str, int], total: int) -> str:
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    return ", ".join(f"{app} ({_percent(n, total)}%)" for app, n in top)


def _risks(a: Assessment) -> None:
    c = a.chars
    if c is None:
        a.risks.append("key characteristics unknown: the proxy sketched no inserted document for this key "
                       "(set profile.salt, name the key in profile.candidates)")
    else:
        if c["numDistinctValues"] < LOW_CARDINALITY:
            a.blocking = True
            a.risks.append(f"too low cardinality: about {c['numDistinctValues']} distinct values, so at most that "
                           "many chunks; the cluster can never spread the data wider")
        top = c["mostCommonValues"][0]["percentage"] if c["mostCommonValues"] else 0.0
        if top > HOT_VALUE_PERCENT:
            a.risks.append(f"a hot value: the most common value is in {top}% of documents; its chunk cannot be split "
                           "(a jumbo chunk) and its shard takes that share of the load")
        if c["numDocsWithoutKey"]:
            a.blocking = True
            a.risks.append(f"{c['numDocsWithoutKey']} of {c['numDocsSampled'] + c['numDocsWithoutKey']} sampled "
                           "documents lack the key (or hold an array on its path): they could not be inserted")
        if a.monotonic and not a.candidate.hashed:
            a.risks.append("monotonic inserts: each new value is the largest, so every insert goes to the shard "
                           "holding the top chunk; hash the key")
    reads = sum(a.dist.read_routing)
    scatter = a.dist.read_routing[SCATTER]
    if scatter:
        a.risks.append(f"{_percent(scatter, reads)}% of reads would remain scatter-gather, sent by "
                       f"{_apps(a.dist.scatter_apps, reads)}")
    if a.dist.key_updates:
        a.risks.append(f"{a.dist.write_json()['percentageOfShardKeyUpdates']}% of writes may change the key "
                       "(a shard-key update moves the document)")


def _order(a: Assessment) -> tuple[Any, ...]:
    ndv = a.chars["numDistinctValues"] if a.chars is not None else -1
    monotonic_ranged = a.monotonic and not a.candidate.hashed
    return (a.blocking, monotonic_ranged, -a.targeted, a.chars is None, -ndv, len(a.candidate.keys),
            a.candidate.hashed)


@dataclass
class NamespaceAdvice:
    namespace: str
    assessments: list[Assessment]

    def recommendation(self) -> str:
        best = self.assessments[0] if self.assessments else None
        if best is None:
            return "no candidate key: no read or write of this namespace was profiled"
        if best.blocking:
            return f"no candidate is fit: the best, {best.candidate.label}, is ruled out ({best.risks[0]})"
        return explain(self.namespace, best)

    def as_json(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "recommendation": self.recommendation(),
                "candidates": [a.as_json() for a in self.assessments]}


def explain(namespace: str, a: Assessment) -> str:
    r, w = a.dist.read_json(), a.dist.write_json()
    writes = (f"{w['percentageOfSingleShardWrites']}% of writes" if w["numWriteStatements"]
              else "no update or delete was profiled")
    parts = [f"shard {namespace} on {a.candidate.label} ({a.kind}): "
             f"{r['percentageOfSingleShardReads']}% of reads go to one shard ({writes})"]
    c = a.chars
    if c is not None:
        low, high = c["numDistinctValuesBounds"]
        parts.append(f"about {c['numDistinctValues']} distinct values ({low} to {high}), {_top_text(c)}, "
                     f"inserts {c['monotonicity']['type']}")
    if a.candidate.hashed and a.monotonic:
        parts.append("hashed because its values grow monotonically (a ranged key would send every insert to one shard)")
    elif a.candidate.hashed:
        parts.append("hashed")
    else:
        parts.append("ranged: its range queries stay multi-shard instead of scatter-gather")
    text = "; ".join(parts) + "."
    if a.risks:
        text += " Risks: " + "; ".join(a.risks) + "."
    return text


def _top_text(c: Mapping[str, Any]) -> str:
    if c["mostCommonValues"]:
        return f"the most common value in {c['mostCommonValues'][0]['percentage']}% of documents"
    return f"no value in more than {c['otherValuesAtMostPercentage']}% of documents"


def _top_cell(c: Mapping[str, Any] | None) -> str:
    if c is None:
        return "-"
    if c["mostCommonValues"]:
        return str(c["mostCommonValues"][0]["percentage"])
    return f"<={c['otherValuesAtMostPercentage']}"


@dataclass
class Advice:
    namespaces: list[NamespaceAdvice]
    salt_mismatches: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"namespaces": [n.as_json() for n in self.namespaces], "sketchSaltMismatches": self.salt_mismatches}


def advise(profile: ProfileTable, config: ProxyConfig | None = None, namespaces: Sequence[str] = (),
           extra: Sequence[Candidate] = ()) -> Advice:
    """The advice for the given namespaces (default: every one with a read or write profiled)."""
    wanted = list(namespaces) or sorted({r.namespace for r in profile if r.namespace is not None
                                         and r.command in (*READS, *WRITES)}
                                        | {c.namespace for c in extra})
    out = Advice([], profile.sketches.salt_mismatches)
    for ns in wanted:
        candidates = candidates_for(ns, profile, config, extra)
        assessments = [assess(c, profile, config) for c in candidates]
        known = {c.keys for c in candidates}
        for a in list(assessments):  # a monotonic ranged key: its hashed variant too
            hashed = a.candidate.as_hashed()
            if a.monotonic and not a.candidate.hashed and hashed.keys not in known:
                known.add(hashed.keys)
                assessments.append(assess(hashed, profile, config))
        assessments.sort(key=_order)
        for i, a in enumerate(assessments, 1):
            a.rank = i
        out.namespaces.append(NamespaceAdvice(ns, assessments))
    return out


# -- text ------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    return "-" if value is None else str(value)


def format_advice(advice: Advice) -> str:
    lines: list[str] = []
    for n in advice.namespaces:
        lines.append(f"== {n.namespace}")
        rows = []
        for a in n.assessments:
            r, w, c = a.dist.read_json(), a.dist.write_json(), a.chars
            rows.append([
                str(a.rank), a.candidate.label, f"{r['percentageOfSingleShardReads']}",
                f"{r['percentageOfMultiShardReads']}", f"{r['percentageOfScatterGatherReads']}",
                f"{w['percentageOfSingleShardWrites']}", f"{w['percentageOfScatterGatherWrites']}",
                _cell(c["numDistinctValues"] if c else None), _top_cell(c),
                c["monotonicity"]["type"] if c else "-", "ruled out" if a.blocking else "",
                ", ".join(a.candidate.origins),
            ])  # fmt: skip
        lines += text_table(["RANK", "KEY", "READ 1", "READ N", "READ ALL", "WRITE 1", "WRITE ALL",
                             "DISTINCT", "TOP %", "MONOTONICITY", "", "FROM"], rows)
        sample = n.assessments[0].dist if n.assessments else Distribution()
        lines.append(f"(percentages of {sum(sample.read_routing)} read queries and {sum(sample.write_routing)} "
                     "write statements: 1 = one shard, N = several, ALL = scatter-gather)")
        lines.append("")
        lines.append("Recommendation: " + n.recommendation())
        for a in n.assessments[1:]:
            if a.risks:
                lines.append(f"  #{a.rank} {a.candidate.label} ({a.kind}): " + "; ".join(a.risks))
        lines.append("")
    if advice.salt_mismatches:
        lines.append(f"{advice.salt_mismatches} sketch(es) made with another profile.salt were left out.")
    if not advice.namespaces:
        lines.append("no namespace to advise on: the profile holds no read or write of a collection")
    return "\n".join(lines).rstrip()
