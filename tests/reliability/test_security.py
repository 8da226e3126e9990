"""The guard cannot be bypassed: each disguise of a refused command is refused too,
and nothing of it reaches the upstream (recorded by the scripted peer).

The config is config/blog.yaml: ``blog.blog_posts`` sharded on (author, title),
so a query on ``author`` alone is a global query (ScalyGlobalQuery, 29001).
Every test also sends the allowed twin where there is one, so a guard that
refused everything would fail too.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bson
import pytest

from scalyproxy.policy.commands import ALIASES
from scalyproxy.wire import compress_message
from tests.conftest import BLOG_CONFIG, ProxyProcess
from tests.reliability.conftest import Upstream
from tests.reliability.helpers import (
    OP_DELETE,
    OP_GET_MORE,
    OP_INSERT,
    OP_KILL_CURSORS,
    OP_UPDATE,
    body_section,
    connect,
    error_or_close,
    message,
    op_msg,
    op_msg_raw,
    op_query,
    recv_message,
    reply_doc,
    response_to,
)
from tests.scripted_peer import ScriptedPeer

pytestmark = pytest.mark.fleet  # each test also runs against --workers 2 (tests/conftest.py)

GLOBAL, DENIED, PROTOCOL, UNSUPPORTED = 29001, 29004, 29005, 29006
GLOBAL_FILTER = {"author": "a"}
TARGETED = {"author": "a", "title": "t"}
POSTS = "blog_posts"


def refused(port: int, msg: bytes, request_id: int, code: int | None) -> None:
    """Send ``msg`` on a fresh connection: an error reply with ``code`` (None: a close is expected)."""
    with connect(port) as s:
        s.sendall(msg)
        outcome = error_or_close(s, request_id)
    expected = "closed" if code is None else f"error {code}"
    assert outcome == expected, outcome


def allowed(port: int, msg: bytes, request_id: int) -> None:
    with connect(port) as s:
        s.sendall(msg)
        reply = recv_message(s)
    assert response_to(reply) == request_id
    assert reply_doc(reply)["ok"] == 1, reply_doc(reply)


def find(filter_: dict[str, Any]) -> dict[str, Any]:
    return {"find": POSTS, "filter": filter_, "$db": "blog"}


# -- OP_COMPRESSED -----------------------------------------------------------------------


@pytest.mark.parametrize("compressor", [0, 1, 2, 3], ids=["noop", "snappy", "zlib", "zstd"])
def test_command_inside_op_compressed(compressor: int, guarded: ProxyProcess, upstream: Upstream) -> None:
    refused(guarded.port, compress_message(op_msg(find(GLOBAL_FILTER), 5), compressor), 5, GLOBAL)
    upstream.assert_nothing()
    ok = compress_message(op_msg(find(TARGETED), 6), compressor)
    allowed(guarded.port, ok, 6)
    assert upstream.new_messages() == [ok]  # forwarded as sent, still compressed


# -- legacy opcodes ------------------------------------------------------------------------


def _legacy(op_code: int, *parts: bytes) -> bytes:
    return message(op_code, struct.pack("<i", 0) + b"blog.blog_posts\x00" + b"".join(parts), 5)


LEGACY = {
    "OP_QUERY find on blog.$cmd": (op_query("blog.$cmd", find(GLOBAL_FILTER), 5), UNSUPPORTED),
    "OP_QUERY targeted find on blog.$cmd": (op_query("blog.$cmd", find(TARGETED), 5), UNSUPPORTED),
    "OP_QUERY insert on blog.$cmd": (
        op_query("blog.$cmd", {"insert": POSTS, "documents": [{"author": 1}]}, 5),
        UNSUPPORTED,
    ),
    "OP_QUERY on the collection": (op_query("blog.blog_posts", GLOBAL_FILTER, 5), UNSUPPORTED),
    "OP_INSERT": (_legacy(OP_INSERT, bson.encode({"author": "a", "title": "t"})), None),
    "OP_UPDATE": (
        _legacy(OP_UPDATE, struct.pack("<i", 2), bson.encode(GLOBAL_FILTER), bson.encode({"$set": {"body": "x"}})),
        None,
    ),
    "OP_DELETE": (_legacy(OP_DELETE, struct.pack("<i", 0), bson.encode(GLOBAL_FILTER)), None),
    "OP_GET_MORE": (_legacy(OP_GET_MORE, struct.pack("<iq", 10, 12345)), UNSUPPORTED),
    "OP_KILL_CURSORS": (message(OP_KILL_CURSORS, struct.pack("<iiq", 0, 1, 12345), 5), None),
}


@pytest.mark.parametrize("name", list(LEGACY))
def test_legacy_opcodes_never_reach_the_upstream(name: str, guarded: ProxyProcess, upstream: Upstream) -> None:
    msg, code = LEGACY[name]
    refused(guarded.port, msg, 5, code)
    upstream.assert_nothing()


def test_legacy_hello_is_still_the_handshake(guarded: ProxyProcess, upstream: Upstream) -> None:
    hello = op_query("admin.$cmd", {"isMaster": 1}, 5)
    with connect(guarded.port) as s:
        s.sendall(hello)
        reply = recv_message(s)
    assert response_to(reply) == 5 and reply_doc(reply)["ok"] == 1
    assert upstream.new_messages() == [hello]


# -- duplicate keys ------------------------------------------------------------------------


def raw_doc(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def el(key: str, value: Any) -> bytes:
    """One BSON element, encoded by pymongo (the key and value of a one-key document)."""
    encoded = bson.encode({key: value})
    return encoded[4:-1]


DUPLICATES = {
    "two $db": raw_doc(el("find", POSTS), el("filter", TARGETED), el("$db", "blog"), el("$db", "other")),
    "two filters": raw_doc(el("find", POSTS), el("filter", TARGETED), el("filter", GLOBAL_FILTER), el("$db", "blog")),
    "a key twice inside the filter": raw_doc(
        el("find", POSTS),
        b"\x03filter\x00" + raw_doc(el("author", "a"), el("title", "t"), el("title", {"$ne": 1})),
        el("$db", "blog"),
    ),
    "two find keys": raw_doc(el("find", "other"), el("find", POSTS), el("filter", GLOBAL_FILTER), el("$db", "blog")),
}


@pytest.mark.parametrize("name", list(DUPLICATES))
def test_duplicate_keys_are_refused(name: str, guarded: ProxyProcess, upstream: Upstream) -> None:
    refused(guarded.port, op_msg_raw(body_section(DUPLICATES[name]), 5), 5, PROTOCOL)
    upstream.assert_nothing()


# -- queries hidden inside other commands ----------------------------------------------------


def _agg(*stages: dict[str, Any]) -> dict[str, Any]:
    return {"aggregate": "other", "pipeline": list(stages), "cursor": {}, "$db": "blog"}


HIDDEN = {
    "explain find": {"explain": {"find": POSTS, "filter": GLOBAL_FILTER}, "$db": "blog"},
    "explain aggregate": {
        "explain": {"aggregate": POSTS, "pipeline": [{"$match": GLOBAL_FILTER}], "cursor": {}},
        "$db": "blog",
    },
    "explain findAndModify": {
        "explain": {"findAndModify": POSTS, "query": GLOBAL_FILTER, "remove": True},
        "$db": "blog",
    },
    "explain delete": {"explain": {"delete": POSTS, "deletes": [{"q": GLOBAL_FILTER, "limit": 0}]}, "$db": "blog"},
    "$lookup sub-pipeline": _agg({"$lookup": {"from": POSTS, "pipeline": [{"$match": GLOBAL_FILTER}], "as": "x"}}),
    "$lookup on a non-key field": _agg({"$lookup": {"from": POSTS, "localField": "a", "foreignField": "body", "as": "x"}}),
    "$unionWith sub-pipeline": _agg({"$unionWith": {"coll": POSTS, "pipeline": [{"$match": GLOBAL_FILTER}]}}),
    "$unionWith whole collection": _agg({"$unionWith": POSTS}),
    "$facet with a $lookup": _agg({"$facet": {"f": [{"$lookup": {"from": POSTS, "pipeline": [], "as": "x"}}]}}),
    "$graphLookup": _agg(
        {"$graphLookup": {"from": POSTS, "startWith": "$x", "connectFromField": "a", "connectToField": "body", "as": "x"}}
    ),
    "$lookup inside $lookup": _agg(
        {"$lookup": {"from": "other", "pipeline": [{"$lookup": {"from": POSTS, "pipeline": [], "as": "y"}}], "as": "x"}}
    ),
    "bulkWrite delete": {
        "bulkWrite": 1,
        "ops": [{"delete": 0, "filter": GLOBAL_FILTER, "multi": True}],
        "nsInfo": [{"ns": "blog.blog_posts"}],
        "$db": "admin",
    },
    "bulkWrite update second namespace": {
        "bulkWrite": 1,
        "ops": [
            {"insert": 0, "document": {"x": 1}},
            {"update": 1, "filter": GLOBAL_FILTER, "updateMods": {"$set": {"body": "x"}}, "multi": True},
        ],
        "nsInfo": [{"ns": "blog.other"}, {"ns": "blog.blog_posts"}],
        "$db": "admin",
    },
}


@pytest.mark.parametrize("name", list(HIDDEN))
def test_hidden_queries_are_checked(name: str, guarded: ProxyProcess, upstream: Upstream) -> None:
    refused(guarded.port, op_msg(HIDDEN[name], 5), 5, GLOBAL)
    upstream.assert_nothing()


def test_hidden_targeted_query_is_allowed(guarded: ProxyProcess, upstream: Upstream) -> None:
    ok = op_msg(_agg({"$lookup": {"from": POSTS, "pipeline": [{"$match": TARGETED}], "as": "x"}}), 6)
    allowed(guarded.port, ok, 6)
    assert upstream.new_messages() == [ok]


def test_bulkwrite_ops_in_a_kind1_sequence_are_checked(guarded: ProxyProcess, upstream: Upstream) -> None:
    body = {"bulkWrite": 1, "$db": "admin"}
    bad = op_msg(body, 5, ops=[{"delete": 0, "filter": GLOBAL_FILTER, "multi": True}], nsInfo=[{"ns": "blog.blog_posts"}])
    refused(guarded.port, bad, 5, GLOBAL)
    upstream.assert_nothing()


# -- kind-1 sequences ------------------------------------------------------------------------


def test_write_in_the_expected_sequence_is_checked(guarded: ProxyProcess, upstream: Upstream) -> None:
    bad = op_msg({"delete": POSTS, "$db": "blog"}, 5, deletes=[{"q": GLOBAL_FILTER, "limit": 0}])
    refused(guarded.port, bad, 5, GLOBAL)
    upstream.assert_nothing()
    ok = op_msg({"delete": POSTS, "$db": "blog"}, 6, deletes=[{"q": TARGETED, "limit": 1}])
    allowed(guarded.port, ok, 6)
    assert upstream.new_messages() == [ok]


UNEXPECTED_SEQUENCES = {
    "delete with 'xdeletes'": ({"delete": POSTS, "$db": "blog"}, "xdeletes", [{"q": GLOBAL_FILTER, "limit": 0}]),
    "insert with 'docs'": ({"insert": POSTS, "$db": "blog"}, "docs", [{"author": 1}]),
    "update with 'Updates'": (
        {"update": POSTS, "$db": "blog"},
        "Updates",
        [{"q": GLOBAL_FILTER, "u": {"$set": {"body": "x"}}, "multi": True}],
    ),
    "find with 'documents'": ({"find": POSTS, "filter": TARGETED, "$db": "blog"}, "documents", [{"x": 1}]),
}


@pytest.mark.parametrize("name", list(UNEXPECTED_SEQUENCES))
def test_write_in_an_unexpected_sequence_is_refused(name: str, guarded: ProxyProcess, upstream: Upstream) -> None:
    body, ident, docs = UNEXPECTED_SEQUENCES[name]
    refused(guarded.port, op_msg(body, 5, **{ident: docs}), 5, UNSUPPORTED)
    upstream.assert_nothing()


# -- aliases -----------------------------------------------------------------------------------

ALIAS_PAIRS = sorted((alias, name) for alias, name in ALIASES.items() if alias != "ismaster")
#: Server aliases that must be in the proxy's table (datasize was missing once).
REQUIRED_ALIASES = {"findandmodify", "mapreduce", "deleteIndexes", "datasize", "collstats", "dbstats"}


def test_the_alias_table_knows_the_server_aliases() -> None:
    assert REQUIRED_ALIASES <= set(ALIASES)


@pytest.fixture(scope="module")
def deny_all_proxy(
    proxy_factory: Callable[..., ProxyProcess], peer: ScriptedPeer, tmp_path_factory: pytest.TempPathFactory
) -> ProxyProcess:
    """blog.yaml with every aliased command (canonical names) in policy.deny_commands."""
    names = sorted({name for _, name in ALIAS_PAIRS})
    text = BLOG_CONFIG.read_text().replace("deny_commands: []", f"deny_commands: [{', '.join(names)}]")
    assert text != BLOG_CONFIG.read_text()
    path: Path = tmp_path_factory.mktemp("deny") / "deny.yaml"
    path.write_text(text)
    return proxy_factory(path, upstream=peer.uri)


def _alias_cases() -> list[Any]:
    cases: list[Any] = []
    for alias, name in ALIAS_PAIRS:
        cases += [pytest.param(alias, id=alias), pytest.param(name, id=name)]
    return cases


@pytest.mark.parametrize("command", _alias_cases())
def test_denied_command_is_denied_under_every_name(
    command: str, deny_all_proxy: ProxyProcess, peer: ScriptedPeer
) -> None:
    before = len(peer.received)
    msg = op_msg({command: "blog.blog_posts" if command.lower() == "datasize" else POSTS, "$db": "blog"}, 5)
    refused(deny_all_proxy.port, msg, 5, DENIED)
    assert not any(m == msg for m in peer.received[before:])


@pytest.mark.parametrize("command", ["findandmodify", "findAndModify"])
def test_find_and_modify_alias_is_checked_like_its_name(
    command: str, guarded: ProxyProcess, upstream: Upstream
) -> None:
    refused(guarded.port, op_msg({command: POSTS, "query": GLOBAL_FILTER, "remove": True, "$db": "blog"}, 5), 5, GLOBAL)
    upstream.assert_nothing()
    ok = op_msg({command: POSTS, "query": TARGETED, "remove": True, "$db": "blog"}, 6)
    allowed(guarded.port, ok, 6)
    assert upstream.new_messages() == [ok]


@pytest.mark.parametrize("command", ["mapreduce", "mapReduce"])
def test_map_reduce_alias_is_checked_like_its_name(command: str, guarded: ProxyProcess, upstream: Upstream) -> None:
    body = {command: POSTS, "map": "function(){}", "reduce": "function(){}", "query": GLOBAL_FILTER,
            "out": {"inline": 1}, "$db": "blog"}
    refused(guarded.port, op_msg(body, 5), 5, GLOBAL)
    upstream.assert_nothing()


@pytest.mark.parametrize("command", ["ismaster", "isMaster", "hello"])
def test_handshake_names_are_treated_alike(command: str, guarded: ProxyProcess, upstream: Upstream) -> None:
    msg = op_msg({command: 1, "$db": "admin"}, 6)
    allowed(guarded.port, msg, 6)
    assert upstream.new_messages() == [msg]
