"""One source of truth: classes -> proxy config YAML -> classes give the same checks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from bson.objectid import ObjectId

from scalymongo_client import (
    Connection,
    Document,
    documents_from_config,
    export_config,
    module_documents,
)
from scalymongo_client import checks as C
from scalymongo_client.config_io import class_name_for
from scalymongo_client.errors import DefinitionError, NotBoundError
from scalymongo_client.spec import ModelSpec
from scalyproxy.config import ConfigError, load_config
from scalyproxy.policy import Command
from tests.unit.client import models_fixture
from tests.unit.client.models_fixture import BlogPost, Event

ROOT = Path(__file__).resolve().parents[3]


def exported() -> str:
    return export_config(module_documents(models_fixture))


def test_module_documents_finds_the_classes_defined_there() -> None:
    assert module_documents(models_fixture) == [BlogPost, Event]  # Abstract has no namespace


def test_the_export_is_a_valid_proxy_config(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(exported())
    cfg = load_config(path)
    assert set(cfg.collections) == {"blog.blog_posts", "metrics.events"}
    posts = cfg.collections["blog.blog_posts"]
    assert posts.shard_key is not None and posts.shard_key.fields == ("author", "title") and posts.shard_key.unique
    events = cfg.collections["metrics.events"]
    assert events.shard_key is not None and events.shard_key.hashed
    assert events.rules.unindexed_query == "off" and posts.rules.unindexed_query == "warn"


def test_the_proxy_cli_accepts_the_export(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(exported())
    done = subprocess.run(
        [sys.executable, "-m", "scalyproxy", "check", str(path)], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_blog_post_exports_what_config_blog_yaml_declares() -> None:
    """The class of issue 6 and the collection of issue 5's config are the same declaration."""
    mine = yaml.safe_load(exported())["collections"]["blog.blog_posts"]
    theirs = yaml.safe_load((ROOT / "config" / "blog.yaml").read_text())["collections"]["blog.blog_posts"]
    theirs.pop("rules")  # the proxy's file turns unindexed_query off for this collection
    assert mine.pop("model") == "BlogPost"  # issue 5's file, kept verbatim, names no class
    theirs["required"] = ["author", "title"]
    mine["required"] = ["author", "title"]  # implied by the shard key on both sides
    assert mine == theirs


def test_round_trip_yaml_is_stable() -> None:
    text = exported()
    back = documents_from_config(text=text)
    assert set(back) == {"BlogPost", "Event"}, "the model: keys keep the class names"
    again = export_config(back.values())
    assert yaml.safe_load(again) == yaml.safe_load(text)
    assert again == text


def _verdict(spec: ModelSpec, command: Command) -> tuple[Any, ...]:
    v = spec.engine.decide(command)
    refusal = None if v.refusal is None else (v.refusal.rule, v.refusal.code_name, v.refusal.message)
    return refusal, tuple((w.rule, w.message) for w in v.warnings)


def _commands(spec: ModelSpec) -> list[Command]:
    key = {"author": "A", "title": "t"} if spec.namespace == "blog.blog_posts" else {"user_id": ObjectId(b"a" * 12)}
    partial = {"author": "A"} if spec.namespace == "blog.blog_posts" else {"user_id": {"$gt": 1}}
    return [
        C.find_command(spec, key, single=True),
        C.find_command(spec, partial),
        C.find_command(spec, partial, options={"comment": "x scaly:allow-global"}),
        C.find_command(spec, {"body": "x", "kind": "y"}, options={"comment": "scaly:allow-global"}),
        C.find_command(spec, key, options={"sort": [("body", 1), ("at", -1)]}),
        C.count_command(spec, {}),
        C.distinct_command(spec, "kind", key),
        C.aggregate_command(spec, [{"$match": partial}]),
        C.update_command(spec, key, {"$set": {"title": "u", "kind": "v"}}, multi=False),
        C.update_command(spec, key, {"$set": {"comments.0.rank": "x", "payload.size": "y"}}, multi=True),
        C.update_command(spec, partial, {"$set": {"body": "x"}}, multi=False, upsert=True),
        C.update_command(spec, key, {"$unset": {"kind": "", "title": ""}}, multi=False),
        C.delete_command(spec, partial, many=False),
        C.find_and_modify_command(spec, key, {"$inc": {"unique_views": 1, "score": 1}}),
        C.insert_command(spec, [{"_id": 1, **key}, {"_id": 2, "author": "A"}, {"_id": 3, **key, "rank": 1}]),
        C.insert_command(spec, [{"_id": 1, **key, "kind": "k", "payload": {"size": "big"}, "comments": [{"rank": "x"}]}]),
    ]


DOCUMENTS: list[dict[str, Any]] = [
    {"author": "A", "title": "t", "comments": [{"author": "c", "comment": "d", "rank": "high"}]},
    {"author": "A", "title": "t", "unique_views": 1.5, "extra": 1},
    {"user_id": ObjectId(), "kind": "k", "payload": {"size": 1, "source": None}, "note": None, "x": 1},
    {"user_id": 1, "kind": 3, "payload": {}, "score": "s", "tags": [1]},
    {},
]


@pytest.mark.parametrize("original", [BlogPost, Event], ids=["BlogPost", "Event"])
def test_round_trip_classes_give_the_same_checks(original: type[Document]) -> None:
    back = documents_from_config(text=exported())[original.__name__]
    mine, theirs = original.model_spec(), back.model_spec()
    assert theirs.namespace == mine.namespace and back.namespace() == original.namespace()
    outcomes = [_verdict(mine, cmd) for cmd in _commands(mine)]
    assert outcomes == [_verdict(theirs, cmd) for cmd in _commands(theirs)]
    assert sum(1 for refusal, _ in outcomes if refusal is not None) >= 6, "the table exercises refusals"
    for doc in DOCUMENTS:
        assert mine.validate(doc) == theirs.validate(doc)
    assert any(mine.validate(doc) for doc in DOCUMENTS)


def test_config_classes_are_checked_by_the_configs_policy() -> None:
    text = (ROOT / "config" / "blog.yaml").read_text().replace('"scaly:allow-global"', '"please:scan-all"')
    models = documents_from_config(text=text)
    Posts = models["BlogPosts"]  # no model: key: named after the collection
    assert Posts.model_spec().marker == "please:scan-all"
    with pytest.raises(NotBoundError):
        Posts.find_one({"author": "Allan"}, allow_global=True)  # the config's own marker is added
    from scalymongo_client.errors import GlobalQueryException

    with pytest.raises(GlobalQueryException):
        Posts.find_one({"author": "Allan"}, comment="scaly:allow-global")


def test_config_classes_are_not_registered_globally() -> None:
    from scalymongo_client import registered_models

    documents_from_config(ROOT / "config" / "blog.yaml")
    assert "BlogPosts" not in registered_models()


@pytest.mark.parametrize(
    ("ns", "taken", "expected"),
    [
        ("blog.blog_posts", (), "BlogPosts"),
        ("app.user-profiles", (), "UserProfiles"),
        ("app.2fa", (), "C2fa"),
        ("other.blog_posts", ("BlogPosts",), "OtherBlogPosts"),
    ],
)
def test_class_name_for(ns: str, taken: tuple[str, ...], expected: str) -> None:
    assert class_name_for(ns, taken) == expected


def test_quoted_namespaces_keep_their_model_names() -> None:
    class Spaced(Document):
        structure = {"a": int}
        __database__ = "app"
        __collection__ = "odd name"

    text = export_config([Spaced])
    assert '"app.odd name":\n    model: Spaced\n' in text
    assert list(documents_from_config(text=text)) == ["Spaced"]


def test_export_refuses_two_classes_on_one_namespace() -> None:
    class One(Document):
        __database__, __collection__ = "d", "c"

    class Two(Document):
        __database__, __collection__ = "d", "c"

    with pytest.raises(DefinitionError, match="both declare d.c"):
        export_config([One, Two])


def test_a_bad_config_is_refused_with_the_loaders_message() -> None:
    with pytest.raises(ConfigError, match="unknown type 'strng'"):
        documents_from_config(text="collections:\n  a.b:\n    structure: {x: strng}\n")


def test_connection_with_config(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(exported())
    conn = Connection("127.0.0.1", 9, config=path, connect=False)
    try:
        Bound = conn.models.BlogPost
        assert Bound is conn.models["blog.blog_posts"] is conn.models.BlogPost
        assert Bound.__module__ == "scalymongo_client.config_io"
        assert Bound.collection.full_name == "blog.blog_posts"
        assert Bound.collection.database.client is conn.client
        assert issubclass(conn.models.Event, Document)
    finally:
        conn.close()


def test_cli_export_config(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scalymongo_client", "export-config", "tests.unit.client.models_fixture",
         "--listen", "127.0.0.1:27017", "--upstream", "mongodb://127.0.0.1:27018"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("# Generated by: python -m scalymongo_client export-config tests.unit.client.models_fixture\n")
    loaded = yaml.safe_load(done.stdout)
    assert loaded["listen"] == "127.0.0.1:27017" and loaded["upstream"] == "mongodb://127.0.0.1:27018"
    assert loaded["collections"] == yaml.safe_load(exported())["collections"]
    path = tmp_path / "app.yaml"
    path.write_text(done.stdout)
    checked = subprocess.run(
        [sys.executable, "-m", "scalymongo_client", "check-config", str(path)],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.splitlines() == [
        "BlogPost: blog.blog_posts (shard key: author, title)",
        "Event: metrics.events (shard key: user_id)",
    ]


def test_cli_reports_a_missing_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scalymongo_client", "export-config", "no_such_module_here"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert done.returncode == 1 and "no_such_module_here" in done.stderr
