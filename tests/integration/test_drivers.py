"""Driver compatibility tier (issue 10): MongoDB clients nobody here wrote, through the proxy.

Each driver runs one program from tests/drivers/ against ``blog_proxy`` (config/blog.yaml
in front of the session's FerretDB): PyMongo sync and async, the Node.js driver, mongosh
and the Go driver. A program prints one JSON line per check (see docs/drivers.md); this
test asserts every check, then looks at the backend directly to confirm that what the
driver wrote through the proxy is there and that what the proxy refused is not.

Every run is recorded in .cache/driver-results.json (``SCALY_DRIVER_RESULTS`` overrides
the path), from which scripts/driver_table.py renders the README's table. A missing
tool (node, go) or missing npm packages fails the test, with the fix in the message.

To point the tier at a proxy started by hand, set ``SCALY_DRIVER_PROXY_URI`` and
``SCALY_DRIVER_BACKEND_URI`` (the proxy's upstream, for the direct checks).
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pymongo
import pytest

ROOT = Path(__file__).resolve().parents[2]
DRIVERS_DIR = ROOT / "tests" / "drivers"
NODE_DIR, GO_DIR, PY_DIR = DRIVERS_DIR / "node", DRIVERS_DIR / "go", DRIVERS_DIR / "python"
RESULTS_PATH = Path(os.environ.get("SCALY_DRIVER_RESULTS", ROOT / ".cache" / "driver-results.json"))
RUN_TIMEOUT_S = 180
BUILD_TIMEOUT_S = 600

# the checks every program reports, in this order (docs/drivers.md describes each)
CHECKS = (
    "connect", "insert", "find_shard_key", "cursor_getmore", "update", "delete", "session",
    "transaction", "global_refused", "global_allowed", "schema_refused", "schema_batch_refused",
    "heartbeats",
)
REFUSED_TITLES = ["bad-schema", "batch-ok", "batch-bad"]
CURSOR_TITLES = [f"c{i:02d}" for i in range(49)]  # c49 is deleted by the "delete" check


class PrerequisiteMissing(Exception):
    """A tool or package the driver tier needs is not there; the message says how to get it."""


# --- the drivers -----------------------------------------------------------------------


@dataclass(frozen=True)
class Driver:
    key: str
    command: Callable[[str, str], list[str]]  # (proxy uri, author) -> argv
    prepare: Callable[[], None] = lambda: None  # raises PrerequisiteMissing
    cwd: Path = DRIVERS_DIR

    @property
    def author(self) -> str:
        """The data set of this driver: the blog posts with this author."""
        return f"drivers-{self.key}"


def need_tool(name: str, what: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise PrerequisiteMissing(f"`{name}` not found on PATH: install {what}, then run ./scripts/setup")
    return path


def need_npm_packages() -> None:
    """node on PATH and node_modules holding exactly the versions package.json pins."""
    need_tool("node", "Node.js >= 20.19 (the driver tier runs the npm packages mongodb and mongosh)")
    wanted = json.loads((NODE_DIR / "package.json").read_text())["dependencies"]
    for name, version in wanted.items():
        manifest = NODE_DIR / "node_modules" / name / "package.json"
        have = json.loads(manifest.read_text())["version"] if manifest.exists() else "nothing"
        if have != version:
            raise PrerequisiteMissing(
                f"npm package {name}: package.json pins {version}, node_modules has {have}: "
                "run ./scripts/setup (it runs `npm ci` in tests/drivers/node)"
            )


def build_go_program() -> None:
    """(Re)build tests/drivers/go/bin/godriver: about 0.2 s when the Go build cache is warm."""
    go = need_tool("go", "Go >= 1.25 (the driver tier builds a Go driver program)")
    try:
        proc = subprocess.run(
            [go, "build", "-o", "bin/godriver", "."], cwd=GO_DIR, capture_output=True, text=True,
            timeout=BUILD_TIMEOUT_S, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise PrerequisiteMissing(f"`go build` in {GO_DIR} took over {BUILD_TIMEOUT_S}s") from None
    if proc.returncode != 0:
        raise PrerequisiteMissing(f"`go build` in {GO_DIR} failed:\n{proc.stdout}{proc.stderr}")


def mongosh_uri(uri: str, author: str) -> str:
    options = f"appName=scaly-driver-{author}&heartbeatFrequencyMS=500&monitorCommands=true"
    return f"{uri.rstrip('/')}/?{options}&serverSelectionTimeoutMS=10000"


DRIVERS = [
    Driver(
        "pymongo-sync",
        lambda uri, author: [sys.executable, "-W", "error", "pymongo_driver.py", "sync", uri, author],
        cwd=PY_DIR,
    ),
    Driver(
        "pymongo-async",
        lambda uri, author: [sys.executable, "-W", "error", "pymongo_driver.py", "async", uri, author],
        cwd=PY_DIR,
    ),
    Driver(
        "node-mongodb",
        lambda uri, author: ["node", "driver.mjs", uri, author],
        prepare=need_npm_packages,
        cwd=NODE_DIR,
    ),
    Driver(
        "mongosh",
        lambda uri, author: [
            str(NODE_DIR / "node_modules" / ".bin" / "mongosh"), mongosh_uri(uri, author),
            "--quiet", "--file", "mongosh_checks.js",
        ],
        prepare=need_npm_packages,
        cwd=NODE_DIR,
    ),
    Driver(
        "go-driver",
        lambda uri, author: [str(GO_DIR / "bin" / "godriver"), uri, author],
        prepare=build_go_program,
        cwd=GO_DIR,
    ),
]


# --- running a program and reading its report ----------------------------------------------


@dataclass
class Report:
    """What one driver program printed."""

    header: dict[str, Any] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    done: bool = False
    returncode: int | None = None
    output: str = ""  # stdout lines that were not JSON, then stderr: shown when a check fails

    def failed(self) -> list[dict[str, Any]]:
        return [c for c in self.checks if not c.get("ok")]

    def check(self, name: str) -> dict[str, Any]:
        return next((c for c in self.checks if c.get("check") == name), {})


def parse_report(stdout: str, stderr: str = "", returncode: int | None = None) -> Report:
    report = Report(returncode=returncode)
    other: list[str] = []
    for line in stdout.splitlines():
        try:
            item = json.loads(line)
        except ValueError:
            item = None
        if not isinstance(item, dict):
            other.append(line)
        elif "check" in item:
            report.checks.append(item)
        elif "driver" in item:
            report.header = item
        elif item.get("done") is True:
            report.done = True
        else:
            other.append(line)
    report.output = "\n".join(other + [stderr]).strip()
    return report


def run_program(driver: Driver, uri: str, home: Path) -> Report:
    env = {**os.environ, "SCALY_DRIVER_AUTHOR": driver.author, "HOME": str(home)}
    try:
        proc = subprocess.run(
            driver.command(uri, driver.author), cwd=driver.cwd, env=env, capture_output=True,
            text=True, timeout=RUN_TIMEOUT_S, stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
        return parse_report(out, f"killed after {RUN_TIMEOUT_S}s")
    return parse_report(proc.stdout, proc.stderr, proc.returncode)


def fresh_home(home: Path) -> None:
    """A fresh HOME for the program: mongosh writes its log and config there (telemetry off)."""
    config = home / ".mongodb" / "mongosh"
    config.mkdir(parents=True, exist_ok=True)
    (config / "config").write_text('{"enableTelemetry": false}')


# --- the results file ------------------------------------------------------------------------


def backend_name(client: pymongo.MongoClient[dict[str, Any]]) -> str:
    info = client.admin.command("buildInfo")
    gomod = (ROOT / "tools" / "ferretdb" / "go.mod").read_text()
    found = re.search(r"github\.com/FerretDB/FerretDB (v[\w.\-]+)", gomod)
    name = f"FerretDB {found.group(1)}" if found else "the backend"
    return f"{name} (reports MongoDB {info.get('version', '?')})"


def record_result(key: str, entry: dict[str, Any], backend: str) -> None:
    """Merge one driver's entry into the results file (written whole, then renamed)."""
    try:
        data = json.loads(RESULTS_PATH.read_text())
    except (OSError, ValueError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("drivers"), dict):
        data = {"drivers": {}}
    data["backend"] = backend
    data["drivers"][key] = entry
    RESULTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS_PATH.with_name(RESULTS_PATH.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(RESULTS_PATH)


def result_entry(report: Report, error: str | None = None) -> dict[str, Any]:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    entry: dict[str, Any] = {**report.header, "ran_at": now, "checks": report.checks}
    entry["passed"] = error is None and not report.failed() and len(report.checks) == len(CHECKS)
    if error:
        entry["error"] = error
    return entry


# --- the test ----------------------------------------------------------------------------------


@dataclass
class Target:
    uri: str
    backend: pymongo.MongoClient[dict[str, Any]]


@pytest.fixture()
def target(request: pytest.FixtureRequest) -> Iterator[Target]:
    """The proxy to drive and a direct client to its backend (the session's, or the env's)."""
    uri, backend_uri = os.environ.get("SCALY_DRIVER_PROXY_URI"), os.environ.get("SCALY_DRIVER_BACKEND_URI")
    if uri and backend_uri:
        client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(backend_uri)
        try:
            yield Target(uri, client)
        finally:
            client.close()
        return
    yield Target(request.getfixturevalue("blog_proxy").uri, request.getfixturevalue("direct_client"))


def describe(report: Report) -> str:
    lines = [f"  {c.get('check')}: {'ok' if c.get('ok') else 'FAILED'}: {c.get('detail')}" for c in report.checks]
    return "\n".join([f"exit status {report.returncode}", *lines, report.output[-3000:]])


def assert_backend_state(coll: Any, author: str, report: Report) -> None:
    """What the driver wrote through the proxy is in the backend; what was refused is not."""
    refused = coll.count_documents({"author": author, "title": {"$in": REFUSED_TITLES}})
    assert refused == 0, f"{refused} refused document(s) reached the backend"
    first = coll.find_one({"author": author, "title": "first"})
    assert first is not None and first["body"] == "edited", f"update not in the backend: {first}"
    assert type(first["unique_views"]) is int and first["unique_views"] == 2, first
    assert coll.find_one({"author": author, "title": "c49"}) is None, "deleted document still there"
    titles = {d["title"] for d in coll.find({"author": author}, {"title": 1})}
    committed = not report.check("transaction").get("backend_limit")
    expected = {"first", "session", *CURSOR_TITLES, *(["txn"] if committed else [])}
    assert titles == expected, f"backend holds {sorted(titles ^ expected)} unexpectedly (symmetric difference)"


def prerequisite_missing(driver: Driver) -> str | None:
    try:
        driver.prepare()
    except PrerequisiteMissing as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("driver", DRIVERS, ids=[d.key for d in DRIVERS])
def test_driver_through_proxy(driver: Driver, target: Target, tmp_path: Path) -> None:
    coll = target.backend.blog.blog_posts
    coll.delete_many({"author": driver.author})
    backend = backend_name(target.backend)
    missing = prerequisite_missing(driver)
    if missing:
        record_result(driver.key, result_entry(Report(header={"driver": driver.key}), missing), backend)
        pytest.fail(missing, pytrace=False)
    fresh_home(tmp_path)
    report = run_program(driver, target.uri, tmp_path)
    record_result(driver.key, result_entry(report, None if report.done else "the program did not finish"), backend)

    assert report.header.get("version"), f"no driver/version line\n{describe(report)}"
    assert not report.failed(), f"{driver.key}: checks failed\n{describe(report)}"
    assert [c.get("check") for c in report.checks] == list(CHECKS), f"checks missing\n{describe(report)}"
    assert report.done and report.returncode == 0, f"the program did not finish\n{describe(report)}"
    assert_backend_state(coll, driver.author, report)


# --- the table generator (pure; no server) ---------------------------------------------------------


def load_table_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("driver_table", ROOT / "scripts" / "driver_table.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sample_results() -> dict[str, Any]:
    ok = [{"check": c, "ok": True, "detail": "d"} for c in CHECKS]
    bad = [dict(c, ok=(c["check"] != "global_refused")) for c in ok]
    limited = [dict(c, backend_limit="no transactions") if c["check"] == "transaction" else c for c in ok]
    return {
        "backend": "FerretDB vX",
        "drivers": {
            "go-driver": {"driver": "Go", "version": "2.0.0", "ran_at": "t1", "checks": bad},
            "pymongo-sync": {"driver": "pymongo", "version": "4.0", "ran_at": "t1", "checks": limited},
            "mongosh": {"driver": "mongosh", "version": None, "error": "node missing", "checks": []},
        },
    }


def test_table_shows_each_driver_and_what_passed() -> None:
    table = load_table_module().render(sample_results())
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[1].startswith("| pymongo | 4.0 |") and "13/13" in rows[1] and "✅¹" in rows[1]
    assert rows[2].startswith("| mongosh | not run |") and "0/13" in rows[2]
    assert rows[3].startswith("| Go | 2.0.0 |") and "12/13" in rows[3] and rows[3].count("❌") == 1
    assert "mongosh did not run: node missing" in table and "no transactions" in table


def test_table_block_is_replaced_between_markers_only() -> None:
    mod = load_table_module()
    text = "intro\n<!-- drivers:begin -->\nold table\n<!-- drivers:end -->\noutro\n"
    once = mod.replace_block(text, "new table")
    assert once == "intro\n<!-- drivers:begin -->\nnew table\n<!-- drivers:end -->\noutro\n"
    assert mod.replace_block(once, "new table") == once
    with pytest.raises(mod.TableError, match="markers not found"):
        mod.replace_block("no markers here", "x")
