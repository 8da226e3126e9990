"""Plain-text tables for ``scalyproxy profile`` and ``scalyproxy whatif``. Pure."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

MAX_SHAPE_CELL: Final = 70


def cell(text: str, width: int = MAX_SHAPE_CELL) -> str:
    return text if len(text) <= width else text[: width - 3] + "..."


def shape_cell(shape: Any) -> str:
    return "-" if shape is None else cell(json.dumps(shape, separators=(",", ":")))


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart, header first."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]]


def _ms(value: Any) -> str:
    return "-" if value is None else f"{value:.3g}"


def format_profile(doc: Mapping[str, Any]) -> str:
    """A ``/profile`` document as a table, most frequent shape first."""
    rows: list[Mapping[str, Any]] = sorted(doc.get("rows") or [], key=lambda r: -int(r.get("count", 0)))
    lines = []
    if rows:
        body = []
        for r in rows:
            latency = r.get("latency") or {}
            outcomes = ", ".join(f"{k} {v}" for k, v in sorted((r.get("outcomes") or {}).items(), key=lambda kv: -kv[1]))
            body.append([str(r.get("count", 0)), outcomes, _ms(latency.get("p50_ms")), _ms(latency.get("p95_ms")),
                         _ms(latency.get("p99_ms")), str(r.get("namespace") or "-"), str(r.get("command") or "-"),
                         cell(str(r.get("app") or "-"), 30), str(r.get("last_seen") or "-"), shape_cell(r.get("shape"))])
        lines += table(["COUNT", "VERDICTS", "P50 MS", "P95 MS", "P99 MS", "NAMESPACE", "COMMAND", "APP",
                        "LAST SEEN", "SHAPE"], body)
    overflow = (doc.get("overflow") or {}).get("count", 0)
    summary = (f"{len(rows)} shape(s), {doc.get('commands', 0)} command(s) since {doc.get('since', '?')} "
               f"(table holds {doc.get('max_shapes', '?')} shapes; {overflow} command(s) in the overflow row)")
    if not rows:
        return f"no command profiled yet: {summary}"
    return "\n".join([*lines, summary])
