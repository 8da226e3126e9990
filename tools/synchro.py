"""Generate the synchronous client API from its asynchronous source.

The database methods and the cursor are written once, as coroutines, in
``scalymongo_client/asynchronous/``. This script writes their synchronous twins
into ``scalymongo_client/synchronous/`` (committed, never edited by hand):

    python tools/synchro.py            # rewrite the generated modules
    python tools/synchro.py --check    # exit 1, naming each stale module

It works on tokens (``tokenize``), so code is rewritten only where it is code:

* ``async def`` / ``async for`` / ``async with`` lose ``async``; ``await`` is removed;
* names: ``AsyncX`` -> ``X`` (``AsyncMongoClient``, ``AsyncDocumentCursor``...),
  ``__aiter__``/``__anext__``/``__aenter__``/``__aexit__`` -> the sync dunders,
  ``StopAsyncIteration`` -> ``StopIteration``, ``asynchronous`` -> ``synchronous``;
* strings and comments (docstrings) get the same rules as words, plus
  "an Async..." -> "a ...".

An async class may extend its own sync twin (``class AsyncDatabaseMethods(
DatabaseMethods, Declaration)``): then a class that mixes both, like
``AsyncModel``, type-checks, since each coroutine overrides its sync method.
The twin drops what only makes sense on the async side (after the token
pass, on the syntax tree): a base that is the class itself, the import of a
name the module itself defines, and ``# type: ignore[override]`` (an async
method overriding its sync twin is an incompatible override by nature).

Each output starts with a header naming its source. The async source keeps
what translates cleanly: sibling modules are imported relatively
(``from .cursor import ...``) so the import order holds in both twins, and an
awaited call is never wrapped in parentheses that the sync twin would keep.
tests/unit/client/test_synchro.py runs :func:`stale` and fails on any difference.
"""

from __future__ import annotations

import argparse
import ast
import io
import re
import sys
import tokenize
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = Path("scalymongo_client/asynchronous")
TARGET_DIR = Path("scalymongo_client/synchronous")
SKIPPED = frozenset({"__init__.py"})  # each package's __init__ is its own (hand-written) docstring

NAMES = {
    "__aiter__": "__iter__",
    "__anext__": "__next__",
    "__aenter__": "__enter__",
    "__aexit__": "__exit__",
    "StopAsyncIteration": "StopIteration",
    "asynchronous": "synchronous",
    "aiter": "iter",
    "anext": "next",
    "aclose": "close",
}
_ASYNC_PREFIX = re.compile(r"^(_?)Async(?=[A-Z])")
_ASYNC_KEYWORD_BEFORE = frozenset({"def", "for", "with"})

_WORD = re.compile(r"\b_?Async[A-Z]\w*\b|\b(?:" + "|".join(map(re.escape, NAMES)) + r")\b")
_PROSE_RULES = (
    (re.compile(r"\b([Aa])n (``|`|')?(?=_?Async[A-Z])"), r"\1 \2"),
    (re.compile(r"\basync (?=(?:def|for|with)\b)"), ""),
    (re.compile(r"\bawait "), ""),
)

_FSTRING_START = getattr(tokenize, "FSTRING_START", None)  # Python >= 3.12 splits f-strings
_FSTRING_END = getattr(tokenize, "FSTRING_END", None)


def sync_name(name: str) -> str:
    """The synchronous spelling of one identifier (unchanged when it has none)."""
    return NAMES.get(name) or _ASYNC_PREFIX.sub(r"\1", name)


def translate_prose(text: str) -> str:
    """A string literal or comment with the same renames as the code."""
    for pattern, replacement in _PROSE_RULES:
        text = pattern.sub(replacement, text)
    return _WORD.sub(lambda m: sync_name(m.group()), text)


Edit = tuple[int, int, str]  # absolute [start, end) of the source, and what replaces it

_OVERRIDE_IGNORE = "# type: ignore[override]"


class SynchroError(ValueError):
    """The async source uses a shape the generator cannot translate (the message says which)."""


def _line_starts(source: str) -> list[int]:
    """The absolute offset of each line start (1-based rows, as tokenize and ast count them)."""
    starts = [0, 0]
    for line in source.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    return starts


def _apply(source: str, edits: list[Edit]) -> str:
    out = source
    for start, end, text in sorted(edits, reverse=True):
        out = out[:start] + text + out[end:]
    return out


def _token_edits(source: str) -> list[Edit]:
    lines = _line_starts(source)

    def at(pos: tuple[int, int]) -> int:
        return lines[pos[0]] + pos[1]

    tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    edits: list[Edit] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.type == _FSTRING_START:  # one unit, as a Python 3.11 STRING token is
            depth, j = 1, i
            while depth:
                j += 1
                depth += (tokens[j].type == _FSTRING_START) - (tokens[j].type == _FSTRING_END)
            start, end = at(tok.start), at(tokens[j].end)
            edits.append((start, end, translate_prose(source[start:end])))
            i = j + 1
            continue
        if tok.type == tokenize.NAME:
            nxt = tokens[i + 1]
            if tok.string == "await" or (tok.string == "async" and nxt.string in _ASYNC_KEYWORD_BEFORE):
                edits.append((at(tok.start), at(nxt.start), ""))
            elif sync_name(tok.string) != tok.string:
                edits.append((at(tok.start), at(tok.end), sync_name(tok.string)))
        elif tok.type == tokenize.COMMENT and tok.string == _OVERRIDE_IGNORE:
            start = at(tok.start)
            while source[start - 1] in " \t":
                start -= 1
            edits.append((start, at(tok.end), ""))
        elif tok.type in (tokenize.STRING, tokenize.COMMENT):
            edits.append((at(tok.start), at(tok.end), translate_prose(tok.string)))
        i += 1
    return edits


class _Positions:
    """Absolute offsets of ``ast`` positions (whose columns count UTF-8 bytes)."""

    def __init__(self, source: str) -> None:
        self.starts = _line_starts(source)
        self.lines = source.splitlines(keepends=True)

    def at(self, lineno: int, col: int) -> int:
        return self.starts[lineno] + len(self.lines[lineno - 1].encode()[:col].decode())

    def start(self, node: ast.expr | ast.stmt) -> int:
        return self.at(node.lineno, node.col_offset)

    def end(self, node: ast.expr) -> int:
        return self.at(node.end_lineno or node.lineno, node.end_col_offset or 0)

    def whole_lines(self, node: ast.stmt) -> tuple[int, int]:
        last = node.end_lineno or node.lineno
        return self.starts[node.lineno], self.starts[last] + len(self.lines[last - 1])


def _self_import(node: ast.Import | ast.ImportFrom, defined: set[str], pos: _Positions) -> list[Edit]:
    """An import of a name this module defines (the twin importing itself) is dropped whole."""
    mine = [a.name for a in node.names if (a.asname or a.name) in defined]
    if not mine:
        return []
    if len(mine) < len(node.names):
        raise SynchroError(f"line {node.lineno}: import {mine[0]} in an import statement of its own")
    start, end = pos.whole_lines(node)
    return [(start, end, "")]


def _self_base(node: ast.ClassDef, pos: _Positions) -> list[Edit]:
    """A class listing itself as a base (the async class extending its twin): that base is dropped."""
    bases = node.bases
    for k, base in enumerate(bases):
        if not (isinstance(base, ast.Name) and base.id == node.name):
            continue
        if len(bases) == 1:
            raise SynchroError(f"class Async{node.name}: list the base of {node.name} after it")
        if k + 1 < len(bases):
            return [(pos.start(base), pos.start(bases[k + 1]), "")]
        return [(pos.end(bases[k - 1]), pos.end(base), "")]
    return []


def _twin_edits(source: str) -> list[Edit]:
    """Drop, from the translated module, what only the async side needs (see the module docstring)."""
    tree = ast.parse(source)
    pos = _Positions(source)
    defined = {n.name for n in tree.body if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)}
    edits: list[Edit] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            edits += _self_import(node, defined, pos)
        elif isinstance(node, ast.ClassDef):
            edits += _self_base(node, pos)
    return edits


def translate(source: str) -> str:
    """The synchronous twin of an asynchronous module's source (no header)."""
    tokens_done = _apply(source, _token_edits(source))
    return _apply(tokens_done, _twin_edits(tokens_done))


def header(source_path: Path) -> str:
    return (
        f"# Generated from {source_path.as_posix()} by tools/synchro.py; do not edit.\n"
        "# Edit the asynchronous source, then run: python tools/synchro.py\n"
    )


def generated(root: Path = ROOT) -> dict[Path, str]:
    """Every generated module, by its path relative to ``root``, as the generator writes it."""
    out: dict[Path, str] = {}
    for source in sorted((root / SOURCE_DIR).glob("*.py")):
        if source.name in SKIPPED:
            continue
        relative = SOURCE_DIR / source.name
        out[TARGET_DIR / source.name] = header(relative) + translate(source.read_text(encoding="utf-8"))
    return out


def _orphans(root: Path, expected: dict[Path, str]) -> list[Path]:
    """Generated modules (by their header) whose asynchronous source is gone."""
    found = []
    for path in sorted((root / TARGET_DIR).glob("*.py")):
        relative = TARGET_DIR / path.name
        if relative not in expected and path.read_text(encoding="utf-8").startswith("# Generated from "):
            found.append(relative)
    return found


def _out_of_date(root: Path, expected: dict[Path, str]) -> dict[Path, str]:
    """Generated modules that are missing or differ, with what is wrong with each."""
    out = {}
    for relative, text in expected.items():
        path = root / relative
        if not path.exists():
            out[relative] = "missing"
        elif path.read_text(encoding="utf-8") != text:
            out[relative] = "differs from what tools/synchro.py generates"
    return out


def stale(root: Path = ROOT) -> list[str]:
    """What differs between the committed generated modules and the generator's output (empty: none)."""
    expected = generated(root)
    problems = [f"{relative}: {why}" for relative, why in _out_of_date(root, expected).items()]
    problems.extend(f"{relative}: its source is gone" for relative in _orphans(root, expected))
    return problems


def write(root: Path = ROOT) -> list[Path]:
    """Write every generated module that is out of date (and delete orphans); returns what changed."""
    expected = generated(root)
    changed = list(_out_of_date(root, expected))
    for relative in changed:
        (root / relative).write_text(expected[relative], encoding="utf-8")
    for relative in _orphans(root, expected):
        (root / relative).unlink()
        changed.append(relative)
    return changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Generate the synchronous client API from its asynchronous source.")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated module is stale")
    args = parser.parse_args(argv)
    if args.check:
        problems = stale()
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python tools/synchro.py", file=sys.stderr)
        return 1 if problems else 0
    for relative in write():
        print(f"wrote {relative}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
