"""The sync API is generated from the async source (tools/synchro.py): nobody edits the twin by hand."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

from scalymongo_client.asynchronous.cursor import AsyncDocumentCursor
from scalymongo_client.asynchronous.methods import AsyncDatabaseMethods
from scalymongo_client.synchronous.cursor import DocumentCursor
from scalymongo_client.synchronous.methods import DatabaseMethods

ROOT = Path(__file__).resolve().parents[3]


def _load_synchro() -> ModuleType:
    spec = importlib.util.spec_from_file_location("synchro", ROOT / "tools" / "synchro.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


synchro = _load_synchro()


def test_the_committed_twins_are_what_the_generator_makes() -> None:
    expected = synchro.generated(ROOT)
    assert {p.name for p in expected} == {"cursor.py", "methods.py"}
    for relative, text in expected.items():
        committed = (ROOT / relative).read_text(encoding="utf-8")
        assert committed == text, (
            f"{relative} is not what tools/synchro.py makes from its async source: edit "
            f"scalymongo_client/asynchronous/{relative.name}, then run: python tools/synchro.py"
        )
    assert synchro.stale(ROOT) == []


def _copy_tree(tmp_path: Path) -> Path:
    for folder in (synchro.SOURCE_DIR, synchro.TARGET_DIR):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def test_a_hand_edit_a_missing_twin_and_an_orphan_are_caught_and_rewritten(tmp_path: Path) -> None:
    root = _copy_tree(tmp_path)
    assert synchro.stale(root) == []
    methods = root / synchro.TARGET_DIR / "methods.py"
    methods.write_text(methods.read_text().replace("return names", "return sorted(names)"))
    (root / synchro.TARGET_DIR / "cursor.py").unlink()
    (root / synchro.TARGET_DIR / "gone.py").write_text("# Generated from scalymongo_client/asynchronous/gone.py\n")
    (root / synchro.TARGET_DIR / "hand_written.py").write_text('"""Not generated: left alone."""\n')
    assert synchro.stale(root) == [
        "scalymongo_client/synchronous/cursor.py: missing",
        "scalymongo_client/synchronous/methods.py: differs from what tools/synchro.py generates",
        "scalymongo_client/synchronous/gone.py: its source is gone",
    ]
    changed = synchro.write(root)
    assert sorted(p.name for p in changed) == ["cursor.py", "gone.py", "methods.py"]
    assert synchro.stale(root) == [] and not (root / synchro.TARGET_DIR / "gone.py").exists()
    assert (root / synchro.TARGET_DIR / "hand_written.py").exists()


def test_the_check_command() -> None:
    done = subprocess.run(
        [sys.executable, "tools/synchro.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr


ASYNC_SOURCE = '''\
"""Talks to an ``AsyncMongoClient``: ``async for doc in cursor``, ``await doc.save()``."""

from scalymongo_client.synchronous.thing import Thing

from .other import AsyncHelper, helper


class AsyncThing(Thing, Base):
    """Bound to an ``AsyncConnection``; an AsyncThing is not a StopAsyncIteration."""

    async def fetch(self, client: AsyncMongoClient) -> AsyncHelper:  # type: ignore[override]
        async with client.start_session() as session:
            n = int(await client.count(session=session))
        async for doc in self:
            await doc.save()
        return AsyncHelper(await helper(n), f"{AsyncHelper.__name__}: {n}")

    def __aiter__(self) -> AsyncThing:  # keep this comment about AsyncThing
        return self

    async def __anext__(self) -> int:
        raise StopAsyncIteration

    async def __aenter__(self) -> AsyncThing:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
'''

SYNC_TWIN = '''\
"""Talks to a ``MongoClient``: ``for doc in cursor``, ``doc.save()``."""


from .other import Helper, helper


class Thing(Base):
    """Bound to a ``Connection``; a Thing is not a StopIteration."""

    def fetch(self, client: MongoClient) -> Helper:
        with client.start_session() as session:
            n = int(client.count(session=session))
        for doc in self:
            doc.save()
        return Helper(helper(n), f"{Helper.__name__}: {n}")

    def __iter__(self) -> Thing:  # keep this comment about Thing
        return self

    def __next__(self) -> int:
        raise StopIteration

    def __enter__(self) -> Thing:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
'''


def test_translation_rules() -> None:
    """Every rule at once, in code, docstrings and comments (an f-string is translated as prose)."""
    assert synchro.translate(ASYNC_SOURCE) == SYNC_TWIN


@pytest.mark.parametrize(
    ("name", "expected"),
    [("AsyncMongoClient", "MongoClient"), ("_AsyncBulk", "_Bulk"), ("Asynchronous", "Asynchronous"),
     ("AsyncioLoop", "AsyncioLoop"), ("__anext__", "__next__"), ("anext", "next"), ("make_async", "make_async")],
)
def test_sync_name(name: str, expected: str) -> None:
    assert synchro.sync_name(name) == expected


def test_shapes_the_generator_cannot_translate_are_refused() -> None:
    mixed = "from scalymongo_client.synchronous.x import Thing, other\n\nclass AsyncThing(Thing, Base):\n    pass\n"
    with pytest.raises(synchro.SynchroError, match="import Thing in an import statement of its own"):
        synchro.translate(mixed)
    alone = "class AsyncThing(Thing):\n    pass\n"
    with pytest.raises(synchro.SynchroError, match="list the base of Thing after it"):
        synchro.translate(alone)


@pytest.mark.parametrize("relative", sorted(synchro.generated(ROOT)), ids=lambda p: p.name)
def test_the_twins_have_nothing_async_left(relative: Path) -> None:
    tree = ast.parse((ROOT / relative).read_text(encoding="utf-8"))
    left = [type(n).__name__ for n in ast.walk(tree) if isinstance(n, ast.AsyncFunctionDef | ast.Await | ast.AsyncFor | ast.AsyncWith)]
    assert left == []
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
        n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef)
    }
    assert not [n for n in names if n.startswith("Async") or n in synchro.NAMES]


@pytest.mark.parametrize(
    ("async_cls", "sync_cls"), [(AsyncDatabaseMethods, DatabaseMethods), (AsyncDocumentCursor, DocumentCursor)]
)
def test_each_coroutine_has_a_plain_twin_with_the_same_parameters(async_cls: type, sync_cls: type) -> None:
    coroutines = {n for n, f in vars(async_cls).items() if inspect.iscoroutinefunction(getattr(async_cls, n))}
    assert len(coroutines) >= 3
    for name in coroutines:
        sync_name = synchro.sync_name(name)
        twin = getattr(sync_cls, sync_name)
        assert sync_name in vars(sync_cls) and not inspect.iscoroutinefunction(twin), name
        params = inspect.signature(getattr(async_cls, name)).parameters
        assert inspect.signature(twin).parameters == params, name


def test_the_async_methods_override_their_sync_twins() -> None:
    """So a class mixing both (AsyncModel) type-checks; the twin itself extends only Declaration."""
    assert DatabaseMethods in AsyncDatabaseMethods.__mro__
    assert AsyncDatabaseMethods not in DatabaseMethods.__mro__
    source = (ROOT / synchro.TARGET_DIR / "methods.py").read_text(encoding="utf-8")
    assert "class DatabaseMethods(Declaration):" in source and "type: ignore[override]" not in source
    assert textwrap.dedent(source).startswith(synchro.header(synchro.SOURCE_DIR / "methods.py"))
