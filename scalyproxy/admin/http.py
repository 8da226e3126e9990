"""The admin HTTP listener: ``/metrics``, ``/healthz``, ``/readyz``, ``/report``, ``/profile``.

A deliberately tiny HTTP/1.1 server on asyncio streams, on the proxy's own
event loop (no threads): one request per connection (``Connection: close``),
``GET`` and ``HEAD`` only, a bounded request head read within a timeout, and a
bounded number of concurrent admin connections. It is meant for a metrics
scraper, probes and operators on a private address, not for the internet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Final, Protocol

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from scalyproxy.admin.metrics import Metrics
from scalyproxy.admin.report import ShadowReport
from scalyproxy.config import HostPort, ProxyConfig
from scalyproxy.evidence.recorder import Recorder
from scalyproxy.logs import log
from scalyproxy.server.proxy import Proxy
from scalyproxy.server.upstream import UpstreamPool

MAX_HEAD: Final = 8192
READ_TIMEOUT_S: Final = 5.0
MAX_CONNECTIONS: Final = 64
PROBE_TIMEOUT_S: Final = 2.0
PROBE_CACHE_S: Final = 1.0  # a reachable upstream is believed for this long
REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
                  431: "Request Header Fields Too Large", 503: "Service Unavailable"}
JSON: Final = "application/json"
TEXT: Final = "text/plain; charset=utf-8"


class Response:
    __slots__ = ("status", "content_type", "body")

    def __init__(self, status: int, content_type: str, body: bytes) -> None:
        self.status = status
        self.content_type = content_type
        self.body = body

    @classmethod
    def json(cls, status: int, doc: object) -> Response:
        return cls(status, JSON, json.dumps(doc, indent=1).encode() + b"\n")

    @classmethod
    def text(cls, status: int, text: str) -> Response:
        return cls(status, TEXT, text.encode() + b"\n")

    def encode(self, head_only: bool) -> bytes:
        head = (
            f"HTTP/1.1 {self.status} {REASONS.get(self.status, 'Unknown')}\r\n"
            f"Content-Type: {self.content_type}\r\n"
            f"Content-Length: {len(self.body)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
        return head if head_only else head + self.body


def parse_request_line(head: bytes) -> tuple[str, str]:
    """``(method, path)`` of a request head; the query string is dropped. Raises ValueError."""
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError(f"bad request line {line[:100]!r}")
    return parts[0], parts[1].split("?", 1)[0]


class HasUpstreams(Protocol):
    """A :class:`Proxy`, or a fleet's supervisor."""

    @property
    def config(self) -> ProxyConfig: ...

    @property
    def upstreams(self) -> UpstreamPool: ...


class UpstreamProbe:
    """Is at least one upstream host accepting TCP connections? (cached briefly)"""

    def __init__(self, proxy: HasUpstreams) -> None:
        self.proxy = proxy
        self._ok_until = 0.0
        self._ok_host: str | None = None

    async def reachable(self) -> tuple[str | None, str]:
        """The address of a reachable host (or None) and the last error."""
        now = time.monotonic()
        if self._ok_host is not None and now < self._ok_until:
            return self._ok_host, ""
        timeout = min(self.proxy.config.limits.connect_timeout_s, PROBE_TIMEOUT_S)
        error = "no upstream host"
        for host in self.proxy.upstreams.hosts:
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host.host, host.port), timeout)
            except (OSError, TimeoutError) as exc:
                error = f"{host.address}: {type(exc).__name__}: {exc}"
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            self._ok_host, self._ok_until = host.address, time.monotonic() + PROBE_CACHE_S
            return host.address, ""
        self._ok_host = None
        return None, error


class AdminListener:
    """The HTTP side of the admin listener; subclasses serve the pages (one proxy, or a fleet
    of workers: :mod:`scalyproxy.server.supervisor`)."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.open = 0
        self.routes: dict[str, Callable[[], Awaitable[Response]]] = {
            "/metrics": self.metrics_page,
            "/healthz": self.healthz,
            "/readyz": self.readyz,
            "/report": self.report_page,
            "/profile": self.profile_page,
            "/": self.index,
        }

    async def metrics_page(self) -> Response:
        raise NotImplementedError

    async def healthz(self) -> Response:
        raise NotImplementedError

    async def readyz(self) -> Response:
        raise NotImplementedError

    async def report_page(self) -> Response:
        raise NotImplementedError

    async def profile_page(self) -> Response:
        raise NotImplementedError

    async def index(self) -> Response:
        return Response.text(200, "scalyproxy admin: /metrics /healthz /readyz /report /profile")

    async def start(self, listen: HostPort) -> str:
        self.server = await asyncio.start_server(
            self._serve, listen.host, listen.port, limit=MAX_HEAD, reuse_address=True
        )
        log.info("admin_listening", admin=self.address,
                 endpoints=[r for r in self.routes if r != "/"])
        return self.address

    @property
    def address(self) -> str:
        if self.server is None or not self.server.sockets:
            return "?"
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    # -- one request per connection ---------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= MAX_CONNECTIONS:
            writer.close()
            return
        self.open += 1
        try:
            response, head_only = await self._respond(reader)
            writer.write(response.encode(head_only))
            await asyncio.wait_for(writer.drain(), READ_TIMEOUT_S)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        except Exception as exc:  # the admin listener must never take the proxy down
            log.error("admin_error", error=repr(exc))
        finally:
            self.open -= 1
            writer.close()

    async def _respond(self, reader: asyncio.StreamReader) -> tuple[Response, bool]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            return Response.text(431, "request head too large"), False
        try:
            method, path = parse_request_line(head)
        except ValueError as exc:
            return Response.text(400, str(exc)), False
        if method not in ("GET", "HEAD"):
            return Response.text(405, "only GET and HEAD"), False
        route = self.routes.get(path.rstrip("/") or "/")
        if route is None:
            return Response.text(404, f"no such page: {path[:100]} (try /metrics, /healthz, /readyz, /report, /profile)"), False
        return await route(), method == "HEAD"


class AdminServer(AdminListener):
    """Serves the admin endpoints for one :class:`Proxy`."""

    def __init__(self, proxy: Proxy, metrics: Metrics, report: ShadowReport,
                 recorder: Recorder | None = None) -> None:
        super().__init__()
        self.proxy = proxy
        self.metrics = metrics
        self.report = report
        self.recorder = recorder
        self.probe = UpstreamProbe(proxy)

    # -- pages ------------------------------------------------------------------------

    async def metrics_page(self) -> Response:
        return Response(200, CONTENT_TYPE_LATEST, self.metrics.exposition())

    async def healthz(self) -> Response:
        return Response.text(200, "ok")

    async def readyz(self) -> Response:
        """Ready: a config is loaded (always, once running) and an upstream accepts connections."""
        cfg = self.proxy.config
        status = {"config": cfg.source_path, "config_hash": cfg.source_hash[:12],
                  "generation": self.proxy.generation, "stopping": self.proxy.stopping}
        if self.proxy.stopping:
            return Response.json(503, {"ready": False, "reason": "shutting down", **status})
        host, error = await self.probe.reachable()
        if host is None:
            return Response.json(503, {"ready": False, "reason": f"no upstream reachable ({error})", **status})
        return Response.json(200, {"ready": True, "upstream": host, **status})

    async def report_page(self) -> Response:
        return Response.json(200, self.report.as_json())

    async def profile_page(self) -> Response:
        """The traffic profile since start (what was flushed to the sink included)."""
        if self.recorder is None:
            return Response.json(404, {"error": "no traffic profile here"})
        profile = self.proxy.config.profile
        return Response.json(200, self.recorder.document(profile.enabled, profile.sink))
