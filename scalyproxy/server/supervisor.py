"""``workers: N`` (N > 1): a supervising process, N worker processes on one port.

The supervisor reserves the client port (a ``SO_REUSEPORT`` socket bound, never
listening, held for its whole life: with ``listen: HOST:0`` the port is picked
once here) and starts N workers (:mod:`scalyproxy.server.worker`), each
listening on that port with ``SO_REUSEPORT``; the kernel spreads new
connections over them. It owns the admin listener, which serves the fleet as
one (metrics, report and profile merged: :mod:`scalyproxy.admin.fleet`;
``/healthz`` and ``/readyz`` over every worker), and hot reload: the file is
read and validated once, here; when it is bad no worker changes, when it is
good every worker applies that very text. A worker that dies is started again
at once; one that keeps dying (each death within :data:`STABLE_S` of its start)
waits 0.5 s, 1 s, 2 s... up to :data:`BACKOFF_CAP_S`, and ``/readyz`` says so.
SIGTERM drains every worker (each within the grace period, as one process does).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from scalyproxy.admin.fleet import Families, merge_families, merge_profiles, merge_reports
from scalyproxy.admin.http import AdminListener, Response, UpstreamProbe
from scalyproxy.admin.metrics import FleetMetrics
from scalyproxy.admin.reload import Built, Reloader, build
from scalyproxy.config import HostPort, ProxyConfig, load_config_and_text
from scalyproxy.logs import log, refuse_start
from scalyproxy.server import channel
from scalyproxy.server.tasks import TaskOwner
from scalyproxy.server.upstream import UpstreamPool

STABLE_S: Final = 10.0  # a worker that ran this long before it died is restarted at once again
BACKOFF_FIRST_S: Final = 0.5
BACKOFF_CAP_S: Final = 30.0
START_TIMEOUT_S: Final = 30.0
REQUEST_TIMEOUT_S: Final = 5.0
STOP_MARGIN_S: Final = 5.0  # beyond the workers' grace period before they are killed


def backoff_delay(deaths_in_a_row: int) -> float:
    """The wait before restarting a worker: none after one death, then 0.5 s doubling to the cap."""
    if deaths_in_a_row <= 1:
        return 0.0
    return float(min(BACKOFF_CAP_S, BACKOFF_FIRST_S * 2.0 ** (deaths_in_a_row - 2)))


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit status {returncode}"


def reserve_port(listen: HostPort) -> tuple[socket.socket, HostPort]:
    """Bind (never listen) a SO_REUSEPORT socket on ``listen``: port 0 gets its port here, and
    nobody outside the fleet can take the port while a worker restarts."""
    family, kind, proto, _, address = socket.getaddrinfo(listen.host, listen.port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock, HostPort(listen.host, sock.getsockname()[1])


@dataclass
class WorkerHandle:
    """The supervisor's view of one worker."""

    index: int
    state: str = "starting"  # starting | up | backing_off | stopped
    proc: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    reading: asyncio.Task[None] | None = None
    pending: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    started_at: float = 0.0
    restarts: int = 0
    deaths_in_a_row: int = 0
    retry_at: float = 0.0
    last_exit: str | None = None
    error: str | None = None
    address: str | None = None
    _ids: int = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def open(self, sock: socket.socket) -> None:
        reader, self.writer = await channel.open_channel(sock)
        self.reading = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        """Hand each answer to the request waiting for it (one that gave up is forgotten):
        a slow answer never leaves the channel half read."""
        try:
            while True:
                answer = await channel.receive(reader)
                waiting = self.pending.pop(answer.get("id", -1), None)
                if waiting is not None and not waiting.done():
                    waiting.set_result(answer)
        except channel.ChannelClosed as exc:
            for waiting in self.pending.values():
                if not waiting.done():
                    waiting.set_exception(channel.ChannelClosed(str(exc)))
            self.pending.clear()

    async def request(self, op: str, timeout: float = REQUEST_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
        """One request and its answer; ChannelClosed or TimeoutError when there is none."""
        if self.writer is None or self.reading is None or self.reading.done():
            raise channel.ChannelClosed("no worker")
        self._ids += 1
        ident = self._ids
        answer = self.pending[ident] = asyncio.get_running_loop().create_future()
        try:
            await channel.send(self.writer, {"op": op, "id": ident, **fields})
            return await asyncio.wait_for(answer, timeout)
        finally:
            self.pending.pop(ident, None)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {"worker": self.index, "pid": self.pid, "state": self.state, "restarts": self.restarts}
        if self.state == "backing_off":
            out["restart_in_s"] = round(max(0.0, self.retry_at - time.monotonic()), 2)
            out["deaths_in_a_row"] = self.deaths_in_a_row
        if self.last_exit:
            out["last_exit"] = self.last_exit
        if self.error:
            out["error"] = self.error
        return out

    def close_channel(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.reading is not None:
            self.reading.cancel()
        self.writer = self.reading = None
        for waiting in self.pending.values():
            if not waiting.done():
                waiting.set_exception(channel.ChannelClosed("the worker is gone"))
        self.pending.clear()


class Supervisor(TaskOwner):
    """Starts, watches, reloads and stops the workers; answers the admin listener."""

    def __init__(self, cfg: ProxyConfig, from_file: ProxyConfig, text: str, path: str,
                 relay_only: bool = False) -> None:
        self.config = cfg
        self.from_file = from_file
        self.text = text
        self.started_text = text  # the restart-only settings of every worker come from this one
        self.path = path
        self.relay_only = relay_only
        self.upstreams = UpstreamPool.from_uri(cfg.upstream)
        self.generation = 1
        self.stopping = False
        self.workers = [WorkerHandle(i) for i in range(cfg.workers)]
        self.metrics = FleetMetrics()
        self.metrics.workers.set(cfg.workers)
        self.metrics.config_loaded(cfg.source_path, cfg.source_hash, cfg.read_only, self.generation)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.reserved: socket.socket | None = None
        self.listen = cfg.listen
        self.address = str(cfg.listen)
        self.admin: FleetAdmin | None = None

    # -- what the Reloader reads -------------------------------------------------------

    # -- workers --------------------------------------------------------------------------

    def _command(self, index: int, fd: int) -> list[str]:
        return [sys.executable, "-m", "scalyproxy", "run", "--config", self.path,
                "--worker-index", str(index), "--worker-fd", str(fd)]

    async def _start(self, w: WorkerHandle) -> bool:
        """Start worker ``w`` and wait until it listens (or says why it cannot)."""
        w.state, w.error, w.address = "starting", None, None
        parent, child = socket.socketpair()
        try:
            w.proc = await asyncio.create_subprocess_exec(
                *self._command(w.index, child.fileno()), pass_fds=(child.fileno(),), stdin=asyncio.subprocess.DEVNULL)
        except OSError as exc:
            parent.close()
            w.error = f"cannot start a worker process: {exc}"
            return False
        finally:
            child.close()
        await w.open(parent)
        generation = self.generation
        try:
            answer = await w.request(
                "start", START_TIMEOUT_S, text=self.text, running_text=self.started_text, path=self.path,
                listen=str(self.listen),
                upstream=self.config.upstream, relay_only=self.relay_only, generation=generation,
                drift=w.index == 0)
            if answer.get("ok") and generation != self.generation:  # a reload came meanwhile
                answer = await w.request("reload", text=self.text, generation=self.generation)
        except (channel.ChannelClosed, TimeoutError) as exc:
            answer = {"ok": False, "error": f"no answer from the worker ({type(exc).__name__}: {exc})"}
        if not answer.get("ok"):
            w.error = str(answer.get("error"))
            await self._kill(w)
            return False
        w.state, w.started_at = "up", time.monotonic()
        w.address = str(answer.get("address") or "")
        self._count_up()
        return True

    async def _kill(self, w: WorkerHandle) -> None:
        proc = w.proc
        w.close_channel()
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    def _count_up(self) -> None:
        self.metrics.workers_up.set(sum(1 for w in self.workers if w.state == "up"))

    async def _watch(self, w: WorkerHandle) -> None:
        """Restart ``w`` whenever it dies (at once, then backing off while it keeps dying)."""
        while not self.stopping:
            assert w.proc is not None
            returncode = await w.proc.wait()
            if self.stopping:
                return
            w.close_channel()
            ran = time.monotonic() - w.started_at if w.state == "up" else 0.0
            w.deaths_in_a_row = 1 if ran >= STABLE_S else w.deaths_in_a_row + 1
            delay = backoff_delay(w.deaths_in_a_row)
            w.last_exit = describe_exit(returncode)
            w.state = "backing_off" if delay else "starting"
            w.retry_at = time.monotonic() + delay
            self._count_up()
            log.error("worker_exited", worker=w.index, pid=w.pid, status=w.last_exit, ran_s=round(ran, 3),
                      deaths_in_a_row=w.deaths_in_a_row, restart_in_s=delay, error=w.error)
            await asyncio.sleep(delay)
            if self.stopping:
                return
            w.restarts += 1
            self.metrics.worker_restarts.labels(str(w.index)).inc()
            if await self._start(w):
                log.warning("worker_restarted", worker=w.index, pid=w.pid, restarts=w.restarts)
            else:
                log.error("worker_start_failed", worker=w.index, pid=w.pid, error=w.error)
                w.started_at = time.monotonic()

    async def start(self) -> str | None:
        """Reserve the port, start every worker; the reason the fleet cannot start, or None."""
        try:
            self.reserved, self.listen = reserve_port(self.config.listen)
        except OSError as exc:
            return f"cannot listen on {self.config.listen}: {exc}"
        started = await asyncio.gather(*(self._start(w) for w in self.workers))
        if not all(started):
            for w in self.workers:
                if w.error:
                    log.error("worker_start_failed", worker=w.index, pid=w.pid, error=w.error)
            errors = "; ".join(f"worker {w.index}: {w.error}" for w in self.workers if w.error)
            await self.stop_workers(0)
            return f"the workers could not start ({errors})"
        self.address = self.workers[0].address or str(self.listen)
        for w in self.workers:
            self.spawn(self._watch(w))
        return None

    async def stop_workers(self, grace_s: float) -> None:
        """SIGTERM every worker (each drains within ``grace_s``); kill what is left after a margin."""
        self.stopping = True
        procs = [w.proc for w in self.workers if w.proc is not None and w.proc.returncode is None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), grace_s + STOP_MARGIN_S)
        except TimeoutError:
            for w in self.workers:
                log.error("worker_stop_timeout", worker=w.index, pid=w.pid)
                await self._kill(w)
        for w in self.workers:
            w.state = "stopped"
            w.close_channel()
        self._count_up()
        for task in list(self.tasks):
            task.cancel()
        if self.reserved is not None:
            self.reserved.close()

    # -- hot reload (every worker or none) ------------------------------------------------

    async def apply(self, text: str, built: Built) -> list[str]:
        """Send a validated text to every running worker; the problems (a worker that could not
        apply it is restarted, so it starts with this text)."""
        self.generation += 1
        self.text, self.from_file, self.config = text, built.from_file, built.config
        up = [w for w in self.workers if w.state == "up"]
        answers = await asyncio.gather(*(w.request("reload", text=text, generation=self.generation) for w in up),
                                       return_exceptions=True)
        problems = []
        for w, answer in zip(up, answers, strict=True):
            if isinstance(answer, BaseException) or not answer.get("ok"):
                error = repr(answer) if isinstance(answer, BaseException) else str(answer.get("error"))
                problems.append(f"worker {w.index}: {error}")
                log.error("worker_reload_failed", worker=w.index, error=error, detail="restarting it")
                if w.proc is not None and w.proc.returncode is None:
                    w.proc.kill()
        self.metrics.config_loaded(self.config.source_path, self.config.source_hash, self.config.read_only,
                                   self.generation)
        return problems

    # -- what the admin listener asks ------------------------------------------------------

    async def ask_all(self, op: str) -> tuple[list[dict[str, Any]], list[str]]:
        """Every running worker's answer to ``op``, and which workers gave none."""
        up = [w for w in self.workers if w.state == "up"]
        answers = await asyncio.gather(*(w.request(op) for w in up), return_exceptions=True)
        got, missing = [], [f"worker {w.index} ({w.state})" for w in self.workers if w.state != "up"]
        for w, answer in zip(up, answers, strict=True):
            if isinstance(answer, BaseException) or answer.get("error"):
                missing.append(f"worker {w.index} (no answer: {answer!r})")
            else:
                got.append(answer)
        return got, missing


def read_and_build(path: str, running: ProxyConfig, last_file: ProxyConfig) -> tuple[str, Built]:
    """The file's text and its build (ConfigError when it cannot be read or used)."""
    text = load_config_and_text(path)[1]
    return text, build(path, running, last_file, text)


class FleetReloader(Reloader):
    """SIGHUP and file changes for a fleet: validated once here, applied by every worker."""

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__(supervisor, supervisor.path, supervisor.from_file, lambda cfg: None,
                         supervisor.metrics.config_reloads.labels("failure").inc)
        self.supervisor = supervisor

    async def _reload(self, trigger: str) -> bool:
        sup = self.supervisor
        got = await self._build(trigger, read_and_build, self.path, sup.config, sup.from_file)
        if got is None:
            return False
        text, built = got
        self._accepted(built)
        problems = await sup.apply(text, built)
        log.set_level(built.config.log_level)
        sup.metrics.config_reloads.labels("success").inc()
        new = built.config
        log.info("config_reloaded", trigger=trigger, config=self.path, generation=sup.generation,
                 config_hash=new.source_hash[:12], collections=len(new.collections), read_only=new.read_only,
                 workers=len(sup.workers), workers_restarted=len(problems))
        return True


class FleetAdmin(AdminListener):
    """The admin listener of a fleet: every page over every worker."""

    def __init__(self, supervisor: Supervisor) -> None:
        super().__init__()
        self.supervisor = supervisor
        self.probe = UpstreamProbe(supervisor)

    async def metrics_page(self) -> Response:
        sup = self.supervisor
        answers, _ = await sup.ask_all("metrics")
        merged = merge_families((a["families"] for a in answers), skip=sup.metrics.owned)
        own = list(sup.metrics.registry.collect())
        return Response(200, CONTENT_TYPE_LATEST, generate_latest(Families(own + merged)))

    async def healthz(self) -> Response:
        """Alive while at least one worker serves (the supervisor restarts the others)."""
        workers = self.supervisor.workers
        up = sum(1 for w in workers if w.state == "up")
        down = ", ".join(f"worker {w.index} {w.state}" for w in workers if w.state != "up")
        text = f"ok: {up}/{len(workers)} workers up" + (f" ({down})" if down else "")
        return Response.text(200 if up else 503, text if up else f"no worker up ({down})")

    async def readyz(self) -> Response:
        """Ready: every worker up and answering, none stopping, and an upstream reachable."""
        sup = self.supervisor
        answers, missing = await sup.ask_all("ready")
        cfg = sup.config
        status = {"config": cfg.source_path, "config_hash": cfg.source_hash[:12], "generation": sup.generation,
                  "stopping": sup.stopping, "workers": [w.status() for w in sup.workers]}
        if sup.stopping or any(a.get("stopping") for a in answers):
            return Response.json(503, {"ready": False, "reason": "shutting down", **status})
        if missing:
            return Response.json(503, {"ready": False, "reason": "not every worker is up: " + "; ".join(missing),
                                       **status})
        host, error = await self.probe.reachable()
        if host is None:
            return Response.json(503, {"ready": False, "reason": f"no upstream reachable ({error})", **status})
        return Response.json(200, {"ready": True, "upstream": host, **status})

    async def report_page(self) -> Response:
        answers, missing = await self.supervisor.ask_all("report")
        doc = merge_reports([a["report"] for a in answers])
        doc["missing_workers"] = missing
        return Response.json(200, doc)

    async def profile_page(self) -> Response:
        answers, missing = await self.supervisor.ask_all("profile")
        if not answers:
            return Response.json(503, {"error": "no worker answered", "missing_workers": missing})
        doc = merge_profiles([a["profile"] for a in answers])
        doc["missing_workers"] = missing
        return Response.json(200, doc)


async def supervise(cfg: ProxyConfig, from_file: ProxyConfig, text: str, path: str, relay_only: bool,
                    grace_s: float, announce: Any) -> int:
    """Run the fleet until SIGTERM/SIGINT; ``announce(address, admin)`` once every worker listens."""
    sup = Supervisor(cfg, from_file, text, path, relay_only)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        if cfg.admin_listen is not None:
            admin = FleetAdmin(sup)
            try:
                await admin.start(cfg.admin_listen)
            except OSError as exc:
                return refuse_start(f"cannot listen on admin_listen {cfg.admin_listen}: {exc}")
            sup.admin = admin
        problem = await sup.start()
        if problem is not None:
            return refuse_start(problem)
        admin_address = sup.admin.address if sup.admin else None
        log.info("started", listen=sup.address, workers=len(sup.workers),
                 pids=[w.pid for w in sup.workers], supervisor_pid=os.getpid(),
                 upstream=[h.address for h in sup.upstreams.hosts], tls=bool(cfg.tls),
                 collections=len(cfg.collections), config=cfg.source_path, config_hash=cfg.source_hash[:12],
                 read_only=cfg.read_only, admin=admin_address)
        announce(sup.address, admin_address)
        reloader = FleetReloader(sup)
        loop.add_signal_handler(signal.SIGHUP, reloader.request, "sighup")
        sup.spawn(reloader.watch())
        await stop.wait()
        log.info("shutdown_requested", grace_s=grace_s, workers=len(sup.workers))
        await sup.stop_workers(grace_s)
        log.info("stopped", listen=sup.address)
        return 0
    finally:
        if not sup.stopping:
            await sup.stop_workers(0)
        if sup.admin is not None:
            await sup.admin.stop()
