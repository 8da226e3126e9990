"""The mixed workload of the benchmark (``bench.messages.mix_ring``): the share of each kind,
and the verdict the policy gives each kind under the mix config (config/blog.yaml plus one
collection in warn mode), so that the load generator's reply checks expect the right thing."""

from __future__ import annotations

from collections import Counter
from typing import Any

import bson
import pytest

from bench import messages as m
from bench.suite import mix_config_text
from scalyproxy.config import load_config_text
from scalyproxy.policy import Engine
from scalyproxy.wire import command_view, make_frame

ENGINE = Engine.from_config(load_config_text(mix_config_text()))
ALLOWED = ("find", "update", "insert", "delete", "aggregate", "count")


def test_schedule_has_the_shares_and_spreads_them() -> None:
    cycle = m.schedule()
    assert len(cycle) == 100
    assert Counter(cycle) == dict(m.MIX)
    assert dict(m.MIX) == {"find": 50, "update": 15, "insert": 10, "delete": 5, "aggregate": 10, "count": 5,
                           "refused": 3, "warned": 2}
    # evenly spread: no kind other than find twice in a row, find never three times
    runs = [cycle[i] for i in range(100) if cycle[i] == cycle[i - 1]]
    assert set(runs) <= {"find"}
    assert all(not (cycle[i] == cycle[i - 1] == cycle[i - 2] == "find") for i in range(100))


def test_ring_is_the_schedule_repeated_with_fresh_request_ids() -> None:
    ring = m.mix_ring(1000)
    assert Counter(kind for kind, _ in ring) == {k: 10 * w for k, w in m.MIX}
    assert [kind for kind, _ in ring[:100]] == m.schedule()
    assert [int.from_bytes(msg[4:8], "little") for _, msg in ring] == list(range(1, 1001))


def _verdict(message: bytes) -> Any:
    return ENGINE.decide(command_view(make_frame(message)))


@pytest.mark.parametrize("kind", ALLOWED)
def test_the_application_commands_are_allowed_without_warning(kind: str) -> None:
    for i in range(m.SEEDED + 3):
        verdict = _verdict(m.mix_message(kind, i))
        assert verdict.allowed and not verdict.warnings, (kind, i, verdict)


def test_the_global_query_is_refused_with_scaly_global_query() -> None:
    verdict = _verdict(m.mix_message("refused", 4))
    assert verdict.refusal is not None and verdict.refusal.code == 29001
    assert verdict.refusal.message.endswith("Missing fields were title.")


def test_the_warned_query_is_forwarded_with_a_global_query_warning() -> None:
    verdict = _verdict(m.mix_message("warned", 4))
    assert verdict.allowed
    assert [w.rule for w in verdict.warnings] == ["global_query"]


def test_inserted_posts_are_one_kilobyte_and_deleted_by_the_same_keys() -> None:
    inserted = [command_view(make_frame(m.mix_message("insert", i))).sequences["documents"][0]
                for i in range(m.MIX_KEYS)]
    assert all(950 <= len(bson.encode(doc)) <= 1050 for doc in inserted)
    deletes = [command_view(make_frame(m.mix_message("delete", i))).sequences["deletes"][0]
               for i in range(m.MIX_KEYS)]
    assert {(d["author"], d["title"]) for d in inserted} == {(d["q"]["author"], d["q"]["title"]) for d in deletes}
    assert all(d["limit"] == 0 for d in deletes)  # delete_many: every copy the inserts made
