"""Start and stop the embedded default backend: FerretDB v1.24.2 on SQLite.

Used by ``scalyproxy run --embedded-backend`` (the README's run command) and by
the test suite's fixtures, so there is one way to start it. The binary is built
by ``scripts/setup`` and found through ``$SCALY_FERRETDB``, ``.cache/ferretdb``
in the checkout, or ``ferretdb`` on ``PATH``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parent.parent
# the stdout line of tools/ferretdb/main.go once its listener is bound
FERRETDB_LISTENING = re.compile(r"^listening on (?P<address>\S+)$", re.MULTILINE)


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


def read_announcement(
    log_path: str | os.PathLike[str],
    pattern: re.Pattern[str],
    proc: subprocess.Popen[bytes],
    timeout: float,
    offset: int = 0,
) -> re.Match[str]:
    """Wait until a line of ``log_path`` (from byte ``offset``) matches ``pattern``.

    How a server started on port 0 is found: it binds, then prints its real
    address; the caller reads it here instead of picking a "free" port first and
    hoping nothing takes it before the server binds it. BackendError, quoting the
    end of the log, when the process exits or ``timeout`` passes first.
    """
    deadline = time.monotonic() + timeout
    while True:
        text = _read_from(log_path, offset)
        found = pattern.search(text)
        if found:
            return found
        if proc.poll() is not None:
            problem = f"exited with status {proc.returncode} before announcing its address"
        elif time.monotonic() > deadline:
            problem = f"announced no address within {timeout:.0f}s"
        else:
            time.sleep(0.02)
            continue
        tail = text[-3000:].strip() or "(empty)"
        raise BackendError(f"{problem} (a line matching {pattern.pattern!r}); {log_path} says:\n{tail}")


def _read_from(path: str | os.PathLike[str], offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except FileNotFoundError:
        return ""


def port_of(address: str) -> int:
    """The port of ``HOST:PORT`` or ``[V6HOST]:PORT``."""
    return int(address.rpartition(":")[2])


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
        """Start on ``port`` (0, the default: the OS picks one) and read the real port back.

        A restart after :meth:`kill` reuses the port it had, so that clients and
        proxies pointed at it find it again.
        """
        binary = find_ferretdb()
        if self.data_dir is None:
            self.data_dir = tempfile.mkdtemp(prefix="scaly-ferretdb-")
            self._own_dir = True
        os.makedirs(self.data_dir, exist_ok=True)
        if self.log_path is None:
            self.log_path = os.path.join(self.data_dir, "ferretdb.log")
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
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
            found = read_announcement(self.log_path, FERRETDB_LISTENING, self.proc, timeout, offset)
        except BackendError as exc:
            self.stop()
            raise BackendError(f"FerretDB did not start: {exc}") from None
        self.port = port_of(found["address"])
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
