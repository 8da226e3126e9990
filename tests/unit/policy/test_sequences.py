"""Kind-1 sequences a command does not take are refused where the policy governs the
command, and read as body fields (what a server taking them would do) where it does
not; aliases are checked like their names."""

from __future__ import annotations

import pytest

from scalyproxy.config import load_config_text
from scalyproxy.policy import Command, Engine
from tests.unit.policy.conftest import blog_text

GLOBAL = {"author": "a"}


@pytest.mark.parametrize(
    "name,body,sequences",
    [
        ("find", {"find": "blog_posts", "filter": {"author": "a", "title": "t"}}, {"documents": [{"x": 1}]}),
        ("update", {"update": "blog_posts"}, {"Updates": [{"q": {}, "u": {"$set": {"x": 1}}}]}),
        ("insert", {"insert": "blog_posts"}, {"documents": [{"author": "a", "title": "t"}], "extra": [{}]}),
        # an undeclared collection whose pipeline reaches a declared one: governed
        ("aggregate", {"aggregate": "other", "pipeline": [{"$lookup": {"from": "blog_posts", "pipeline": [{"$match": {"author": "a", "title": "t"}}], "as": "x"}}], "cursor": {}}, {"docs": [{}]}),
    ],
)
def test_unexpected_sequence_is_refused_where_the_policy_governs(
    blog_engine: Engine, name: str, body: dict[str, object], sequences: dict[str, list[dict[str, object]]]
) -> None:
    verdict = blog_engine.decide(Command(name, "blog", {**body, "$db": "blog"}, sequences))
    assert verdict.refusal is not None
    assert verdict.refusal.code_name == "ScalyUnsupportedOperation"
    assert "does not take a document sequence" in verdict.refusal.message


@pytest.mark.parametrize(
    "name,body,sequences",
    [
        ("insert", {"insert": "anything_undeclared"}, {"docs": [{"x": 1}]}),
        ("find", {"find": "other", "filter": {}}, {"documents": [{"x": 1}]}),
        ("ping", {"ping": 1}, {"x": [{}]}),
        ("create", {"create": "new_one"}, {"pipeline": [{"$match": {}}]}),
    ],
)
def test_unexpected_sequence_on_an_ungoverned_command_goes_to_the_server(
    blog_engine: Engine, name: str, body: dict[str, object], sequences: dict[str, list[dict[str, object]]]
) -> None:
    """unknown_namespaces: allow and no declared namespace: the server answers the sequence."""
    verdict = blog_engine.decide(Command(name, "blog", {**body, "$db": "blog"}, sequences))
    assert verdict.allowed, verdict.refusal


def test_unexpected_sequence_is_refused_under_deny_or_warn() -> None:
    for mode in ("deny", "warn"):
        engine = Engine.from_config(load_config_text(blog_text().replace("unknown_namespaces: allow", f"unknown_namespaces: {mode}")))
        verdict = engine.decide(Command("ping", "admin", {"ping": 1, "$db": "admin"}, {"x": [{}]}))
        assert verdict.refusal is not None and verdict.refusal.rule == "malformed", mode


@pytest.mark.parametrize(
    "pipeline",
    [
        [{"$lookup": {"from": "blog_posts", "pipeline": [{"$match": GLOBAL}], "as": "x"}}],
        [{"$unionWith": "blog_posts"}],
        [{"$match": {}}, {"$out": "blog_posts"}],
    ],
    ids=["$lookup", "$unionWith", "$out"],
)
def test_a_pipeline_in_a_sequence_is_walked(blog_engine: Engine, pipeline: list[dict[str, object]]) -> None:
    """An aggregate on an undeclared collection whose pipeline comes as a kind-1 sequence:
    read as the body's pipeline, so what it reaches is checked (never forwarded unread)."""
    body = {"aggregate": "other", "cursor": {}, "$db": "blog"}
    verdict = blog_engine.decide(Command("aggregate", "blog", body, {"pipeline": pipeline}))
    assert verdict.refusal is not None
    assert "blog.blog_posts" in verdict.namespaces


@pytest.mark.parametrize(
    "name,sequences",
    [
        ("insert", {"documents": [{"author": "a", "title": "t"}]}),
        ("delete", {"deletes": [{"q": {"author": "a", "title": "t"}, "limit": 1}]}),
    ],
)
def test_expected_sequence_is_accepted(blog_engine: Engine, name: str, sequences: dict[str, list[dict[str, object]]]) -> None:
    verdict = blog_engine.decide(Command(name, "blog", {name: "blog_posts", "$db": "blog"}, sequences))
    assert verdict.allowed, verdict.refusal


def test_datasize_alias_is_the_same_command() -> None:
    cfg = load_config_text(blog_text().replace("deny_commands: []", "deny_commands: [dataSize]"))
    engine = Engine.from_config(cfg)
    for name in ("dataSize", "datasize"):
        verdict = engine.decide(Command(name, "blog", {name: "blog.blog_posts", "$db": "blog"}))
        assert verdict.refusal is not None and verdict.refusal.code_name == "ScalyCommandDenied", name
