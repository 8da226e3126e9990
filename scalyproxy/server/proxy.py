"""The proxy: listener, the set of live connections, timeouts, shutdown, and the
state every connection reads per command (config, compiled policy)."""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

from bson import json_util

from scalyproxy.config import ProxyConfig
from scalyproxy.logs import log
from scalyproxy.policy import Engine, Finding
from scalyproxy.server.hooks import Hooks
from scalyproxy.server.relay import ClientConnection, RawRelayConnection
from scalyproxy.server.repeats import RepeatTable
from scalyproxy.server.tasks import TaskOwner
from scalyproxy.server.tls import server_context
from scalyproxy.server.upstream import UpstreamPool
from scalyproxy.wire.command import CommandView
from scalyproxy.wire.op_compressed import SUPPORTED_COMPRESSORS

SWEEP_INTERVAL_S = 0.5
MAX_LOGGED_VALUES = 4000  # characters of document values per line, with log_values: true
MAX_LOGGED_DOCUMENTS = 10  # documents of each kind-1 sequence, with log_values: true
_NOT_VALUES = frozenset({"lsid", "$clusterTime", "signature", "txnNumber", "$db", "payload", "speculativeAuthenticate"})


def command_values(view: CommandView) -> str:
    """The command's documents as extended JSON (only logged with ``log_values: true``)."""
    try:
        body = {k: v for k, v in view.body.items() if k not in _NOT_VALUES}
        for ident, docs in view.sequences.items():
            body[ident] = list(docs[:MAX_LOGGED_DOCUMENTS])
        text = json_util.dumps(body)
    except Exception as exc:  # values that cannot be rendered (or read one way) must not cost the log line
        text = f"<unrenderable: {type(exc).__name__}>"
    return text if len(text) <= MAX_LOGGED_VALUES else text[: MAX_LOGGED_VALUES - 3] + "..."


def _finding_fields(client: str, app: str | None, user: str | None, finding: Finding) -> dict[str, Any]:
    """The fields of a ``refused``/``warned`` line (docs/operations.md#logs)."""
    return {
        "client": client,
        "app": app,
        "user": user,
        "namespace": finding.namespace,
        "command": finding.command,
        "rule": finding.rule,
        "code_name": finding.code_name,
        "reason": finding.message,
        "shape": finding.shape,
    }


class Proxy(TaskOwner):
    """One listening proxy. Connections read ``proxy.engine`` at every command, so
    swapping it (hot reload) takes effect from each connection's next command."""

    def __init__(self, config: ProxyConfig, hooks: Hooks | None = None, relay_only: bool = False) -> None:
        self.config = config
        self.relay_only = relay_only  # --relay-only: forward bytes, read nothing (policy off)
        self.engine = Engine.from_config(config)
        self.upstreams = UpstreamPool.from_uri(config.upstream)
        self.hooks = hooks or Hooks()
        self.compressors = frozenset(SUPPORTED_COMPRESSORS)
        self.connections: set[ClientConnection] = set()
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self._rejected_logged_at = 0.0
        self.repeats = RepeatTable()  # refusal/warning lines counted, not written (log_repeats_s)
        self.stopping = False
        self.generation = 1  # +1 per successful reload
        self.bytes_in = 0  # from clients, per chunk (read by the metrics when scraped)
        self.bytes_out = 0  # to clients
        self._address: str | None = None
        self.admin_address: str | None = None  # set by the admin listener, for the "started" line
        self.worker: int | None = None  # a fleet's worker (workers: N): its index; it shares the port

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

    def forget(self, conn: ClientConnection) -> bool:
        """A connection closed; whether it had been admitted."""
        if conn not in self.connections:
            return False
        self.connections.discard(conn)
        return True

    def report_refusal(self, conn: ClientConnection, view: CommandView, finding: Finding, enforced: bool) -> None:
        """Log one refusal (or, in warn mode, what would have been refused) and report it.

        The hooks (metrics, ``/report``) get every finding; the log line of a repeat
        within ``log_repeats_s`` is only counted (:mod:`scalyproxy.server.repeats`), and
        then nothing of it is built: in a refusal storm the line is most of the cost.
        """
        if log.enabled("warning"):
            interval = self.config.log_repeats_s
            repeats: int | None = 0
            if interval > 0:
                key = (enforced, finding.rule, finding.namespace, finding.command, finding.shape, conn.app_name)
                repeats = self.repeats.admit(key, interval, finding, conn.peer, conn.user)
            if repeats is not None:
                fields = _finding_fields(conn.peer, conn.app_name, conn.user, finding)
                if self.config.log_values:
                    fields["values"] = command_values(view)
                if repeats:
                    fields["repeats"] = repeats
                log.emit("warning", "refused" if enforced else "warned", fields)
        self.hooks.finding(conn, view, finding, enforced)

    def flush_repeats(self, final: bool = False) -> None:
        """One ``summary: true`` line per identity whose repeats were counted and not yet
        logged, once its ``log_repeats_s`` has passed (``final``: all of them, at shutdown)."""
        interval = self.config.log_repeats_s
        for key, pending, seen in self.repeats.due(interval, final or interval <= 0):
            enforced, app = key[0], key[5]
            fields = _finding_fields(seen.client, app, seen.user, seen.finding)
            fields["repeats"] = pending
            fields["summary"] = True
            log.emit("warning", "refused" if enforced else "warned", fields)

    def apply(self, config: ProxyConfig, engine: Engine) -> None:
        """Swap the config and the compiled policy together (hot reload).

        Runs on the event loop thread, so no command is decided half with the old
        policy and half with the new one; each connection sees the new one from
        its next command.
        """
        self.config = config
        self.engine = engine
        self.generation += 1

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ssl_ctx = server_context(self.config.tls) if self.config.tls else None
        listen = self.config.listen
        self.server = await loop.create_server(
            (lambda: RawRelayConnection(self)) if self.relay_only else (lambda: ClientConnection(self)),
            listen.host,
            listen.port,
            ssl=ssl_ctx,
            backlog=1024,
            reuse_address=True,
            reuse_port=True if self.worker is not None else None,
        )
        self.spawn(self._sweep())
        log.info(
            "started" if self.worker is None else "worker_started",
            listen=self.address,
            pid=os.getpid(),
            upstream=[h.address for h in self.upstreams.hosts],
            tls=bool(ssl_ctx),
            collections=len(self.config.collections),
            config=self.config.source_path,
            config_hash=self.config.source_hash[:12],
            read_only=self.config.read_only,
            admin=self.admin_address,
        )

    @property
    def address(self) -> str:
        """The address really listened on (the OS's port when the config says 0)."""
        if self._address is not None:
            return self._address
        if self.server is None or not self.server.sockets:
            return str(self.config.listen)
        host, port = self.server.sockets[0].getsockname()[:2]
        self._address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return self._address

    async def _sweep(self) -> None:
        """Close idle connections, clients whose message stalls (slowloris), and
        connections whose upstream leaves a request unanswered (upstream_timeout_s);
        write the summary lines of repeated refusals whose interval has passed."""
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self.flush_repeats()
            limits = self.config.limits  # read each round: a reload may change them
            now = time.monotonic()
            for conn in list(self.connections):
                started = conn.message_started
                if started is not None and now - started > limits.message_read_timeout_s:
                    log.warning("read_timeout", client=conn.peer, app=conn.app_name,
                                seconds=limits.message_read_timeout_s)
                    self.hooks.protocol_error("read_timeout")
                    conn.close()
                elif limits.upstream_timeout_s and conn.upstream_stalled(now, limits.upstream_timeout_s):
                    # close rather than answer: a late reply could no longer be told apart
                    log.warning("upstream_timeout", client=conn.peer, app=conn.app_name,
                                seconds=limits.upstream_timeout_s)
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
        self.flush_repeats(final=True)
        log.info("stopped", listen=self.address)
