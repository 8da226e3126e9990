"""scalymongo_client's modules import one another without a cycle, TYPE_CHECKING imports included."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[3] / "scalymongo_client"


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, known: set[str]) -> set[str]:
    """The package's modules that one import statement needs (every branch, TYPE_CHECKING too)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in known}
    base = node.module or ""
    if node.level:
        anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, base] if base else anchor)
    found = set()
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        found.add(sub if sub in known else base)
    return found & known


def import_graph(root: Path) -> dict[str, set[str]]:
    paths = {_module_name(p, root): p for p in root.rglob("*.py")}
    known = set(paths)
    graph: dict[str, set[str]] = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        edges: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                edges |= _imported(node, module, path.name == "__init__.py", known)
        graph[module] = edges - {module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_no_import_cycle_in_the_client() -> None:
    graph = import_graph(PACKAGE)
    assert "scalymongo_client.cursor_base" in graph["scalymongo_client.asynchronous.cursor"]
    assert "scalymongo_client.synchronous.cursor" in graph["scalymongo_client.synchronous.methods"]
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_cursor_knows_no_document_class() -> None:
    graph = import_graph(PACKAGE)
    for cursor in ("cursor_base", "asynchronous.cursor", "synchronous.cursor"):
        needs = graph[f"scalymongo_client.{cursor}"]
        assert not needs & {"scalymongo_client.document", "scalymongo_client.declaration"}, cursor


def test_a_type_checking_cycle_is_found(tmp_path: Path) -> None:
    """The shape the client had: cursor imports document under TYPE_CHECKING, document imports cursor."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cursor.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.document import Document\n")
    (pkg / "document.py").write_text("from .cursor import DocumentCursor\n")
    assert find_cycle(import_graph(pkg)) == ["pkg.cursor", "pkg.document", "pkg.cursor"]
