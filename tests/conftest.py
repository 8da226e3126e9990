"""Shared fixtures: a real FerretDB per test session and proxies in front of it, each on
port 0 with the real port read back from what the process prints."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pymongo
import pytest

from scalyproxy.backend import BackendError, FerretDB, port_of, read_announcement
from scalyproxy.server.main import LISTENING_LINE
from tests.docker_tier import ComposeCluster, start_compose_cluster


@pytest.fixture(scope="session")
def ferretdb() -> Iterator[FerretDB]:
    """One FerretDB (SQLite, temporary data dir) for the whole test session; stopped by PID."""
    server = FerretDB().start()
    try:
        client: pymongo.MongoClient = pymongo.MongoClient(server.uri, serverSelectionTimeoutMS=10_000)
        client.admin.command("ping")
        client.close()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def refused_port() -> Iterator[int]:
    """A port of 127.0.0.1 that refuses connections for the whole test (a dead upstream, an
    admin address nobody serves): a socket bound to port 0 that never listens holds it,
    so no other process can bind it meanwhile (unlike a "free" port picked and let go)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.fixture()
def direct_client(ferretdb: FerretDB) -> Iterator[pymongo.MongoClient]:
    """A pymongo client straight to the backend (no proxy), for set-up and checks."""
    client: pymongo.MongoClient = pymongo.MongoClient(ferretdb.uri, serverSelectionTimeoutMS=10_000)
    try:
        yield client
    finally:
        client.close()


# --- the proxy, as a real process -------------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
BLOG_CONFIG = ROOT / "config" / "blog.yaml"


@dataclass
class ProxyProcess:
    """A ``scalyproxy run`` child process on 127.0.0.1, port 0: the port (and the admin
    address, when the config has ``admin_listen``) are read back from what it prints."""

    config_path: Path
    upstream: str
    port: int = 0
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    admin: str | None = None  # HOST:PORT of the admin listener, if any

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> ProxyProcess:
        fd, name = tempfile.mkstemp(prefix="scalyproxy-", suffix=".log", dir=log_dir)
        self.log_path = Path(name)
        with os.fdopen(fd, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "scalyproxy", "run",
                    "--config", str(self.config_path),
                    "--listen", "127.0.0.1:0",
                    "--upstream", self.upstream,
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
        try:
            self.port = port_of(read_announcement(self.log_path, LISTENING_LINE, self.proc, 20)["address"])
        except BackendError as exc:
            self.stop()
            raise RuntimeError(f"scalyproxy did not start: {exc}") from None
        # the JSON "started" line is logged just before the line read above (unless the
        # config's log_level hides it)
        started = [e for e in self.events() if e["event"] == "started"]
        self.admin = started[0].get("admin") if started else None
        return self

    def events(self) -> list[dict[str, Any]]:
        """The proxy's JSON log lines (stdout's human lines are skipped); each must parse."""
        return [json.loads(line) for line in self.log_text().splitlines() if line.startswith("{")]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


#: what the fleet-marked modules run with: one process, and a supervisor with two workers
FLEET_SIZES = (1, 2)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Modules marked ``fleet`` (relay, guard, operations, reliability) run every test twice:
    once against one process and once against ``--workers 2``."""
    if "workers" in metafunc.fixturenames and metafunc.definition.get_closest_marker("fleet"):
        metafunc.parametrize("workers", FLEET_SIZES, indirect=True, scope="module",
                             ids=[f"workers{n}" for n in FLEET_SIZES])


@pytest.fixture(scope="module")
def workers(request: pytest.FixtureRequest) -> int:
    """How many worker processes this module's proxies run (1: one process, no supervisor)."""
    return int(getattr(request, "param", 1))


@pytest.fixture(scope="module")
def proxy_factory(
    ferretdb: FerretDB, tmp_path_factory: pytest.TempPathFactory, workers: int
) -> Iterator[Callable[..., ProxyProcess]]:
    """Start extra proxies: ``proxy_factory(config_path=..., upstream=..., extra_args=(...))``,
    with the module's ``workers`` (``workers=N`` overrides it).

    Every proxy started here is stopped (by PID) at the end of the module.
    """
    started: list[ProxyProcess] = []
    log_dir = tmp_path_factory.mktemp("proxy-logs")

    def make(
        config_path: Path | str = BLOG_CONFIG,
        upstream: str | None = None,
        extra_args: tuple[str, ...] = (),
        workers: int = workers,
    ) -> ProxyProcess:
        fleet = ("--workers", str(workers)) if workers > 1 else ()
        p = ProxyProcess(Path(config_path), upstream or ferretdb.uri, extra_args=(*extra_args, *fleet))
        started.append(p)
        return p.start(log_dir)

    try:
        yield make
    finally:
        for p in started:
            p.stop()


@pytest.fixture(scope="module")
def blog_proxy(proxy_factory: Callable[..., ProxyProcess]) -> ProxyProcess:
    """The proxy with config/blog.yaml (issue 5's config) in front of the session's FerretDB."""
    return proxy_factory(BLOG_CONFIG)


# --- the Docker tier: docker-compose.yml itself (skips, saying why, without a Docker engine) ---


@pytest.fixture(scope="session")
def compose_cluster() -> Iterator[ComposeCluster]:
    """docker-compose.yml up (both shards, init, its own scalyproxy) for the whole session."""
    yield from start_compose_cluster()
