"""Shared fixtures: a real FerretDB per test session, started on a free port."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pymongo
import pytest

from scalyproxy.backend import FerretDB, free_port, wait_for_port


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
    """A ``scalyproxy run`` child process listening on 127.0.0.1:<free port>."""

    config_path: Path
    upstream: str
    port: int = 0
    extra_args: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, log_dir: Path) -> ProxyProcess:
        if not self.port:
            self.port = free_port()
        self.log_path = log_dir / f"scalyproxy-{self.port}.log"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "scalyproxy", "run",
                    "--config", str(self.config_path),
                    "--listen", f"127.0.0.1:{self.port}",
                    "--upstream", self.upstream,
                    *self.extra_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
            )
        try:
            wait_for_port("127.0.0.1", self.port, 20, self.proc)
        except Exception:
            self.stop()
            raise RuntimeError(f"scalyproxy did not start:\n{self.log_text()}") from None
        return self

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


@pytest.fixture(scope="session")
def proxy_factory(
    ferretdb: FerretDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., ProxyProcess]]:
    """Start extra proxies: ``proxy_factory(config_path=..., upstream=..., extra_args=(...))``.

    Every proxy started here is stopped (by PID) at the end of the session.
    """
    started: list[ProxyProcess] = []
    log_dir = tmp_path_factory.mktemp("proxy-logs")

    def make(
        config_path: Path | str = BLOG_CONFIG,
        upstream: str | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> ProxyProcess:
        p = ProxyProcess(Path(config_path), upstream or ferretdb.uri, extra_args=extra_args)
        started.append(p)
        return p.start(log_dir)

    try:
        yield make
    finally:
        for p in started:
            p.stop()


@pytest.fixture(scope="session")
def blog_proxy(proxy_factory: Callable[..., ProxyProcess]) -> ProxyProcess:
    """The proxy with config/blog.yaml (issue 5's config) in front of the session's FerretDB."""
    return proxy_factory(BLOG_CONFIG)
