"""init-config's edges without a server: the URI without credentials, namespace globs,
argument errors (exit 2, before connecting), the atomic write."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from scalyproxy.admin.initconfig.command import write_atomic
from scalyproxy.admin.initconfig.plan import selected
from scalyproxy.admin.initconfig.uri import public_uri, resolved_upstream
from scalyproxy.cli import main


@pytest.mark.parametrize(
    ("uri", "public", "notes"),
    [
        ("mongodb://h:1", "mongodb://h:1", ()),
        ("mongodb://alice:s3cret@h1:1,h2:2/app?authSource=admin&tls=true&tlsCAFile=/ca.pem&replicaSet=rs",
         "mongodb://h1:1,h2:2/?tls=true&tlsCAFile=/ca.pem",
         ("credentials removed", "database path removed", "options removed: authSource, replicaSet")),
        ("mongodb://u:p%40ss@h:1/?tlsCertificateKeyFile=/c.pem&tlsCertificateKeyFilePassword=hunter2&authMechanismProperties=AWS_SESSION_TOKEN:tok",
         "mongodb://h:1/?tlsCertificateKeyFile=/c.pem",
         ("credentials removed", "options removed: tlsCertificateKeyFilePassword, authMechanismProperties")),
        ("mongodb+srv://u:p@cluster.example.net/?retryWrites=true", "mongodb+srv://cluster.example.net",
         ("credentials removed", "options removed: retryWrites")),
    ],
)
def test_the_upstream_never_holds_credentials(uri: str, public: str, notes: tuple[str, ...]) -> None:
    assert public_uri(uri) == (public, notes)
    for secret in ("s3cret", "hunter2", "tok", "p%40ss", "alice"):
        assert secret not in public_uri(uri)[0] and secret not in " ".join(public_uri(uri)[1])


def test_srv_is_written_as_the_hosts_the_driver_found() -> None:
    assert resolved_upstream("mongodb+srv://c.example.net", [("b.example.net", 27017), ("a.example.net", 27017)]) == (
        "mongodb://a.example.net:27017,b.example.net:27017/?tls=true")
    assert resolved_upstream("mongodb+srv://c/?tls=false", [("::1", 1)]) == "mongodb://[::1]:1/?tls=false"


def test_include_then_exclude_globs() -> None:
    names = ["blog.posts", "blog.users", "shop.orders", "shop.orders_old", "Shop.x"]
    assert selected(names, [], []) == names
    assert selected(names, ["blog.*"], []) == ["blog.posts", "blog.users"]
    assert selected(names, ["*.orders*"], ["*_old"]) == ["shop.orders"]
    assert selected(names, ["shop.*"], []) == ["shop.orders", "shop.orders_old"]  # case-sensitive
    assert selected(names, ["blog.posts", "shop.?rders"], ["blog.*"]) == ["shop.orders"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "http://h:1"], "bad --from URI: the URI must start with mongodb:// or mongodb+srv://"),
        (["--from", "mongodb://h:notaport"], "bad --from URI:"),
        (["--from", "mongodb://h:1", "--shard-key", "blog.posts"], "--shard-key 'blog.posts': write DB.COLLECTION=FIELD"),
        (["--from", "mongodb://h:1", "--shard-key", "a.b=x", "a.b=y"], "a.b is given twice"),
        (["--from", "mongodb://h:1", "--sample", "0"], "--sample 0: sample at least 1 document"),
        (["--from", "mongodb://h:1", "--timeout", "0"], "--timeout 0: a number of seconds above 0"),
    ],
)
def test_bad_arguments_exit_2_before_connecting(args: list[str], message: str, capsys: Any) -> None:
    assert main(["init-config", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("init-config: ") and message in err, err


def test_the_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "cfg.yaml"
    write_atomic(str(target), "first: 1\n")
    assert target.read_text() == "first: 1\n"
    target.chmod(0o640)

    def broken(*_: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="No space left"):
        write_atomic(str(target), "second: 2\n" * 1000)
    assert target.read_text() == "first: 1\n"  # the old file, whole
    assert [p.name for p in tmp_path.iterdir()] == ["cfg.yaml"]  # no temporary file left
    monkeypatch.undo()
    write_atomic(str(target), "third: 3\n")
    assert target.read_text() == "third: 3\n" and target.stat().st_mode & 0o777 == 0o640



class _Unreadable:
    """Stands in for the pymongo side (source.Cluster) of a collection the account may not read."""

    def sample(self, ns: str, size: int) -> Any:
        from scalyproxy.admin.initconfig.source import Sampled

        return Sampled(None, "-", None, 0.01, "not authorized on shop to execute command { aggregate: ... }")

    def indexes(self, ns: str) -> str:
        return "not authorized on shop to execute command { listIndexes: ... }"


def test_a_collection_that_cannot_be_read_is_written_without_structure(capsys: Any) -> None:
    import sys

    from scalyproxy.admin.initconfig.command import _collection
    from scalyproxy.admin.initconfig.model import ConfigPlan
    from scalyproxy.admin.initconfig.render import render
    from scalyproxy.admin.initconfig.source import Listed
    from scalyproxy.config import load_config_text

    plan = _collection(_Unreadable(), Listed("shop.secret", "collection", {}), 1, 1, 10, {}, {},  # type: ignore[arg-type]
                       sys.stderr)
    assert plan.structure is None and plan.indexes == ()
    assert plan.notes[0].startswith("the sample could not be read: not authorized on shop")
    assert "; the indexes could not be read: not authorized" in plan.notes[0]
    assert "[1/1] shop.secret: not sampled (not authorized" in capsys.readouterr().err
    assert load_config_text(render(ConfigPlan("mongodb://h:1", (plan,)))).collections["shop.secret"].structure is None


def test_views_and_system_collections_are_left_out_and_listed() -> None:
    import argparse

    from scalyproxy.admin.initconfig.command import UsageError, _choose, _Run
    from scalyproxy.admin.initconfig.source import Listed

    listed = [Listed("blog.posts", "collection", {}), Listed("blog.recent", "view", {"viewOn": "posts"}),
              Listed("blog.system.profile", "collection", {}), Listed("metrics.cpu", "timeseries", {})]
    info = _Run()
    args = argparse.Namespace(include=[], exclude=[])
    chosen = _choose(listed, args, {}, info)
    assert [c.namespace for c in chosen] == ["blog.posts", "metrics.cpu"]
    assert info.skipped == ("blog.recent: a view (its collection is what the proxy guards)",
                            "blog.system.profile: a system collection")
    with pytest.raises(UsageError, match=r"no collection matched .* the server has 2 outside admin, config and local: "
                                         r"blog.posts, metrics.cpu"):
        _choose(listed, argparse.Namespace(include=["shop.*"], exclude=[]), {}, _Run())
