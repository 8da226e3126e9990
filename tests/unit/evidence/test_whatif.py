"""What-if: profiled shapes decided again under another config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scalyproxy.admin.profile_cli import whatif_main
from scalyproxy.config import load_config_text
from scalyproxy.evidence.recorder import Recorder
from scalyproxy.evidence.whatif import format_whatif, what_if
from scalyproxy.policy import Engine
from scalyproxy.wire import command_view, encode_op_msg, make_frame
from tests.unit.policy.conftest import blog_text

MARK = "scaly:allow-global"
SHADOW = blog_text().replace("global_query: enforce", "global_query: warn")
ENFORCE = blog_text()


def profile(text: str, traffic: list[tuple[str, dict[str, object], int]]) -> Recorder:
    """Decide ``traffic`` (app, body, times) under ``text`` and record it."""
    engine = Engine.from_config(load_config_text(text))
    r = Recorder(100, MARK)
    for app, body, times in traffic:
        message = encode_op_msg({**body, "$db": "blog"}, request_id=1)
        view = command_view(make_frame(message))
        for _ in range(times):
            r.record(app, view, engine.decide(view), message)
    return r


TRAFFIC = [
    ("web", {"find": "blog_posts", "filter": {"author": "a", "title": "t"}}, 10),  # targeted
    ("web", {"find": "blog_posts", "filter": {"author": "a"}}, 4),  # global: warned in shadow
    ("batch", {"find": "blog_posts", "filter": {"body": "x"}, "comment": MARK}, 3),  # marked: allowed
    ("batch", {"count": "blog_posts", "query": {"author": "b"}}, 2),  # global: warned in shadow
]


def test_enforcing_names_exactly_the_shapes_that_would_be_refused() -> None:
    table = profile(SHADOW, TRAFFIC).snapshot()
    result = what_if(table, Engine.from_config(load_config_text(ENFORCE)))
    assert [(c.command, c.app, c.count, c.then, c.now) for c in result.changes] == [
        ("find", "web", 4, "warned:global_query", "refused:global_query"),
        ("count", "batch", 2, "warned:global_query", "refused:global_query"),
    ]
    assert all(c.breaking and c.rule == "global_query" for c in result.changes)
    assert "Missing fields were title" in result.changes[0].reason
    assert result.exit_status == 1 and result.breaking == 6 and result.commands == 19 and result.shapes == 4
    assert result.totals("rule") == {"global_query": {"changed": 6, "breaking": 6}}
    assert result.totals("app") == {"web": {"changed": 4, "breaking": 4}, "batch": {"changed": 2, "breaking": 2}}
    text = format_whatif(result, "enforce.yaml")
    assert "warned:global_query  refused:global_query" in text and "6 that were allowed or warned would be refused" in text


def test_the_same_config_changes_nothing_and_relaxing_is_not_breaking() -> None:
    table = profile(ENFORCE, TRAFFIC).snapshot()
    assert what_if(table, Engine.from_config(load_config_text(ENFORCE))).changes == []
    relaxed = what_if(table, Engine.from_config(load_config_text(SHADOW)))
    assert {(c.then, c.now) for c in relaxed.changes} == {("refused:global_query", "warned:global_query")}
    assert relaxed.exit_status == 0


def test_a_new_shard_key_is_tried_against_real_shapes() -> None:
    table = profile(ENFORCE, TRAFFIC).snapshot()
    rekeyed = ENFORCE.replace("fields: [author, title]", "fields: [author]")
    result = what_if(table, Engine.from_config(load_config_text(rekeyed)))
    assert {(c.command, c.then, c.now) for c in result.changes} == {
        ("find", "refused:global_query", "allowed"), ("count", "refused:global_query", "allowed")}


def test_mixed_outcomes_of_one_shape_are_counted_apart() -> None:
    recorder = profile(SHADOW, TRAFFIC[1:2])
    engine = Engine.from_config(load_config_text(ENFORCE))
    message = encode_op_msg({**TRAFFIC[1][1], "$db": "blog"}, request_id=1)  # type: ignore[dict-item]
    view = command_view(make_frame(message))
    recorder.record("web", view, engine.decide(view), message)  # a proxy of the fleet that enforces
    [change] = what_if(recorder.snapshot(), engine).changes
    assert (change.count, change.then) == (4, "warned:global_query")


def test_the_overflow_row_is_reported_as_not_decided() -> None:
    recorder = Recorder(1, MARK)
    engine = Engine.from_config(load_config_text(SHADOW))
    for body in (TRAFFIC[0][1], TRAFFIC[1][1]):
        message = encode_op_msg({**body, "$db": "blog"}, request_id=1)
        view = command_view(make_frame(message))
        recorder.record("web", view, engine.decide(view), message)
    result = what_if(recorder.snapshot(), engine)
    assert result.not_decided == 1 and "could not be decided again" in format_whatif(result, "x")


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = tmp_path / "profile.json"
    saved.write_text(json.dumps(profile(SHADOW, TRAFFIC).snapshot().to_json(), indent=1))
    enforce, shadow = tmp_path / "enforce.yaml", tmp_path / "shadow.yaml"
    enforce.write_text(ENFORCE)
    shadow.write_text(SHADOW)
    assert whatif_main(str(enforce), [str(saved)]) == 1
    assert "refused:global_query" in capsys.readouterr().out
    assert whatif_main(str(shadow), [str(saved)], as_json=True) == 0
    assert json.loads(capsys.readouterr().out)["changed"] == 0
    (tmp_path / "bad.yaml").write_text("policy: {rules: {global_query: sometimes}}\n")
    assert whatif_main(str(tmp_path / "bad.yaml"), [str(saved)]) == 2
    assert "bad.yaml:1" in capsys.readouterr().err
    assert whatif_main(str(enforce), [str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    (tmp_path / "junk.jsonl").write_text('{"rows": 1}\nnot json\n')
    assert whatif_main(str(enforce), [str(tmp_path / "junk.jsonl")]) == 2
    assert "junk.jsonl:1" in capsys.readouterr().err
    assert whatif_main(str(enforce), ["mongodb://127.0.0.1:1/nodot"]) == 2
    assert "DB.COLLECTION" in capsys.readouterr().err
