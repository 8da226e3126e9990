"""One worker of a fleet (``workers: N`` > 1): the proxy and its admin side, told what to
do by its supervisor over a control channel (:mod:`scalyproxy.server.channel`).

A worker is ``scalyproxy run`` started by the supervisor with ``--worker-fd``: it
loads the config text the supervisor sends (the text the supervisor validated,
whatever the file says by then), listens on the fleet's port with
``SO_REUSEPORT`` (the kernel spreads new connections over the workers), and
answers the supervisor's requests: its metrics, shadow report, profile and
readiness for the fleet's admin listener, and ``reload`` with a new validated
text. It has no admin listener, does not watch the file and ignores SIGHUP (the
supervisor reloads every worker or none). SIGTERM drains it as it drains a
single process; so does the end of the control channel (the supervisor is gone).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import socket
from typing import Any

from scalyproxy.admin.reload import build, keep_running
from scalyproxy.config import ProxyConfig, load_snapshot
from scalyproxy.logs import log
from scalyproxy.server import channel
from scalyproxy.server.main import SHUTDOWN_GRACE_S, Runtime, apply_overrides


class Worker:
    """The worker side of the control channel."""

    def __init__(self, index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.index = index
        self.reader, self.writer = reader, writer
        self.rt: Runtime | None = None
        self.path = ""
        self.from_file: ProxyConfig | None = None
        self.stop = asyncio.Event()

    async def start(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Load the text, start listening; what to answer the ``start`` request.

        The restart-only settings (``tls``, ``profile.sink``...) come from ``running_text``,
        the text the fleet started with, when a reload changed them since: a worker
        restarted after that reload runs as the workers that lived through it do."""
        self.path = str(msg["path"])
        self.from_file = cfg = load_snapshot(str(msg["text"]), self.path)
        running_text = str(msg.get("running_text", msg["text"]))
        if running_text != msg["text"]:
            cfg = keep_running(cfg, load_snapshot(running_text, self.path))
        cfg = apply_overrides(cfg, msg.get("listen"), msg.get("upstream"))
        cfg = dataclasses.replace(cfg, admin_listen=None, workers=1)
        log.set_level(cfg.log_level)
        rt = self.rt = Runtime(cfg, bool(msg.get("relay_only")))
        rt.proxy.worker = self.index
        rt.proxy.generation = int(msg.get("generation", 1))
        rt.metrics.config_generation.set(rt.proxy.generation)
        drift = bool(msg.get("drift"))  # one worker runs the drift check for the fleet
        problem = await rt.strict_drift_check() if drift and cfg.drift_check == "strict" else None
        if problem is not None:
            return {"ok": False, "error": problem}
        await rt.proxy.start()
        if drift:
            rt.proxy.spawn(rt.drift.run(initial_delay=cfg.drift_check == "strict"))
        if rt.flusher is not None:  # each worker adds its own deltas to the sink (sinks add)
            rt.proxy.spawn(rt.flusher.run())
        return {"ok": True, "address": rt.proxy.address, "pid": os.getpid()}

    async def reload(self, msg: dict[str, Any]) -> dict[str, Any]:
        rt = self.rt
        assert rt is not None and self.from_file is not None
        loop = asyncio.get_running_loop()
        built = await loop.run_in_executor(None, build, self.path, rt.proxy.config, self.from_file, str(msg["text"]))
        self.from_file = built.from_file
        rt.proxy.apply(built.config, built.engine)
        rt.proxy.generation = int(msg["generation"])
        log.set_level(built.config.log_level)
        rt.reloaded(built.config)
        log.info("worker_config_applied", generation=rt.proxy.generation, config_hash=built.config.source_hash[:12])
        return {"ok": True, "generation": rt.proxy.generation}

    def answer(self, op: str) -> dict[str, Any]:
        rt = self.rt
        assert rt is not None
        if op == "metrics":
            return {"families": rt.metrics.families()}
        if op == "report":
            return {"report": rt.report.as_json()}
        if op == "profile":
            profile = rt.proxy.config.profile
            return {"profile": rt.recorder.document(profile.enabled, profile.sink)}
        if op == "ready":
            return {"stopping": rt.proxy.stopping, "generation": rt.proxy.generation,
                    "connections": len(rt.proxy.connections)}
        return {"error": f"unknown request {op!r}"}

    async def serve_channel(self) -> None:
        """Answer the supervisor until the channel ends (then drain: the supervisor is gone)."""
        while True:
            try:
                msg = await channel.receive(self.reader)
            except channel.ChannelClosed:
                if self.rt is None or not self.rt.proxy.stopping:
                    log.warning("supervisor_gone", detail="the control channel closed; draining")
                self.stop.set()
                return
            op = str(msg.get("op"))
            try:
                if op == "start":
                    answer = await self.start(msg)
                elif op == "reload":
                    answer = await self.reload(msg)
                else:
                    answer = self.answer(op)
            except Exception as exc:  # the supervisor hears of it; the worker does not go down
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            answer["id"] = msg.get("id")
            try:
                await channel.send(self.writer, answer)
            except channel.ChannelClosed:
                continue  # the next receive sees the end
            if op == "start" and not answer.get("ok"):
                self.stop.set()


async def serve_worker(index: int, fd: int) -> int:
    sock = socket.socket(fileno=fd)
    reader, writer = await channel.open_channel(sock)
    worker = Worker(index, reader, writer)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # the supervisor reloads the fleet
    task = loop.create_task(worker.serve_channel())
    try:
        await worker.stop.wait()
        rt = worker.rt
        if rt is None or rt.proxy.server is None:
            return 1  # never started: the supervisor was told why
        log.info("shutdown_requested", grace_s=SHUTDOWN_GRACE_S)
        await rt.proxy.stop(SHUTDOWN_GRACE_S)
        return 0
    finally:
        task.cancel()
        if worker.rt is not None:
            await worker.rt.close()
        writer.close()


def run_worker(index: int, fd: int) -> int:
    """``scalyproxy run --worker-fd FD --worker-index I`` (started by a supervisor only)."""
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # until the loop's handler is in place
    log.context["worker"] = index
    from scalyproxy.server.main import install_uvloop

    install_uvloop()
    return asyncio.run(serve_worker(index, fd))
