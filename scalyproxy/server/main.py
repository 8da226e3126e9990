"""``scalyproxy run``: load the config, optionally start the embedded backend,
serve until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import signal
import sys
from typing import Any

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


async def serve(cfg: ProxyConfig, announce: bool = False) -> int:
    proxy = Proxy(cfg)
    await proxy.start()
    if announce:
        print(f"scalyproxy listening on {proxy.address}", flush=True)
        print(f"Point any driver at: mongodb://{proxy.address}/", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutdown_requested", grace_s=SHUTDOWN_GRACE_S)
    await proxy.stop(SHUTDOWN_GRACE_S)
    return 0


def run_from_args(args: argparse.Namespace) -> int:
    try:
        cfg = apply_overrides(load_config(args.config), args.listen, args.upstream)
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
        return asyncio.run(serve(cfg, announce=True))
    except UpstreamConfigError as exc:
        print(f"scalyproxy: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. the listen address is in use
        print(f"scalyproxy: cannot listen on {cfg.listen.host}:{cfg.listen.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        if backend is not None:
            backend.stop()
