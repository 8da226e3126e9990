"""The repository stands on its own: no tracked file that runs or tests the project
names a path outside the checkout (the team's sibling ``shared`` folder, a home directory,
this machine's ``/work``), and nothing in tests/ picks a "free" port to bind later.

A fresh clone into an empty folder must pass ``./scripts/test``; a path outside the
repository is how that breaks silently (a glob over a missing folder is empty).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import scalyproxy.backend

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("tests", "scripts", "bench", ".ci", "tools", "scalyproxy", "scalymongo_client",
           "Makefile", "pyproject.toml", "setup.py", "Dockerfile", "docker-compose.yml")
# written so that this file's own source does not match them
OUTSIDE = {
    "a relative path climbing out of its folder": re.compile(r"\.\.[/\\]"),
    "a pathlib join with '..'": re.compile(r"/\s*[\"']\.\.[\"']"),
    "the team's shared folder": re.compile(r"\bshared[\"']?\s*[/\\]\s*[\"']?(?:vectors|specs|GUIDE)"),
    "an absolute path on this machine": re.compile(r"(?<![\w.~-])/(?:work|home|root|Users|mnt)/"),
}
BINARY_SUFFIXES = {".bin", ".so", ".png", ".gz", ".pem", ".der"}


def tracked_files() -> list[Path]:
    """The files git tracks under SCANNED (the fresh clone's contents)."""
    if not (ROOT / ".git").exists():
        pytest.fail(f"{ROOT} is not a git checkout: the hygiene check reads `git ls-files`")
    out = subprocess.run(["git", "ls-files", "-z", "--", *SCANNED], cwd=ROOT, capture_output=True,
                         check=True, timeout=60).stdout
    return [ROOT / name for name in out.decode().split("\0") if name]


def offences(text: str) -> list[str]:
    """What in ``text`` names a path outside the repository: one entry per line and kind."""
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for kind, pattern in OUTSIDE.items():
            if pattern.search(line):
                found.append(f"{number}: {kind}: {line.strip()[:120]}")
    return found


def test_the_patterns_catch_what_broke_the_fresh_clone() -> None:
    # the examples are cut into pieces so that this file itself passes the scan below
    shared, up = "sha" + "red", "." + "."
    old = f'CORPUS = Path(__file__).resolve().parents[3] / "{up}" / "{shared}" / "vectors" / "bson-corpus"'
    assert len(offences(old)) == 2
    assert offences("cat " + "/work" + f"/{shared}/GUIDE.md")
    assert offences(f"DATA={up}/{shared}/vectors")
    assert offences("open('" + "/home" + "/alice/x.json')")
    assert offences(f'cfg = ROOT / "{up}" / "other"')
    for fine in ('if ".." in name:', "mktemp -d /tmp/x.XXXX", "${XDG_CACHE_HOME:-$HOME/.cache}",
                 "ROOT / 'tests' / 'vectors'", "https://example.org/home/x"):
        assert not offences(fine), fine


def test_no_tracked_file_names_a_path_outside_the_repository() -> None:
    files = tracked_files()
    assert any(f.name == "conftest.py" for f in files) and len(files) > 100
    bad = {}
    for path in files:
        if path.suffix in BINARY_SUFFIXES or not path.is_file():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if found := offences(text):
            bad[str(path.relative_to(ROOT))] = found
    assert not bad, "paths outside the repository:\n" + "\n".join(
        f"{name}:{line}" for name, lines in bad.items() for line in lines)


def test_no_test_picks_a_free_port_to_bind_later() -> None:
    """Servers in tests bind port 0 and read the port back (docs/ferretdb.md): the
    helper that picked a "free" port to bind later is gone, and nothing brings it back."""
    assert not hasattr(scalyproxy.backend, "free_port")
    pick = re.compile(r"\bfree_port\b")
    users = [str(p.relative_to(ROOT)) for p in tracked_files()
             if p.suffix == ".py" and p.name != Path(__file__).name
             and p.parts[len(ROOT.parts)] in ("tests", "bench", "scripts", "scalyproxy")
             and pick.search(p.read_text(encoding="utf-8"))]
    assert users == []
