"""``scalyproxy run``: load the config, optionally start the embedded backend,
serve until SIGTERM/SIGINT.

This is where the pieces meet: the :class:`Proxy` (listener and relay), its
admin side (metrics, shadow report, admin HTTP listener), hot reload (SIGHUP
and file changes) and the drift check.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from typing import Any

from scalyproxy.admin.drift import DriftChecker, DriftError
from scalyproxy.admin.events import AdminHooks
from scalyproxy.admin.http import AdminServer
from scalyproxy.admin.metrics import Metrics
from scalyproxy.admin.reload import Reloader
from scalyproxy.admin.report import ShadowReport
from scalyproxy.backend import BackendError, FerretDB
from scalyproxy.config import ConfigError, HostPort, ProxyConfig, load_config
from scalyproxy.logs import log
from scalyproxy.server.proxy import Proxy
from scalyproxy.server.upstream import UpstreamConfigError

SHUTDOWN_GRACE_S = 10.0


def apply_overrides(cfg: ProxyConfig, listen: str | None, upstream: str | None) -> ProxyConfig:
    changes: dict[str, Any] = {}
    if listen:
        changes["listen"] = HostPort.parse(listen)
    if upstream:
        changes["upstream"] = upstream
    return dataclasses.replace(cfg, **changes) if changes else cfg


def install_uvloop() -> str:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


async def serve(cfg: ProxyConfig, announce: bool = False, config_path: str | None = None,
                from_file: ProxyConfig | None = None) -> int:
    """Run the proxy with its admin side (metrics, report, admin HTTP, reload, drift check).

    ``config_path`` turns hot reload on; ``from_file`` is that file's config before
    command-line overrides (``cfg`` when there were none).
    """
    metrics = Metrics(cfg.collections)
    report = ShadowReport(cfg.report_size)
    hooks = AdminHooks(metrics, report)
    proxy = Proxy(cfg, hooks)
    metrics.hosts = frozenset(h.address for h in proxy.upstreams.hosts)

    def applied(new: ProxyConfig) -> None:
        metrics.config_loaded(new.collections, new.source_path, new.source_hash, new.read_only, proxy.generation)
        metrics.config_reloads.labels("success").inc()
        hooks.config_loaded()
        report.resize(new.report_size)

    metrics.config_loaded(cfg.collections, cfg.source_path, cfg.source_hash, cfg.read_only, proxy.generation)
    drift = DriftChecker(proxy, metrics)
    admin: AdminServer | None = None
    try:
        if cfg.drift_check == "strict":
            try:
                found = await drift.check()
            except DriftError as exc:
                return _refuse_start(f"drift check (strict) could not run: {exc}")
            if found:
                lines = "\n".join("  " + m.message() for m in found)
                return _refuse_start(f"drift check (strict): {len(found)} shard key mismatch(es):\n{lines}")
        if cfg.admin_listen is not None:
            admin = AdminServer(proxy, metrics, report)
            try:
                proxy.admin_address = await admin.start(cfg.admin_listen)
            except OSError as exc:
                admin = None
                return _refuse_start(f"cannot listen on admin_listen {cfg.admin_listen}: {exc}")
        await proxy.start()
        if announce:
            print(f"scalyproxy listening on {proxy.address}", flush=True)
            print(f"Point any driver at: mongodb://{proxy.address}/", flush=True)
            if admin is not None:
                print(f"Admin (metrics, health, report): http://{admin.address}/", flush=True)
        loop = asyncio.get_running_loop()
        if config_path is not None:
            reloader = Reloader(proxy, config_path, from_file or cfg, applied,
                                lambda: metrics.config_reloads.labels("failure").inc())
            loop.add_signal_handler(signal.SIGHUP, reloader.request, "sighup")
            proxy.spawn(reloader.watch())
        proxy.spawn(drift.run(initial_delay=cfg.drift_check == "strict"))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutdown_requested", grace_s=SHUTDOWN_GRACE_S)
        await proxy.stop(SHUTDOWN_GRACE_S)
        return 0
    finally:
        if admin is not None:
            await admin.stop()
        await drift.close()


def _refuse_start(message: str) -> int:
    log.error("start_refused", reason=message)
    print(f"scalyproxy: {message}", file=sys.stderr)
    return 1


def run_from_args(args: argparse.Namespace) -> int:
    try:
        from_file = load_config(args.config)
        cfg = apply_overrides(from_file, args.listen, args.upstream)
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
    try:
        return asyncio.run(serve(cfg, announce=True, config_path=args.config, from_file=from_file))
    except UpstreamConfigError as exc:
        print(f"scalyproxy: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the listen address is in use
        print(f"scalyproxy: cannot listen on {cfg.listen.host}:{cfg.listen.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        if backend is not None:
            backend.stop()
