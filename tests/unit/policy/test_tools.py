"""The offline tools behind `scalyproxy check | explain | export-jsonschema`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalyproxy import cli
from scalyproxy.policy import tools

ROOT = Path(__file__).resolve().parents[3]
BLOG = str(ROOT / "config" / "blog.yaml")


def test_check_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert tools.check(BLOG) == 0
    out, err = capsys.readouterr()
    assert out.startswith("OK: 1 collections (1 sharded, 1 with a structure)")
    assert err == ""


def test_check_invalid_lists_every_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: nowhere\ncollections:\n  a.b:\n    structure: {x: strin}\n")
    assert tools.check(str(bad)) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert f"{bad}:1: listen: bad address" in err
    assert f"{bad}:4: collections.a.b.structure.x: unknown type 'strin'" in err


def test_check_refuses_a_descending_shard_key_naming_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """MongoDB shards on ascending or hashed fields only: shardCollection would fail at init."""
    bad = tmp_path / "desc.yaml"
    bad.write_text(
        "collections:\n  shop.orders:\n    indexes:\n      - fields: {created: 1}\n"
        "      - fields: {region: 1, created: -1}\n        shard_key: true\n"
    )
    assert cli.main(["check", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert (
        f"{bad}:5: collections.shop.orders.indexes.1.fields.created: shard-key field 'created' is "
        "descending (-1): MongoDB shards only on ascending or hashed fields "
        "(write created: 1, or created: hashed)"
    ) in err.splitlines()
    assert f"{bad}: 1 problem(s); the config was not loaded" in err


def test_check_through_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["check", BLOG]) == 0
    assert "OK:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("command", "status", "expected"),
    [
        ('{"find":"blog_posts","filter":{"author":"a"},"$db":"blog"}', 1, "Missing fields were title."),
        ('{"find":"blog_posts","filter":{"author":"a","title":"t"},"$db":"blog"}', 0, "verdict: allowed"),
        ('{"find":"blog_posts","filter":{"author":"a"},"comment":"scaly:allow-global","$db":"blog"}', 0, "allow marker: used"),
        ('{"insert":"blog_posts","documents":[{"author":"a","title":"t","unique_views":{"$numberLong":"5"}}],"$db":"blog"}', 1, "unique_views: expected int, got long"),
        ('{"insert":"blog_posts","documents":[{"author":"a","title":"t","unique_views":{"$numberInt":"5"}}],"$db":"blog"}', 0, "verdict: allowed"),
    ],
)
def test_explain(command: str, status: int, expected: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert tools.explain(BLOG, command) == status
    out = capsys.readouterr().out
    assert expected in out
    assert out.startswith("verdict: " + ("allowed" if status == 0 else "refused"))


def test_explain_prints_rule_and_reason(capsys: pytest.CaptureFixture[str]) -> None:
    tools.explain(BLOG, '{"find":"blog_posts","filter":{"author":"a"},"$db":"blog"}')
    out = capsys.readouterr().out.splitlines()
    assert "rule: global_query (ScalyGlobalQuery, code 29001)" in out
    assert "  reason: Some or all of the shard key was not specified.  Missing fields were title." in out
    assert '  shape: {"author":"string"}' in out


@pytest.mark.parametrize(
    "command", ["not json", "[1, 2]", "{}", '{"find": "x"}']
)
def test_explain_bad_input(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert tools.explain(BLOG, command) == 2
    assert capsys.readouterr().err


def test_explain_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: {targeting: nope}\n")
    assert cli.main(["explain", str(bad), '{"ping": 1, "$db": "admin"}']) == 2
    assert "policy.targeting" in capsys.readouterr().err


def test_export_jsonschema(capsys: pytest.CaptureFixture[str]) -> None:
    assert tools.export_jsonschema(BLOG) == 0
    exported = json.loads(capsys.readouterr().out)
    cmd = exported["blog.blog_posts"]
    assert cmd["collMod"] == "blog_posts"
    schema = cmd["validator"]["$jsonSchema"]
    assert schema["bsonType"] == "object"
    assert schema["required"] == ["author", "title"]
    assert schema["additionalProperties"] is False
    assert schema["properties"]["_id"] == {}
    assert schema["properties"]["unique_views"] == {"bsonType": "int"}
    comments = schema["properties"]["comments"]
    assert comments["bsonType"] == "array"
    assert comments["items"]["properties"]["rank"] == {"bsonType": "int"}
    assert comments["items"]["additionalProperties"] is False


def test_export_jsonschema_types(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "collections:\n  d.c:\n    additional_fields: true\n    structure:\n"
        "      n: number\n      l: long\n      s: string?\n      a: any\n      o: {x: int, $nullable: true}\n"
        "  d.nostructure:\n    indexes: [{fields: [k], shard_key: true}]\n"
    )
    assert cli.main(["export-jsonschema", str(path)]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert list(exported) == ["d.c"]
    props = exported["d.c"]["validator"]["$jsonSchema"]["properties"]
    assert props["n"] == {"bsonType": ["int", "long", "double", "decimal"]}
    assert props["l"] == {"bsonType": ["int", "long"]}
    assert props["s"] == {"bsonType": ["string", "null"]}
    assert props["a"] == {}
    assert props["o"]["bsonType"] == ["object", "null"]
    assert "additionalProperties" not in exported["d.c"]["validator"]["$jsonSchema"]


def test_export_create_commands_carry_the_collation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "collections:\n  d.c:\n    collation: {locale: fr, strength: 2}\n    structure: {n: int}\n"
        "  d.bare:\n    collation: {locale: en}\n  d.none:\n    indexes: [{fields: [k], shard_key: true}]\n"
    )
    assert cli.main(["export-jsonschema", "--create", str(path)]) == 0
    exported = json.loads(capsys.readouterr().out)
    assert list(exported) == ["d.c", "d.bare"]
    assert exported["d.c"]["create"] == "c" and exported["d.c"]["collation"] == {"locale": "fr", "strength": 2}
    assert exported["d.c"]["validator"]["$jsonSchema"]["properties"]["n"] == {"bsonType": "int"}
    assert exported["d.c"]["validationLevel"] == "strict"
    assert exported["d.bare"] == {"create": "bare", "collation": {"locale": "en"}}
    assert cli.main(["export-jsonschema", str(path)]) == 0  # collMod cannot set a collation: none there
    assert "collation" not in json.loads(capsys.readouterr().out)["d.c"]
