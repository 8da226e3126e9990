"""Kind-1 sequences a command does not take are refused; aliases are checked like their names."""

from __future__ import annotations

import pytest

from scalyproxy.config import load_config_text
from scalyproxy.policy import Command, Engine
from tests.unit.policy.conftest import blog_text


@pytest.mark.parametrize(
    "name,body,sequences",
    [
        ("find", {"find": "blog_posts", "filter": {"author": "a", "title": "t"}}, {"documents": [{"x": 1}]}),
        ("update", {"update": "blog_posts"}, {"Updates": [{"q": {}, "u": {"$set": {"x": 1}}}]}),
        ("insert", {"insert": "blog_posts"}, {"documents": [{"author": "a", "title": "t"}], "extra": [{}]}),
        ("insert", {"insert": "anything_undeclared"}, {"docs": [{"x": 1}]}),
    ],
)
def test_unexpected_sequence_is_refused(
    blog_engine: Engine, name: str, body: dict[str, object], sequences: dict[str, list[dict[str, object]]]
) -> None:
    verdict = blog_engine.decide(Command(name, "blog", {**body, "$db": "blog"}, sequences))
    assert verdict.refusal is not None
    assert verdict.refusal.code_name == "ScalyUnsupportedOperation"
    assert "does not take a document sequence" in verdict.refusal.message


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
