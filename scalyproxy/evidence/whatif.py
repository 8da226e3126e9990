"""``scalyproxy whatif``: decide every profiled shape again under another config.

Each row of a profile has a skeleton (:mod:`scalyproxy.evidence.skeleton`) and
the outcomes its commands got under the config that ran them. The engine of the
new config decides the skeleton once; every outcome that differs is a change,
counted with the commands that had it. A change is *breaking* when commands
that were allowed or warned would be refused. Totals go by rule and by
application.

Rows without a skeleton (the overflow row) cannot be decided again: their
commands are reported as not re-decided.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scalyproxy.evidence.skeleton import command_of
from scalyproxy.evidence.table import ALLOWED, ProfileTable, Row, outcome_of, shape_hex
from scalyproxy.evidence.text import shape_cell, table
from scalyproxy.policy import Engine, Verdict


@dataclass(frozen=True)
class Change:
    """Commands of one (namespace, command, shape, appName) whose verdict changes."""

    namespace: str | None
    command: str | None
    app: str | None
    shape_id: int
    shape: Mapping[str, Any]
    count: int
    then: str  # an outcome: allowed, warned:<rules>, refused:<rule>
    now: str
    reason: str  # the new verdict's message(s); "" when now allowed

    @property
    def breaking(self) -> bool:
        return not self.then.startswith("refused:") and self.now.startswith("refused:")

    @property
    def rule(self) -> str:
        """The rule(s) of the new verdict, or of the old one when the new one allows."""
        outcome = self.now if self.now != ALLOWED else self.then
        return outcome.partition(":")[2]

    def as_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace, "command": self.command, "app": self.app,
            "shape_id": shape_hex(self.shape_id), "shape": self.shape, "count": self.count,
            "then": self.then, "now": self.now, "rule": self.rule, "reason": self.reason,
            "breaking": self.breaking,
        }  # fmt: skip


@dataclass
class WhatIf:
    changes: list[Change] = field(default_factory=list)
    shapes: int = 0  # rows decided again
    commands: int = 0  # their commands
    not_decided: int = 0  # commands of rows without a skeleton (the overflow row)

    @property
    def breaking(self) -> int:
        return sum(c.count for c in self.changes if c.breaking)

    def totals(self, key: str) -> dict[str, dict[str, int]]:
        """Per rule (``key="rule"``) or per app: changed and breaking commands."""
        out: dict[str, dict[str, int]] = {}
        for c in self.changes:
            name = str(getattr(c, key) or "-")
            entry = out.setdefault(name, {"changed": 0, "breaking": 0})
            entry["changed"] += c.count
            entry["breaking"] += c.count if c.breaking else 0
        return dict(sorted(out.items(), key=lambda kv: (-kv[1]["breaking"], -kv[1]["changed"], kv[0])))

    @property
    def exit_status(self) -> int:
        """0: nothing allowed or warned would be refused; 1: something would."""
        return 1 if self.breaking else 0

    def as_json(self) -> dict[str, Any]:
        return {
            "shapes": self.shapes, "commands": self.commands, "not_decided": self.not_decided,
            "changed": sum(c.count for c in self.changes), "breaking": self.breaking,
            "changes": [c.as_json() for c in self.changes],
            "by_rule": self.totals("rule"), "by_app": self.totals("app"),
        }  # fmt: skip


def reason_of(verdict: Verdict) -> str:
    if verdict.refusal is not None:
        return verdict.refusal.message
    return "; ".join(dict.fromkeys(w.message for w in verdict.warnings))


def decide_row(engine: Engine, row: Row) -> Verdict:
    """The verdict ``engine`` gives the row's skeleton."""
    assert row.shape is not None
    return engine.decide(command_of(row.shape, engine.config.policy.allow_marker))


def what_if(table: ProfileTable, engine: Engine) -> WhatIf:
    result = WhatIf(not_decided=table.overflow.count)
    for row in table:
        if row.shape is None:
            result.not_decided += row.count
            continue
        verdict = decide_row(engine, row)
        now = outcome_of(verdict)
        result.shapes += 1
        result.commands += row.count
        for then, count in row.all_outcomes().items():
            if then != now:
                result.changes.append(Change(row.namespace, row.command, row.app, row.shape_id, row.shape,
                                             count, then, now, reason_of(verdict)))
    result.changes.sort(key=lambda c: (not c.breaking, -c.count, c.namespace or "", c.app or "", c.shape_id))
    return result


# -- the text `scalyproxy whatif` prints ---------------------------------------------


def format_whatif(result: WhatIf, config: str) -> str:
    lines: list[str] = []
    if result.changes:
        rows = [[str(c.count), c.then, c.now, c.namespace or "-", c.command or "-", c.app or "-",
                 shape_cell(c.shape)] for c in result.changes]
        lines += table(["COUNT", "THEN", "NOW", "NAMESPACE", "COMMAND", "APP", "SHAPE"], rows)
        lines.append("")
        lines.append("Reasons:")
        for c in result.changes:
            if c.reason:
                lines.append(f"  {c.namespace or '-'} {c.command or '-'} [{c.app or '-'}] {c.now}: {c.reason}")
        for title, key in (("By rule:", "rule"), ("By application:", "app")):
            lines.append("")
            lines.append(title)
            lines += ["  " + line for line in table(
                ["NAME", "CHANGED", "BREAKING"],
                [[name, str(t["changed"]), str(t["breaking"])] for name, t in result.totals(key).items()])]
        lines.append("")
    changed = sum(c.count for c in result.changes)
    lines.append(
        f"{result.shapes} shape(s), {result.commands} command(s) decided again under {config}: "
        f"{changed} would get another verdict, {result.breaking} that were allowed or warned would be refused."
    )
    if result.not_decided:
        lines.append(f"{result.not_decided} command(s) of the overflow row (no shape kept: profile.max_shapes "
                     "was reached) could not be decided again.")
    return "\n".join(lines)
