"""init-config's YAML (pure): comments beside every choice, valid YAML, accepted by
`scalyproxy check`, and read back by the loader as the structure that was inferred."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from scalyproxy.admin.initconfig.infer import sample_stats
from scalyproxy.admin.initconfig.model import (
    CollectionPlan,
    ConfigPlan,
    Field,
    IndexPlan,
    Node,
    normalized,
)
from scalyproxy.admin.initconfig.plan import CollectionInput, plan_collection
from scalyproxy.admin.initconfig.render import render, yaml_key
from scalyproxy.config import load_config_text
from scalyproxy.config.model import RULE_NAMES
from scalyproxy.policy import tools

DOCS: list[dict[str, Any]] = [
    {"author": "a", "title": f"t{i}", "views": i, "tags": ["x"] if i % 2 else [],
     "comments": [{"by": "u", "rank": i}], "meta": {"src": "web"} if i % 3 else None,
     "on": True, "x y": 1, "null": None}
    for i in range(12)
]
INDEXES = [{"key": {"_id": 1}, "name": "_id_"}, {"key": {"author": 1, "title": 1}, "name": "at", "unique": True},
           {"key": {"views": -1, "author": 1}, "name": "va", "sparse": True},
           {"key": {"$**": 1}, "name": "wild"}]


def _text(collation: dict[str, Any] | None = None) -> tuple[CollectionPlan, str]:
    options = {"collation": collation} if collation else {}
    plan = plan_collection(CollectionInput("blog.posts", options, sample_stats(DOCS), "12 of ~12 documents sampled with $sample",
                                           INDEXES, {"_id": "blog.posts", "key": {"author": 1, "title": 1}, "unique": True}))
    config = ConfigPlan("mongodb://db.example:27017/?tls=true", (plan,), header=("Generated for a test",),
                        upstream_notes=("credentials removed",), skipped=("blog.recent: a view",))
    return plan, render(config)


def test_every_choice_has_its_comment() -> None:
    _, text = _text({"locale": "fr"})
    for expected in [
        "# Generated for a test",
        "# the --from URI without credentials",
        "# credentials removed",
        "blog.posts:                               # 12 of ~12 documents sampled with $sample",
        "author: string                        # required: shard key field; in all 12 sampled documents",
        "views: int                            # required: in all 12 sampled documents",
        "# 6 elements in 12 arrays (6 empty)",
        "# types seen: object 8, null 4",
        "src: string                         # required: in all 8 meta documents",
        "additional_fields: false                # strict: every field the sample showed is declared",
        "- fields: [author, title]             # shard key from config.collections",
        "# skipped index wild: a wildcard index: the config format has no wildcard",
        'collation: {"locale": "fr"}',
        "# the collection's default: a string shard-key value targets only under the simple collation",
        "# Not included:",
        "#   blog.recent: a view",
    ]:
        assert expected in text, expected


def test_it_is_yaml_that_check_accepts_with_every_rule_in_warn(tmp_path: Path, capsys: Any) -> None:
    _, text = _text()
    raw = yaml.safe_load(text)
    assert raw["policy"]["rules"] == {name: "warn" for name in RULE_NAMES}
    assert raw["policy"]["unknown_namespaces"] == "allow" and raw["policy"]["deny_commands"] == []
    assert raw["upstream"] == "mongodb://db.example:27017/?tls=true"
    path = tmp_path / "generated.yaml"
    path.write_text(text)
    assert tools.check(str(path)) == 0
    assert capsys.readouterr().out.startswith("OK: 1 collections (1 sharded, 1 with a structure)")


def test_the_loader_reads_back_the_inferred_structure() -> None:
    plan, text = _text()
    cfg = load_config_text(text).collections["blog.posts"]
    assert plan.structure is not None and cfg.structure is not None
    assert normalized(cfg.structure) == normalized(plan.structure.to_spec())
    assert set(cfg.structure.fields) >= {"on", "x y", "null"}
    meta = cfg.structure.fields["meta"]
    assert meta.nullable and meta.required == ("src",)
    assert [(ix.keys, ix.shard_key, ix.unique, ix.sparse, ix.name) for ix in cfg.indexes] == [
        ((("author", 1), ("title", 1)), True, True, False, "at"),
        ((("views", -1), ("author", 1)), False, False, True, "va"),
    ]


def test_keys_yaml_would_misread_are_quoted() -> None:
    assert [yaml_key(k) for k in ["name", "on", "null", "True", "1", "x y", "é", "-a", "a:b"]] == [
        "name", '"on"', '"null"', '"True"', '"1"', '"x y"', '"é"', '"-a"', '"a:b"']


def test_a_collection_with_nothing_to_say_is_an_empty_mapping() -> None:
    text = render(ConfigPlan("mongodb://h:1", (CollectionPlan("a.empty", None, notes=("no documents to sample",)),)))
    assert load_config_text(text).collections["a.empty"].structure is None
    assert "  a.empty: {}" in text


# -- any tree renders to what it is ----------------------------------------------------------------

_names = st.sampled_from(["a", "b", "on", "null", "x y", "1", "_id", "é"])
_type_names = st.lists(st.sampled_from(["string", "int", "long", "double", "bool", "date", "object", "array", "any", "number"]),
                       min_size=0, max_size=3)


def _scalar(names: list[str], nullable: bool) -> Node:
    from scalyproxy.admin.initconfig.model import canonical

    types = canonical(names)
    return Node("scalar", types=types, nullable=nullable or not types)


_scalars = st.builds(_scalar, _type_names, st.booleans())


def _obj(fields: list[tuple[str, Node, bool]], nullable: bool, additional: bool) -> Node:
    unique = {name: (node, req) for name, node, req in fields}
    return Node("object", nullable=nullable, additional=additional,
                fields=tuple(Field(n, node, req, "why") for n, (node, req) in unique.items()))


_nodes: st.SearchStrategy[Node] = st.recursive(
    _scalars,
    lambda inner: st.builds(lambda items, nullable: Node("array", nullable=nullable, items=items), inner, st.booleans())
    | st.builds(_obj, st.lists(st.tuples(_names, inner, st.booleans()), max_size=3), st.booleans(), st.booleans()),
    max_leaves=10,
)


@settings(max_examples=200, deadline=None)
@given(st.builds(_obj, st.lists(st.tuples(_names, _nodes, st.booleans()), max_size=4), st.just(False), st.booleans()))
def test_any_structure_reads_back_as_it_was(root: Node) -> None:
    plan = CollectionPlan("db.coll", root, indexes=(IndexPlan((("a", 1),), name="by_a"),) if root.field("a") else ())
    text = render(ConfigPlan("mongodb://h:1", (plan,)))
    loaded = load_config_text(text).collections["db.coll"].structure
    assert loaded is not None and normalized(loaded) == normalized(root.to_spec()), text
