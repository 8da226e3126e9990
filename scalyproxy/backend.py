"""Start and stop the embedded default backend: FerretDB v1.24.2 on SQLite.

Used by ``scalyproxy run --embedded-backend`` (the README's run command) and by
the test suite's fixtures, so there is one way to start it. The binary is built
by ``scripts/setup`` and found through ``$SCALY_FERRETDB``, ``.cache/ferretdb``
in the checkout, or ``ferretdb`` on ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent


class BackendError(RuntimeError):
    """The embedded backend could not be found or did not start."""


def find_ferretdb() -> str:
    """Return the path of the FerretDB binary, or raise BackendError saying how to get it."""
    env = os.environ.get("SCALY_FERRETDB")
    candidates = [env] if env else []
    candidates.append(str(_REPO_ROOT / ".cache" / "ferretdb"))
    for c in candidates:
        if c and os.access(c, os.X_OK):
            return c
    found = shutil.which("ferretdb")
    if found:
        return found
    raise BackendError(
        "FerretDB binary not found: run ./scripts/setup (builds it once), "
        "or set SCALY_FERRETDB to its path"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS says is free right now on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise BackendError(f"process exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BackendError(f"nothing listening on {host}:{port} after {timeout:.0f}s") from None
            time.sleep(0.05)


@dataclass
class FerretDB:
    """A FerretDB process on 127.0.0.1 with its own SQLite data directory."""

    host: str = "127.0.0.1"
    port: int = 0
    data_dir: str | None = None
    log_path: str | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _own_dir: bool = field(default=False, repr=False)

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> FerretDB:
        binary = find_ferretdb()
        if not self.port:
            self.port = free_port(self.host)
        if self.data_dir is None:
            self.data_dir = tempfile.mkdtemp(prefix="scaly-ferretdb-")
            self._own_dir = True
        os.makedirs(self.data_dir, exist_ok=True)
        if self.log_path is None:
            self.log_path = os.path.join(self.data_dir, "ferretdb.log")
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--listen-addr={self.host}:{self.port}",
                    f"--sqlite-url=file:{self.data_dir.rstrip('/')}/",
                    "--log-level=error",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        try:
            wait_for_port(self.host, self.port, timeout, self.proc)
        except BackendError as exc:
            self.stop()
            raise BackendError(f"FerretDB did not start ({exc}); see {self.log_path}") from None
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the process this object started (by PID), and remove a temporary data dir."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._own_dir and self.data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL the process (for fault tests); the data directory stays for a restart."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> FerretDB:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
