#!/usr/bin/env python3
"""Render the driver compatibility table from the last driver-tier test run.

tests/integration/test_drivers.py writes one entry per driver into
``.cache/driver-results.json``; this script turns that file into a Markdown table.

    python scripts/driver_table.py                      # print the table
    python scripts/driver_table.py --update README.md   # rewrite the marked block (make driver-table)

A test run never rewrites README.md (it changes no tracked file); the table is
regenerated on purpose with ``make driver-table`` after a run of the driver tier.

``--update`` replaces what lies between the lines ``<!-- drivers:begin -->`` and
``<!-- drivers:end -->`` and leaves the rest of the file byte for byte as it was.
Standard library only, so it runs with any Python 3.11.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RESULTS = ROOT / ".cache" / "driver-results.json"
BEGIN, END = "<!-- drivers:begin -->", "<!-- drivers:end -->"

# (check name as the programs report it, column header), in table order
COLUMNS = (
    ("connect", "connect"),
    ("insert", "insert"),
    ("find_shard_key", "find by shard key"),
    ("cursor_getmore", "cursor (getMore)"),
    ("update", "update"),
    ("delete", "delete"),
    ("session", "session"),
    ("transaction", "transaction"),
    ("global_refused", "global query refused"),
    ("global_allowed", "allow marker"),
    ("schema_refused", "schema refused"),
    ("schema_batch_refused", "batch refused whole"),
    ("heartbeats", "heartbeats"),
)
DRIVER_ORDER = ("pymongo-sync", "pymongo-async", "node-mongodb", "mongosh", "go-driver")
PASS, FAIL, MISSING, LIMITED = "✅", "❌", "–", "✅¹"


class TableError(Exception):
    """The results file or the target file cannot be used; the message says why and what to do."""


def load_results(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise TableError(
            f"no driver results at {path}: run "
            "`.venv/bin/python -m pytest tests/integration/test_drivers.py` first"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise TableError(f"{path} is not valid JSON ({exc}): run the driver tests again") from None
    if not isinstance(data, dict) or not isinstance(data.get("drivers"), dict):
        raise TableError(f"{path} has no 'drivers' mapping: run the driver tests again")
    return data


def ordered_keys(drivers: dict[str, Any]) -> list[str]:
    known = [k for k in DRIVER_ORDER if k in drivers]
    return known + sorted(k for k in drivers if k not in DRIVER_ORDER)


def cell(checks: dict[str, dict[str, Any]], name: str) -> str:
    check = checks.get(name)
    if check is None:
        return MISSING
    if not check.get("ok"):
        return FAIL
    return LIMITED if check.get("backend_limit") else PASS


def passed_count(entry: dict[str, Any]) -> str:
    checks = entry.get("checks", [])
    ok = sum(1 for c in checks if c.get("ok"))
    return f"{ok}/{len(COLUMNS)}"


def driver_row(entry: dict[str, Any]) -> str:
    checks = {c.get("check"): c for c in entry.get("checks", [])}
    name = entry.get("driver", "?")
    version = entry.get("version") or "not run"
    cells = [name, f"{version}", entry.get("runtime", ""), passed_count(entry)]
    cells += [cell(checks, check) for check, _ in COLUMNS]
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def footnotes(entries: list[dict[str, Any]]) -> list[str]:
    notes: list[str] = []
    for entry in entries:
        if entry.get("error"):
            notes.append(f"- {entry.get('driver', '?')} did not run: {entry['error']}")
    limits = {c["check"]: c["backend_limit"] for e in entries for c in e.get("checks", []) if c.get("backend_limit")}
    for check, example in sorted(limits.items()):
        notes.append(
            f"- ¹ {check}: {example}; the proxy relayed the server's "
            "error unchanged, nothing was written and the client stayed usable."
        )
    return notes


def run_span(entries: list[dict[str, Any]]) -> str:
    when = sorted(e["ran_at"] for e in entries if e.get("ran_at"))
    if not when:
        return "never"
    return when[0] if when[0] == when[-1] else f"{when[0]} to {when[-1]}"


def render(data: dict[str, Any]) -> str:
    drivers = data["drivers"]
    entries = [drivers[k] for k in ordered_keys(drivers)]
    header = ["Driver", "Version tested", "Runtime", "Passed"] + [title for _, title in COLUMNS]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *(driver_row(e) for e in entries),
    ]
    intro = (
        f"Through scalyproxy to {data.get('backend', 'the test backend')}; last run {run_span(entries)}. "
        f"{PASS} passed, {FAIL} failed, {MISSING} not run. Regenerated with `make driver-table` "
        "(`scripts/driver_table.py`) from `.cache/driver-results.json`, which "
        "`tests/integration/test_drivers.py` writes; see docs/drivers.md for what each check does."
    )
    notes = footnotes(entries)
    return "\n".join([intro, "", *lines, *([""] + notes if notes else [])])


def replace_block(text: str, block: str) -> str:
    """``text`` with the lines between the BEGIN and END markers replaced by ``block``."""
    start, stop = text.find(BEGIN), text.find(END)
    if start < 0 or stop < 0 or stop < start:
        raise TableError(f"markers not found: put a line {BEGIN} and, below it, a line {END} where the table goes")
    if text.find(BEGIN, start + 1) >= 0 or text.find(END, stop + 1) >= 0:
        raise TableError(f"the markers {BEGIN} / {END} appear more than once; keep one pair")
    head = text[: start + len(BEGIN)]
    return f"{head}\n{block.rstrip()}\n{text[stop:]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="results JSON (default: %(default)s)")
    parser.add_argument("--update", type=Path, metavar="FILE", help="rewrite the table between the markers in FILE")
    args = parser.parse_args(argv)
    try:
        table = render(load_results(args.results))
        if args.update is None:
            print(table)
            return 0
        old = args.update.read_text(encoding="utf-8")
        new = replace_block(old, table)
        if new != old:
            args.update.write_text(new, encoding="utf-8")
        print(f"{args.update}: driver table {'updated' if new != old else 'already up to date'}")
        return 0
    except (TableError, OSError) as exc:
        print(f"driver_table: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
