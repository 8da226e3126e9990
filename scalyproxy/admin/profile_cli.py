"""``scalyproxy profile``, ``whatif`` and ``advise``: read profiles, print them, decide them again.

``profile --admin ADDR`` prints a running proxy's ``/profile`` (exit 0, or 1 when
it cannot be read). ``whatif --config NEW.yaml SOURCE...`` decides every profiled
shape under NEW.yaml (exit 0: nothing allowed or warned would be refused; 1:
something would; 2: bad input, said on stderr). ``advise SOURCE...`` ranks candidate
shard keys per namespace (exit 0: advice printed; 1: nothing to advise on; 2: bad input).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from scalyproxy.config import ConfigError, ProxyConfig, load_config
from scalyproxy.evidence.advisor import AdviseError, advise, format_advice, parse_candidate
from scalyproxy.evidence.table import ProfileTable
from scalyproxy.evidence.text import format_profile
from scalyproxy.evidence.whatif import format_whatif, what_if
from scalyproxy.policy import Engine
from scalyproxy.sinks import SinkError
from scalyproxy.sinks.sources import fetch_profile, read_sources


def profile_main(admin: str, as_json: bool = False) -> int:
    try:
        doc = fetch_profile(admin)
    except SinkError as exc:
        print(f"scalyproxy profile: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=1) if as_json else format_profile(doc))
    return 0


def _inputs(command: str, config: str | None, sources: Sequence[str]) -> tuple[ProxyConfig | None, ProfileTable] | None:
    """The config (when one is named) and the merged profile; None, said on stderr, when
    either cannot be read."""
    cfg = None
    try:
        if config is not None:
            cfg = load_config(config)
        return cfg, read_sources(sources)
    except ConfigError as exc:
        print(f"scalyproxy {command}: {config} does not load:\n{exc}", file=sys.stderr)
    except SinkError as exc:
        print(f"scalyproxy {command}: {exc}", file=sys.stderr)
    return None


def whatif_main(config: str, sources: Sequence[str], as_json: bool = False) -> int:
    inputs = _inputs("whatif", config, sources)
    if inputs is None:
        return 2
    cfg, table = inputs
    assert cfg is not None
    result = what_if(table, Engine.from_config(cfg))
    print(json.dumps(result.as_json(), indent=1) if as_json else format_whatif(result, config))
    return result.exit_status


def advise_main(sources: Sequence[str], namespaces: Sequence[str] = (), candidates: Sequence[str] = (),
                config: str | None = None, as_json: bool = False) -> int:
    try:
        extra = [parse_candidate(text) for text in candidates]
    except AdviseError as exc:
        print(f"scalyproxy advise: {exc}", file=sys.stderr)
        return 2
    inputs = _inputs("advise", config, sources)
    if inputs is None:
        return 2
    cfg, table = inputs
    result = advise(table, cfg, namespaces, extra)
    print(json.dumps(result.as_json(), indent=1) if as_json else format_advice(result))
    return 0 if any(n.assessments for n in result.namespaces) else 1
