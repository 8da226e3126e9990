"""Strict where the verdict reads (issue 15, section 2), decided by the engine on views
the codec builds from raw bytes: a repeated key (or a string that is not UTF-8) in a
part a rule reads for a declared namespace is refused as ScalyProtocolError; the
same part of a command on an undeclared namespace is never read, and forwarded.

config/blog.yaml: blog.blog_posts is declared (shard key author, title; a schema);
blog.other is not, and unknown_namespaces is allow.
"""

from __future__ import annotations

import pytest

from scalyproxy._scan import fast_decide
from scalyproxy.policy import Engine, Verdict
from scalyproxy.wire import ProtocolError, command_view, make_frame
from tests.rawbson import bad, doc, op_msg
from tests.strict_cases import (
    ALWAYS_STRICT,
    DB,
    DECLARED,
    GLOBAL,
    POST,
    READ_WHEN_DECLARED,
    TARGETED,
    TWICE,
    UNDECLARED,
    UNREAD,
)


def decide(engine: Engine, message: bytes) -> Verdict:
    return engine.decide(command_view(make_frame(message)))


@pytest.mark.parametrize("name", list(READ_WHEN_DECLARED))
def test_a_repeat_the_verdict_reads_is_refused(name: str, blog_engine: Engine) -> None:
    verdict = decide(blog_engine, READ_WHEN_DECLARED[name](DECLARED))
    assert verdict.refusal is not None, name
    assert (verdict.refusal.rule, verdict.refusal.code, verdict.refusal.code_name) == ("ambiguous", 29005, "ScalyProtocolError")
    assert "proxy and the server could read it differently" in verdict.refusal.message


@pytest.mark.parametrize("name", list(READ_WHEN_DECLARED))
def test_the_same_repeat_on_an_undeclared_namespace_is_forwarded(name: str, blog_engine: Engine) -> None:
    verdict = decide(blog_engine, READ_WHEN_DECLARED[name](UNDECLARED))
    assert verdict.allowed, verdict.refusal


@pytest.mark.parametrize("name", list(ALWAYS_STRICT))
def test_namespace_fields_and_walked_stages_are_always_strict(name: str, blog_engine: Engine) -> None:
    try:
        verdict = decide(blog_engine, ALWAYS_STRICT[name])
    except ProtocolError as exc:  # the command's name itself (its first key): refused by the codec
        assert exc.kind == "duplicate_key"
        return
    assert verdict.refusal is not None and verdict.refusal.rule == "ambiguous", name


@pytest.mark.parametrize("name", list(UNREAD))
def test_parts_no_rule_reads_go_to_the_server(name: str, blog_engine: Engine) -> None:
    verdict = decide(blog_engine, UNREAD[name])
    assert verdict.allowed, verdict.refusal


def test_an_undecodable_namespace_is_an_undeclared_one(blog_engine: Engine) -> None:
    verdict = decide(blog_engine, op_msg(doc(("find", bad(b"blog_posts\xff")), ("filter", GLOBAL), DB)))
    assert verdict.allowed and verdict.namespaces == ("blog.blog_posts\udcff",)


@pytest.mark.parametrize(
    "body",
    [
        doc(("find", DECLARED), ("filter", TWICE), DB),  # in the filter: read
        doc(("find", DECLARED), ("filter", TARGETED), ("limit", 1), ("limit", 2), DB),  # elsewhere: not read
        doc(("find", DECLARED), ("filter", doc(("author", "a"), ("title", bad(b"t\xff")))), DB),
        doc(("find", DECLARED), ("filter", TARGETED), ("comment", bad(b"\xff")), DB),
    ],
    ids=["repeat in the filter", "repeat elsewhere", "bad string in the filter", "bad string elsewhere"],
)
def test_the_c_fast_path_never_allows_a_message_in_doubt(body: bytes, blog_engine: Engine) -> None:
    """fast_decide answers only for clean messages; the engine decides the others."""
    assert fast_decide(op_msg(body), blog_engine.fast) is None
    clean = op_msg(doc(("find", DECLARED), ("filter", TARGETED), DB))
    assert fast_decide(clean, blog_engine.fast) is not None  # the positive control


def test_an_insert_in_doubt_never_takes_the_fast_path(blog_engine: Engine) -> None:
    for documents in ([POST, doc(("author", "a"), ("title", "t"), ("body", "x"), ("body", "y"))], [doc(("author", "a"), ("title", bad(b"\xff")))]):
        message = op_msg(doc(("insert", DECLARED), DB), documents=documents)
        assert fast_decide(message, blog_engine.fast) is None
        assert decide(blog_engine, message).refusal is not None
    assert fast_decide(op_msg(doc(("insert", DECLARED), DB), documents=[POST]), blog_engine.fast) is not None
