"""The C fast path (``_scan.fast_decide``) against the Python engine.

It may only ever allow what the engine allows without a warning, with the very
verdict the engine returns; everything else must be left to the engine (None).
And it must answer the ordinary targeted commands, or it would be useless
(P1 and P2 of docs/benchmarks.md would show it). The generated commands and
configs are in fastpath_cases.py; test_fastpath_commands.py has the examples
of each command the fast path learnt after find and insert."""

from __future__ import annotations

import datetime
from collections import Counter
from typing import Any

import pytest
from bson import SON, Int64, ObjectId, Regex
from bson.binary import Binary
from hypothesis import HealthCheck, given, settings

from bench import messages as m
from scalyproxy.policy import Engine
from scalyproxy.policy.fastpath import COMMANDS, slot
from scalyproxy.wire import command_view, encode_op_msg, make_frame
from scalyproxy.wire.documents import HAVE_SCAN
from tests.unit.policy.fastpath_cases import (
    ENGINES,
    blog_post,
    commands,
    engine_verdict,
    fast_decide,
    fast_of,
    plausible,
)

pytestmark = pytest.mark.skipif(not HAVE_SCAN, reason="the C extension is not built")


@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(commands())
def test_fast_path_allows_only_what_the_engine_allows(case: tuple[str, bytes]) -> None:
    which, message = case
    engine = ENGINES[which]
    fast = fast_decide(message, engine.fast)
    if fast is not None:
        verdict = engine_verdict(engine, message)
        assert verdict is fast, (which, command_view(make_frame(message)).body, verdict)


@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible())
def test_fast_path_agrees_on_plausible_commands(case: tuple[str, str, bytes]) -> None:
    which, _, message = case
    engine = ENGINES[which]
    fast = fast_decide(message, engine.fast)
    if fast is not None:
        assert engine_verdict(engine, message) is fast, (which, command_view(make_frame(message)).body)


#: The least share of plausible commands the fast path must answer, per command (the rest:
#: configs that give the command no slot, namespaces without a shard key, the "one thing off").
MIN_SHARE = 0.2


def test_plausible_traffic_reaches_the_fast_path(capsys: pytest.CaptureFixture[str]) -> None:
    """Each command's plausible form is answered in C a good share of the time (run with -s
    to see the counts); and whenever the engine allows one without warnings, mostly in C."""
    drawn: Counter[str] = Counter()
    fast: Counter[str] = Counter()
    allowed: Counter[str] = Counter()

    @settings(max_examples=3000, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow])  # fmt: skip
    @given(plausible())
    def draw(case: tuple[str, str, bytes]) -> None:
        which, command, message = case
        engine = ENGINES[which]
        answer = fast_decide(message, engine.fast)
        verdict = engine_verdict(engine, message)
        drawn[command] += 1
        fast[command] += answer is not None
        allowed[command] += verdict is not None and verdict.allowed and not verdict.warnings
        if answer is not None:
            assert verdict is answer

    draw()
    with capsys.disabled():
        print()
        for command in COMMANDS:
            print(f"  {command:14} {drawn[command]:5} drawn, {allowed[command]:5} allowed by the engine, "
                  f"{fast[command]:5} answered in C ({fast[command] / drawn[command]:.0%})")  # fmt: skip
    for command in COMMANDS:
        assert fast[command] >= MIN_SHARE * drawn[command], command
        assert fast[command] >= 0.5 * allowed[command], command


BLOG = ENGINES["blog"]
FIND = {"find": "blog_posts", "$db": "blog", "lsid": m.LSID}


@pytest.mark.parametrize(
    "body",
    [
        {**FIND, "filter": {"author": "ann", "title": "t"}},
        {**FIND, "filter": {"title": 1.5, "author": None, "body": {"$gt": 1}}, "limit": 1, "singleBatch": True},
        {**FIND, "filter": {"author": ObjectId(), "title": Int64(3)}, "sort": {"x": 1}, "comment": "anything"},
        {**FIND, "filter": {"author": Binary(b"x", 5), "title": datetime.datetime(2020, 1, 1)}},
    ],
)
def test_targeted_finds_are_decided_in_c(body: dict[str, Any]) -> None:
    verdict = fast_of(BLOG, body)
    assert verdict is not None and verdict.allowed and verdict.namespaces == ("blog.blog_posts",)


@pytest.mark.parametrize(
    "body",
    [
        {**FIND, "filter": {"author": "ann"}},  # refused: the engine explains
        {**FIND},
        {**FIND, "filter": {"author": "ann", "title": {"$eq": "t"}}},  # allowed, but by an operator
        {**FIND, "filter": {"author": "ann", "title": ["t"]}},
        {**FIND, "filter": {"author": "ann", "title": Regex("^t")}},
        {**FIND, "filter": {"author": "ann", "title": {"x": 1}}},
        {**FIND, "filter": {"author": "ann", "title": "t", "$comment": "c"}},
        {**FIND, "filter": {"author": "ann", "title": "t"}, "collation": {"locale": "simple"}},
        {"find": "blog_posts", "filter": {"author": "ann", "title": "t"}, "$db": "other"},  # undeclared
        {"find": "blog_posts", "filter": {"author": "ann", "title": "t"}},  # no $db
        {"FIND": "blog_posts", "filter": {"author": "ann", "title": "t"}, "$db": "blog"},
        {"explain": {"find": "blog_posts", "filter": {"author": "ann", "title": "t"}}, "$db": "blog"},
    ],
)
def test_other_finds_go_to_the_engine(body: dict[str, Any]) -> None:
    assert fast_of(BLOG, body) is None


INSERT = {"insert": "blog_posts", "$db": "blog", "lsid": m.LSID, "ordered": True}


def test_inserts_that_carry_the_key_and_match_are_decided_in_c() -> None:
    assert fast_of(BLOG, INSERT, {"documents": [blog_post(i) for i in range(50)]}) is not None
    assert fast_of(BLOG, {**INSERT, "documents": [blog_post(1), blog_post(2)]}) is not None
    assert fast_decide(m.insert_one(0), BLOG.fast) is not None
    assert fast_decide(m.find_by_key(0), BLOG.fast) is not None


@pytest.mark.parametrize(
    "docs",
    [
        [blog_post(), {"author": "a", "body": "no title"}],
        [blog_post(), {**blog_post(), "unique_views": "many"}],
        [{**blog_post(), "extra": 1}],
        [SON([("$ref", "c"), ("$id", 1), ("author", "a"), ("title", "t")])],
        [],
    ],
)
def test_other_inserts_go_to_the_engine(docs: list[dict[str, Any]]) -> None:
    assert fast_of(BLOG, INSERT, {"documents": docs}) is None


def test_inserts_with_body_and_sequence_or_extra_sections_go_to_the_engine() -> None:
    message = encode_op_msg({**INSERT, "documents": [blog_post()]}, request_id=1, sequences={"documents": [blog_post()]})
    assert fast_decide(message, BLOG.fast) is None
    message = encode_op_msg(INSERT, request_id=1, sequences={"documents": [blog_post()], "updates": [{}]})
    assert fast_decide(message, BLOG.fast) is None


def test_rules_that_need_python_leave_no_slot() -> None:
    read_only = ENGINES["read_only"].fast["blog.blog_posts"]
    for command in ("insert", "update", "delete", "findAndModify"):  # writes are refused
        assert slot(read_only, command) is None
    for command in ("find", "count", "distinct", "aggregate"):
        assert slot(read_only, command) is not None
    deny = ENGINES["deny"].fast["blog.blog_posts"]
    assert [c for c in COMMANDS if slot(deny, c) is not None] == ["delete", "findAndModify", "count", "distinct"]
    more = ENGINES["more"].fast
    keyless = [c for c in COMMANDS if slot(more["t.keyless"], c) is not None]
    assert keyless == ["insert"]  # no shard key: no targeted command
    assert slot(more["t.hashed"], "find") is not None
    assert more["t.second"][-1] is False  # a sort needs the unindexed check
    assert Engine.ALLOW_ALL.fast == {}


@pytest.mark.parametrize("command", COMMANDS)
def test_a_non_simple_default_collation_leaves_queries_to_the_engine(command: str) -> None:
    """A string key value does not target under the collection's French collation: every command
    with a query goes to the engine (an insert has none)."""
    engine = ENGINES["more"]
    assert (slot(engine.fast["t.french"], command) is None) == (command != "insert")
    if command == "find":
        by_string = {"find": "french", "$db": "t", "filter": {"f": "x"}}
        assert fast_of(engine, by_string) is None
        warnings = engine_verdict(engine, encode_op_msg(by_string, request_id=1)).warnings
        assert any(w.rule == "global_query" for w in warnings)  # this config only warns about it


def test_dotted_and_prefix_keys() -> None:
    engine = ENGINES["more"]
    targeted = {"find": "dotted", "$db": "t", "filter": {"a.b": 1, "c": "x"}}
    assert fast_of(engine, targeted) is not None
    assert fast_of(engine, {**targeted, "filter": {"a": {"b": 1}, "c": "x"}}) is None  # Python: a sub-document
    assert fast_of(engine, {"find": "hashed", "$db": "t", "filter": {"h": 5}}) is not None
    dotted = {"insert": "dotted", "$db": "t"}
    assert fast_of(engine, dotted, {"documents": [{"a.b": 1, "c": "x"}]}) is None  # structure: no "a.b"
    assert fast_of(engine, dotted, {"documents": [{"a": {"b": 1}, "c": "x"}]}) is None  # Python walks it
    assert fast_of(engine, {"insert": "offkey", "$db": "t"}, {"documents": [{"no": "key"}]}) is not None  # rules off


def test_bad_tables_are_type_errors() -> None:
    with pytest.raises(TypeError):
        fast_decide(m.find_by_key(0), {"blog.blog_posts": (None,)})
    with pytest.raises(TypeError):
        fast_decide(m.find_by_key(0), {"blog.blog_posts": (None,) * 8 + (("author",), True, None, True)})
    with pytest.raises(TypeError):
        fast_decide(m.find_by_key(0), {"blog.blog_posts": list(BLOG.fast["blog.blog_posts"])})
    with pytest.raises(TypeError):
        fast_decide(m.find_by_key(0), [])
    assert fast_decide(b"\x00" * 10, BLOG.fast) is None
    assert fast_decide(m.find_by_key(0)[:-1], BLOG.fast) is None
