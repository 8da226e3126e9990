"""examples/blog.py against the proxy: prints every step of issue 6's session, and re-runs cleanly."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pymongo
import yaml

from tests.conftest import ProxyProcess

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "blog.py"
FOUND = re.compile(
    r"^\{'_id': ObjectId\('[0-9a-f]{24}'\), 'author': 'Allan', 'title': 'My first post', "
    r"'body': \"Well, I don't actually have anything to write about\.\.\.\"\}$"
)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, cwd=ROOT, timeout=120,
        env={**os.environ, **(env or {})},
    )


def check_output(stdout: str, removed: int) -> None:
    lines = stdout.splitlines()
    assert f"# removed {removed} post(s) left by an earlier run (a targeted delete)" in lines
    i = lines.index(">>> conn.models.BlogPost.find_one({'author': 'Allan'})")
    assert lines[i + 1 : i + 3] == [
        "Traceback (most recent call last):",
        "scalymongo_client.errors.GlobalQueryException: Some or all of the shard key was not specified."
        "  Missing fields were title.",
    ]
    j = lines.index(">>> conn.models.BlogPost.find_one({'author': 'Allan', 'title': 'My first post'})")
    assert FOUND.match(lines[j + 1])
    k = lines.index(">>> conn.models.BlogPost.find_one({'author': 'Allan'}, allow_global=True)")
    assert lines[k + 1] == lines[j + 1]
    assert "# codeName=ScalyGlobalQuery code=29001" in lines


def test_example_runs_twice_against_the_proxy(blog_proxy: ProxyProcess, direct_client: pymongo.MongoClient) -> None:
    direct_client.blog.blog_posts.drop()
    first = run(blog_proxy.uri)
    assert first.returncode == 0, first.stdout + first.stderr
    check_output(first.stdout, 0)
    again = run(env={"SCALY_PROXY_URI": blog_proxy.uri})
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"# connecting to the proxy at {blog_proxy.uri}" in again.stdout
    check_output(again.stdout, 1)


def test_example_module_exports_the_blog_config() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "scalymongo_client", "export-config", "examples.blog"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    mine = yaml.safe_load(done.stdout)["collections"]
    theirs = yaml.safe_load((ROOT / "config" / "blog.yaml").read_text())["collections"]
    theirs["blog.blog_posts"].pop("rules")
    theirs["blog.blog_posts"].pop("required")  # implied by the shard key
    assert mine["blog.blog_posts"].pop("model") == "BlogPost"  # config/blog.yaml names no class
    assert mine == theirs
