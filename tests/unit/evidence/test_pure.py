"""The evidence package is pure: no I/O module, and it never imports the server or the admin side."""

from __future__ import annotations

from pathlib import Path

import scalyproxy.evidence
from tests.unit.wire.test_sans_io import FORBIDDEN, imported_modules

EVIDENCE = Path(scalyproxy.evidence.__file__).parent


def test_no_evidence_module_imports_io_or_the_server() -> None:
    modules = sorted(EVIDENCE.glob("*.py"))
    assert len(modules) >= 6
    for path in modules:
        assert not imported_modules(path) & FORBIDDEN, path.name
        text = path.read_text()
        for layer in ("scalyproxy.server", "scalyproxy.admin", "scalyproxy.sinks"):
            assert f"from {layer}" not in text and f"import {layer}" not in text, (path.name, layer)
