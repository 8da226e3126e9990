"""The proxy: listener, the set of live connections, timeouts, shutdown, and the
state every connection reads per command (config, compiled policy)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Coroutine
from typing import Any

from scalyproxy.config import ProxyConfig
from scalyproxy.logs import log
from scalyproxy.policy import Engine, Finding
from scalyproxy.server.hooks import Hooks
from scalyproxy.server.relay import ClientConnection
from scalyproxy.server.tls import server_context
from scalyproxy.server.upstream import UpstreamPool
from scalyproxy.wire.command import CommandView
from scalyproxy.wire.op_compressed import SUPPORTED_COMPRESSORS

SWEEP_INTERVAL_S = 0.5


class Proxy:
    """One listening proxy. Connections read ``proxy.engine`` at every command, so
    swapping it (hot reload) takes effect from each connection's next command."""

    def __init__(self, config: ProxyConfig, hooks: Hooks | None = None) -> None:
        self.config = config
        self.engine = Engine.from_config(config)
        self.upstreams = UpstreamPool.from_uri(config.upstream)
        self.hooks = hooks or Hooks()
        self.compressors = frozenset(SUPPORTED_COMPRESSORS)
        self.connections: set[ClientConnection] = set()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self._rejected_logged_at = 0.0
        self.stopping = False

    # -- used by connections --------------------------------------------------------

    def next_id(self) -> int:
        return next(self._ids) & 0x7FFFFFFF

    def admit(self, conn: ClientConnection) -> bool:
        limit = self.config.limits.max_connections
        if self.stopping or len(self.connections) >= limit:
            reason = "shutting down" if self.stopping else f"max_connections ({limit}) reached"
            now = time.monotonic()
            if now - self._rejected_logged_at > 5:  # at most one line every 5 s
                log.warning("client_rejected", client=conn.peer, reason=reason)
                self._rejected_logged_at = now
            self.hooks.client_rejected(conn.peer, reason)
            return False
        self.connections.add(conn)
        return True

    def forget(self, conn: ClientConnection) -> None:
        self.connections.discard(conn)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("internal_error", error=repr(task.exception()))

    def report_refusal(self, conn: ClientConnection, view: CommandView, finding: Finding, enforced: bool) -> None:
        """Log one refusal (or, in warn mode, what would have been refused)."""
        log.warning(
            "refused" if enforced else "warned",
            client=conn.peer,
            app=conn.app_name,
            user=conn.user,
            namespace=finding.namespace,
            command=finding.command,
            rule=finding.rule,
            code_name=finding.code_name,
            reason=finding.message,
            shape=finding.shape,
        )

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ssl_ctx = server_context(self.config.tls) if self.config.tls else None
        listen = self.config.listen
        self.server = await loop.create_server(
            lambda: ClientConnection(self),
            listen.host,
            listen.port,
            ssl=ssl_ctx,
            backlog=1024,
            reuse_address=True,
        )
        self.spawn(self._sweep())
        log.info(
            "started",
            listen=self.address,
            upstream=[h.address for h in self.upstreams.hosts],
            tls=bool(ssl_ctx),
            collections=len(self.config.collections),
            config=self.config.source_path,
            config_hash=self.config.source_hash[:12],
        )

    @property
    def address(self) -> str:
        if self.server is None or not self.server.sockets:
            return f"{self.config.listen.host}:{self.config.listen.port}"
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def _sweep(self) -> None:
        """Close idle connections and clients whose message stalls (slowloris)."""
        limits = self.config.limits
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            now = time.monotonic()
            for conn in list(self.connections):
                started = conn.message_started
                if started is not None and now - started > limits.message_read_timeout_s:
                    log.warning("read_timeout", client=conn.peer, app=conn.app_name,
                                seconds=limits.message_read_timeout_s)
                    self.hooks.protocol_error("read_timeout")
                    conn.close()
                elif (limits.idle_timeout_s and not conn.busy()
                      and now - max(conn.last_activity, conn.last_reply_end) > limits.idle_timeout_s):
                    log.info("idle_timeout", client=conn.peer, app=conn.app_name)
                    conn.close()
                elif self.stopping and not conn.busy():
                    conn.close()

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop accepting; let in-flight requests finish (up to ``grace_s``); close."""
        self.stopping = True
        if self.server is not None:
            self.server.close()
        deadline = time.monotonic() + grace_s
        for conn in list(self.connections):
            if not conn.busy():
                conn.close()
        while self.connections and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        for task in list(self.tasks):
            task.cancel()
        log.info("stopped", listen=self.address)
