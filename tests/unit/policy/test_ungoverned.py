"""Malformed commands the policy does not govern go to the server (issue 15, section 3).

With ``unknown_namespaces: allow``, a command that touches no declared namespace is
forwarded malformed or not, so the client sees the server's own error; where a
declared namespace is touched, or could be hidden by the malformed part, or the
mode is warn/deny, the proxy fails closed as before (rule ``malformed``).
"""

from __future__ import annotations

from typing import Any

import pytest
from bson import Binary

from scalyproxy.config import load_config_text
from scalyproxy.policy import Command, Engine, Verdict
from tests.unit.policy.conftest import blog_text

TARGETED = {"author": "a", "title": "t"}


def run(engine: Engine, body: dict[str, Any]) -> Verdict:
    return engine.decide(Command.from_body(body))


def engine_with(mode: str) -> Engine:
    return Engine.from_config(load_config_text(blog_text().replace("unknown_namespaces: allow", f"unknown_namespaces: {mode}")))


def _deep(levels: int) -> dict[str, Any]:
    stage: dict[str, Any] = {"$match": {}}
    for _ in range(levels):
        stage = {"$facet": {"f": [stage]}}
    return stage


FORWARDED = {
    "aggregate without a pipeline": {"aggregate": "other", "cursor": {}, "$db": "blog"},
    "aggregate with a pipeline that is a document": {"aggregate": "other", "pipeline": {"$match": {}}, "cursor": {}, "$db": "blog"},
    "database aggregate without a pipeline": {"aggregate": 1, "cursor": {}, "$db": "admin"},
    "a stage that is not a document": {"aggregate": "other", "pipeline": [5], "cursor": {}, "$db": "blog"},
    "$lookup from a number": {"aggregate": "other", "pipeline": [{"$lookup": {"from": 5, "as": "x"}}], "cursor": {}, "$db": "blog"},
    "find with a filter that is a string": {"find": "other", "filter": "x", "$db": "blog"},
    "insert with documents that are no array": {"insert": "other", "documents": 5, "$db": "blog"},
    "update with statements that are no documents": {"update": "other", "updates": [1], "$db": "blog"},
    "bulkWrite, undeclared namespaces, an unknown op": {
        "bulkWrite": 1, "ops": [{"replace": 0}], "nsInfo": [{"ns": "blog.other"}], "$db": "admin",
    },
    "bulkWrite, undeclared namespaces, an op out of nsInfo": {
        "bulkWrite": 1, "ops": [{"delete": 3, "filter": {}}], "nsInfo": [{"ns": "blog.other"}], "$db": "admin",
    },
    "bulkWrite, undeclared namespaces, ops no array": {"bulkWrite": 1, "ops": 5, "nsInfo": [{"ns": "blog.other"}], "$db": "admin"},
    "a collection by UUID in an undeclared database": {"find": Binary(b"0" * 16, 4), "filter": {}, "$db": "shop"},
}

REFUSED = {
    "aggregate without a pipeline on a declared collection": {"aggregate": "blog_posts", "cursor": {}, "$db": "blog"},
    "a first stage that is not a document on a declared collection": {"aggregate": "blog_posts", "pipeline": [5], "cursor": {}, "$db": "blog"},
    "find with a filter that is a string on a declared collection": {"find": "blog_posts", "filter": "x", "$db": "blog"},
    "update with a statement that is no document on a declared collection": {"update": "blog_posts", "updates": [1], "$db": "blog"},
    "bulkWrite, a declared namespace, an unknown op": {
        "bulkWrite": 1, "ops": [{"replace": 0}], "nsInfo": [{"ns": "blog.other"}, {"ns": "blog.blog_posts"}], "$db": "admin",
    },
    "bulkWrite, a malformed nsInfo (could hide a declared namespace)": {
        "bulkWrite": 1, "ops": [{"delete": 0, "filter": {}}], "nsInfo": [{"ns": 5}], "$db": "admin",
    },
    "a pipeline nested too deeply to walk (it could hide a declared namespace)": {
        "aggregate": "other", "pipeline": [_deep(20)], "cursor": {}, "$db": "blog",
    },
    "a collection by UUID in a database with declared collections": {"find": Binary(b"0" * 16, 4), "filter": {}, "$db": "blog"},
}


@pytest.mark.parametrize("name", list(FORWARDED))
def test_malformed_and_ungoverned_goes_to_the_server(name: str, blog_engine: Engine) -> None:
    verdict = run(blog_engine, FORWARDED[name])
    assert verdict.allowed, verdict.refusal


@pytest.mark.parametrize("name", list(REFUSED))
def test_malformed_where_the_policy_governs_is_refused(name: str, blog_engine: Engine) -> None:
    verdict = run(blog_engine, REFUSED[name])
    assert verdict.refusal is not None and verdict.refusal.rule == "malformed", name
    assert verdict.refusal.code_name == "ScalyUnsupportedOperation"


@pytest.mark.parametrize("mode", ["warn", "deny"])
def test_under_warn_or_deny_every_namespace_is_governed(mode: str) -> None:
    verdict = run(engine_with(mode), FORWARDED["aggregate without a pipeline"])
    assert verdict.refusal is not None
    assert verdict.refusal.rule == ("unknown_namespace" if mode == "deny" else "malformed")


def test_a_malformed_pipeline_still_reports_the_collection(blog_engine: Engine) -> None:
    assert run(blog_engine, FORWARDED["aggregate without a pipeline"]).namespaces == ("blog.other",)
