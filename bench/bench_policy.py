"""Microseconds per policy decision (not a timed test; never gates CI).

Run: .venv/bin/python bench/bench_policy.py [--quick]

Prints, for the example config (config/blog.yaml): a find by the full shard
key (targeted, allowed), a find by a shard-key prefix (refused), an insert of
1,000 valid documents checked against the structure, and the same insert on an
undeclared collection (documents never read) as the baseline, with ratios
against a no-op baseline measured in the same run (``Engine.ALLOW_ALL``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scalyproxy.config import load_config  # noqa: E402
from scalyproxy.policy import Command, Engine  # noqa: E402


def per_call_us(fn: Callable[[], object], number: int, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = parser.parse_args()
    number, repeat = (2_000, 3) if args.quick else (50_000, 5)

    engine = Engine.from_config(load_config(ROOT / "config" / "blog.yaml"))
    targeted = Command.from_body({"find": "blog_posts", "filter": {"author": "ann", "title": "Hello"}, "$db": "blog"})
    refused = Command.from_body({"find": "blog_posts", "filter": {"author": "ann"}, "$db": "blog"})
    docs = [
        {
            "author": f"a{i}",
            "title": f"t{i}",
            "body": "text",
            "unique_views": i,
            "comments": [{"author": "b", "comment": "nice", "rank": 3}, {"author": "c", "comment": "ok", "rank": 1}],
        }
        for i in range(1000)
    ]
    insert = Command("insert", "blog", {"insert": "blog_posts", "$db": "blog"}, {"documents": docs})
    insert_undeclared = Command("insert", "blog", {"insert": "other", "$db": "blog"}, {"documents": docs})
    assert engine.decide(targeted).allowed and not engine.decide(refused).allowed
    assert engine.decide(insert).allowed

    baseline = per_call_us(lambda: Engine.ALLOW_ALL.decide(targeted), number, repeat)
    rows = [
        ("baseline: ALLOW_ALL.decide(find)", baseline),
        ("find by full shard key (allowed)", per_call_us(lambda: engine.decide(targeted), number, repeat)),
        ("find by author only (refused)", per_call_us(lambda: engine.decide(refused), number, repeat)),
        ("insert, undeclared namespace (docs untouched)", per_call_us(lambda: engine.decide(insert_undeclared), number, repeat)),
        ("insert of 1,000 validated documents", per_call_us(lambda: engine.decide(insert), max(number // 500, 5), repeat)),
    ]
    print(f"{'case':<48} {'us/decision':>12} {'x baseline':>11}")
    for label, us in rows:
        print(f"{label:<48} {us:>12.2f} {us / baseline:>11.1f}")
    print(f"per validated document: {rows[-1][1] / 1000:.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
