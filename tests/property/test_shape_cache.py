"""The engine's verdict cache by shape answers exactly what the engine decides.

:meth:`Engine.decide_message` answers a find, count, distinct or aggregate whose
keyed shape id it has seen with the verdict of the first command of that shape.
That is right only if every command of one shape gets the very same verdict,
findings, messages and logged shapes included: not only the same rule and code
(what whatif needs, tests/property/test_skeleton_faithful.py), since the client
reads the message and the log shows the shape. Commands and configs are
generated; each command meets a twin first: the command rebuilt from its
skeleton, other values in the same places, whose verdict fills the cache.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import bson
import pytest
from hypothesis import HealthCheck, assume, given, settings

from scalyproxy.config import ProxyConfig
from scalyproxy.evidence.skeleton import command_of, skeleton_of
from scalyproxy.policy import Engine
from scalyproxy.policy.engine import SHAPE_CACHED
from scalyproxy.wire import command_view, encode_op_msg, make_frame

try:
    from scalyproxy._scan import shape_key
except ImportError:  # pragma: no cover
    shape_key = None  # type: ignore[assignment]
from tests.property.commands import MARK, bodies, configs

pytestmark = pytest.mark.skipif(shape_key is None, reason="the C extension is not built: nothing is cached")


def message_of(body: dict[str, Any], sequences: dict[str, list[Any]]) -> tuple[Any, bytes] | None:
    try:
        message = encode_op_msg(body, request_id=7, sequences=sequences or None)
        return command_view(make_frame(message)), message
    except (bson.errors.InvalidDocument, OverflowError, ValueError):
        return None


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(configs(), bodies())
def test_a_cached_verdict_is_the_verdict_of_the_command(
    cfg: ProxyConfig, command: tuple[dict[str, Any], dict[str, list[Any]]]
) -> None:
    first = message_of(*command)
    assume(first is not None and first[0].name in SHAPE_CACHED)
    assert first is not None
    view, message = first
    skeleton = skeleton_of(view.name, view.body, view.sequences, MARK)
    rebuilt = command_of(json.loads(json.dumps(skeleton)), MARK)
    twin = message_of(dict(rebuilt.body), {k: list(v) for k, v in rebuilt.sequences.items()})
    assume(twin is not None)
    assert twin is not None
    engine = Engine(cfg)
    key = shape_key(message, MARK.encode(), engine._secret)
    assume(key is not None)
    assert shape_key(twin[1], MARK.encode(), engine._secret) == key, json.dumps(skeleton)
    engine.decide_message(twin[0], twin[1])  # the twin's verdict is cached under the shared key
    assert engine.decide_message(view, message) == Engine(cfg).decide(view), json.dumps(skeleton)


def test_the_key_is_secret_per_engine() -> None:
    """Two engines (two processes, or one after a reload) key shapes differently: a shape id seen
    in one says nothing about another."""
    message = encode_op_msg({"find": "a", "filter": {"k": 1}, "$db": "d"}, request_id=1)
    one, two = Engine(ProxyConfig()), Engine(ProxyConfig())
    assert shape_key(message, MARK.encode(), one._secret) != shape_key(message, MARK.encode(), two._secret)


def test_a_shape_is_decided_once_and_other_values_are_answered_from_the_cache() -> None:
    cfg_text = """
collections:
  d.a:
    structure: {k: int, j: string}
    indexes: [{fields: [k], shard_key: true}]
"""
    from scalyproxy.config import load_config_text

    engine = Engine(load_config_text(cfg_text))
    decided: list[Any] = []
    real = engine.decide
    engine.decide = lambda cmd: decided.append(cmd) or real(cmd)  # type: ignore[method-assign]
    verdicts = []
    for j in ("x", "y", "z"):
        message = encode_op_msg({"find": "a", "filter": {"j": j}, "$db": "d"}, request_id=1)
        verdicts.append(engine.decide_message(command_view(make_frame(message)), message))
    assert len(decided) == 1
    assert verdicts[0].refusal is not None and verdicts[0].refusal.rule == "global_query"
    assert verdicts[1] is verdicts[0] and verdicts[2] is verdicts[0]
    # a repeated key is left to the engine each time (the C code leaves its skeleton to Python)
    body = bson.encode({"find": "a", "filter": {"j": "x", "J": "y"}, "$db": "d"}).replace(b"\x02J\x00", b"\x02j\x00")
    message = struct.pack("<iiiiI", 21 + len(body), 1, 0, 2013, 0) + b"\x00" + body
    assert shape_key(message, MARK.encode(), engine._secret) is None
    engine.decide_message(command_view(make_frame(message)), message)
    engine.decide_message(command_view(make_frame(message)), message)
    assert len(decided) == 3
