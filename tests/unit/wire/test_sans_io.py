"""The codec is pure: its modules import neither asyncio nor socket (h11 style)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import scalyproxy.wire

WIRE = Path(scalyproxy.wire.__file__).parent
FORBIDDEN = {"asyncio", "socket", "selectors", "ssl", "uvloop", "threading", "subprocess"}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_wire_module_imports_io() -> None:
    modules = sorted(WIRE.glob("*.py"))
    assert len(modules) >= 8
    for path in modules:
        assert not imported_modules(path) & FORBIDDEN, path.name
        inside = {m for m in imported_modules(path) if m == "scalyproxy"}
        text = path.read_text()
        assert "scalyproxy.server" not in text and "scalyproxy.admin" not in text, path.name
        assert inside <= {"scalyproxy"}


def test_importing_the_codec_adds_no_io_module() -> None:
    """In a fresh interpreter: whatever the third-party libraries load, importing
    scalyproxy.wire on top of them loads no I/O module of its own."""
    script = (
        "import sys, bson, snappy, zstandard, crc32c\n"
        "before = set(sys.modules)\n"
        "import scalyproxy.wire\n"
        "added = set(sys.modules) - before\n"
        f"bad = sorted(m for m in added if m.split('.')[0] in {sorted(FORBIDDEN)!r})\n"
        "print(bad, 'asyncio' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[] False"
