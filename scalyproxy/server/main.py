"""``scalyproxy run``: load the config, optionally start the embedded backend,
serve until SIGTERM/SIGINT.

This is where the pieces meet: the :class:`Proxy` (listener and relay), its
admin side (metrics, shadow report, traffic profile and its sink, admin HTTP
listener), hot reload (SIGHUP and file changes) and the drift check.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import signal
import sys
from typing import Any

from scalyproxy.admin.drift import DriftChecker, DriftError
from scalyproxy.admin.events import AdminHooks
from scalyproxy.admin.http import AdminServer
from scalyproxy.admin.metrics import Metrics
from scalyproxy.admin.profile_flush import ProfileFlusher
from scalyproxy.admin.reload import Reloader
from scalyproxy.admin.report import ShadowReport
from scalyproxy.backend import BackendError, FerretDB
from scalyproxy.config import (
    ConfigError,
    HostPort,
    ProxyConfig,
    load_config_and_text,
    parse_workers,
)
from scalyproxy.evidence.fields import configured_keys
from scalyproxy.evidence.recorder import Recorder
from scalyproxy.logs import log, refuse_start
from scalyproxy.server.proxy import Proxy
from scalyproxy.server.upstream import UpstreamConfigError
from scalyproxy.sinks import open_sink

SHUTDOWN_GRACE_S = 10.0


def apply_overrides(cfg: ProxyConfig, listen: str | None, upstream: str | None,
                    workers: str | None = None) -> ProxyConfig:
    changes: dict[str, Any] = {}
    if listen:
        changes["listen"] = HostPort.parse(listen)
    if upstream:
        changes["upstream"] = upstream
    if workers:
        changes["workers"] = parse_workers(workers)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


class Runtime:
    """The proxy wired to its admin side: metrics, shadow report, traffic profile (and its
    sink), admin listener, drift check."""

    def __init__(self, cfg: ProxyConfig, relay_only: bool = False) -> None:
        self.metrics = Metrics(cfg.collections)
        self.report = ShadowReport(cfg.report_size)
        self.recorder = Recorder(cfg.profile.max_shapes, cfg.policy.allow_marker)  # kept while off, for /profile
        self.hooks = AdminHooks(self.metrics, self.report)
        self.proxy = Proxy(cfg, self.hooks, relay_only=relay_only)
        self.metrics.hosts = frozenset(h.address for h in self.proxy.upstreams.hosts)
        self.metrics.before_scrape.append(self._profile_figures)
        self.metrics.before_scrape.append(self._traffic_figures)
        self.drift = DriftChecker(self.proxy, self.metrics)
        self.admin: AdminServer | None = None
        self.flusher: ProfileFlusher | None = None
        if cfg.profile.sink is not None and not relay_only:
            sink = open_sink(cfg.profile.sink)
            self.flusher = ProfileFlusher(self.recorder, sink, cfg.profile.flush_interval_s, self.metrics)
        self._config_loaded(cfg)

    def _config_loaded(self, cfg: ProxyConfig) -> None:
        self.metrics.config_loaded(cfg.collections, cfg.source_path, cfg.source_hash, cfg.read_only,
                                   self.proxy.generation)
        self.hooks.config_loaded()
        self.report.resize(cfg.report_size)
        self.recorder.configure(cfg.profile.max_shapes, cfg.policy.allow_marker)
        self.recorder.configure_sketches(cfg.profile.salt, cfg.profile.sample_rate, cfg.profile.sketch_keys,
                                         configured_keys(cfg))
        self.hooks.recorder = self.recorder if cfg.profile.enabled and not self.proxy.relay_only else None

    def _traffic_figures(self) -> None:
        self.metrics.bytes_in.values[()] = self.proxy.bytes_in
        self.metrics.bytes_out.values[()] = self.proxy.bytes_out

    def _profile_figures(self) -> None:
        recorder = self.recorder
        self.metrics.profile_rows.set(len(recorder.table))
        self.metrics.profile_overflow_commands.values[()] = recorder.table.overflow.count + recorder.taken.overflow.count

    def reloaded(self, cfg: ProxyConfig) -> None:
        self._config_loaded(cfg)
        self.metrics.config_reloads.labels("success").inc()

    def reload_failed(self) -> None:
        self.metrics.config_reloads.labels("failure").inc()

    async def strict_drift_check(self) -> str | None:
        """Why the proxy must not start (``drift_check: strict``), or None."""
        try:
            found = await self.drift.check()
        except DriftError as exc:
            return f"drift check (strict) could not run: {exc}"
        if not found:
            return None
        lines = "\n".join("  " + m.message() for m in found)
        return f"drift check (strict): {len(found)} shard key mismatch(es):\n{lines}"

    async def start_admin(self, listen: HostPort) -> str | None:
        """Start the admin listener; the reason it could not, or None."""
        admin = AdminServer(self.proxy, self.metrics, self.report, self.recorder)
        try:
            self.proxy.admin_address = await admin.start(listen)
        except OSError as exc:
            return f"cannot listen on admin_listen {listen}: {exc}"
        self.admin = admin
        return None

    async def close(self) -> None:
        if self.flusher is not None:
            await self.flusher.close()
        if self.admin is not None:
            await self.admin.stop()
        await self.drift.close()


async def serve(cfg: ProxyConfig, announce: bool = False, config_path: str | None = None,
                from_file: ProxyConfig | None = None, relay_only: bool = False) -> int:
    """Run the proxy with its admin side until SIGTERM/SIGINT.

    ``config_path`` turns hot reload on (SIGHUP and file changes); ``from_file`` is
    that file's config before command-line overrides (``cfg`` when there were none).
    """
    rt = Runtime(cfg, relay_only)
    proxy = rt.proxy
    try:
        problem = await rt.strict_drift_check() if cfg.drift_check == "strict" else None
        if problem is None and cfg.admin_listen is not None:
            problem = await rt.start_admin(cfg.admin_listen)
        if problem is not None:
            return refuse_start(problem)
        await proxy.start()
        if announce:
            _announce(proxy.address, rt.admin.address if rt.admin else None)
        loop = asyncio.get_running_loop()
        if config_path is not None:
            reloader = Reloader(proxy, config_path, from_file or cfg, rt.reloaded, rt.reload_failed)
            loop.add_signal_handler(signal.SIGHUP, reloader.request, "sighup")
            proxy.spawn(reloader.watch())
        proxy.spawn(rt.drift.run(initial_delay=cfg.drift_check == "strict"))
        if rt.flusher is not None:
            proxy.spawn(rt.flusher.run())
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutdown_requested", grace_s=SHUTDOWN_GRACE_S)
        await proxy.stop(SHUTDOWN_GRACE_S)
        return 0
    finally:
        await rt.close()


# the first line _announce prints, for whoever started the proxy on port 0 and reads
# the real port back (the test suite, the benchmarks): group "address" is HOST:PORT.
# The admin listener's address is in the JSON "started" line, logged just before.
LISTENING_LINE = re.compile(r"^scalyproxy listening on (?P<address>\S+)$", re.MULTILINE)


def _announce(listen: str, admin: str | None) -> None:
    """Print the addresses actually bound (``listen: 127.0.0.1:0`` gets a real port here)."""
    print(f"scalyproxy listening on {listen}", flush=True)
    print(f"Point any driver at: mongodb://{listen}/", flush=True)
    if admin is not None:
        print(f"Admin (metrics, health, report, profile): http://{admin}/", flush=True)


def run_from_args(args: argparse.Namespace) -> int:
    if getattr(args, "worker_fd", None) is not None:  # one of a supervisor's workers
        from scalyproxy.server.worker import run_worker

        return run_worker(args.worker_index or 0, args.worker_fd)
    try:
        from_file, text = load_config_and_text(args.config)
        cfg = apply_overrides(from_file, args.listen, args.upstream, getattr(args, "workers", None))
    except ConfigError as exc:
        print(f"scalyproxy: invalid config:\n{exc}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"scalyproxy: {exc}", file=sys.stderr)
        return 1
    log.set_level(cfg.log_level)
    backend: FerretDB | None = None
    if args.embedded_backend:
        try:
            backend = FerretDB(data_dir=args.data_dir).start()
        except BackendError as exc:
            print(f"scalyproxy: embedded backend: {exc}", file=sys.stderr)
            return 1
        cfg = dataclasses.replace(cfg, upstream=backend.uri)
        log.info("embedded_backend_started", uri=backend.uri, data_dir=backend.data_dir, server="FerretDB v1.24.2")
    loop_kind = install_uvloop()
    log.debug("event_loop", kind=loop_kind)
    relay_only = getattr(args, "relay_only", False)
    try:
        if cfg.workers > 1:
            from scalyproxy.server.supervisor import supervise

            return asyncio.run(supervise(cfg, from_file, text, args.config, relay_only, SHUTDOWN_GRACE_S, _announce))
        return asyncio.run(serve(cfg, announce=True, config_path=args.config, from_file=from_file,
                                 relay_only=relay_only))
    except UpstreamConfigError as exc:
        print(f"scalyproxy: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the listen address is in use
        print(f"scalyproxy: cannot listen on {cfg.listen.host}:{cfg.listen.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        if backend is not None:
            backend.stop()
