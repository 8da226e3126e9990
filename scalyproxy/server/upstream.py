"""Upstream selection: the mongos hosts of a MongoDB URI, round robin, skipping
hosts that failed to connect recently; TLS options taken from the URI."""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from pymongo import uri_parser

from scalyproxy.logs import log

RETRY_FAILED_AFTER_S = 5.0
_TRUE = {"true", "1", "yes"}


class UpstreamConfigError(ValueError):
    """The upstream URI cannot be used (bad syntax, SRV, unreadable TLS files)."""


@dataclass
class HostState:
    host: str
    port: int
    failed_at: float | None = None
    failures: int = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class UpstreamPool:
    """The hosts of the upstream URI and their recent health."""

    uri: str
    hosts: list[HostState] = field(default_factory=list)
    ssl_context: ssl.SSLContext | None = None
    server_hostname_check: bool = True
    _next: int = 0

    @classmethod
    def from_uri(cls, uri: str) -> UpstreamPool:
        if uri.startswith("mongodb+srv://"):
            raise UpstreamConfigError("mongodb+srv:// is not supported for upstream: list the mongos hosts")
        try:
            parsed = uri_parser.parse_uri(uri, validate=False)
        except Exception as exc:  # pymongo raises several types for bad URIs
            raise UpstreamConfigError(f"bad upstream URI {uri!r}: {exc}") from None
        hosts = [HostState(h, int(p)) for h, p in parsed["nodelist"]]
        if not hosts:
            raise UpstreamConfigError(f"upstream URI {uri!r} names no host")
        pool = cls(uri=uri, hosts=hosts)
        pool.ssl_context, pool.server_hostname_check = _tls_from_options(dict(parsed["options"]))
        return pool

    def candidates(self, now: float | None = None) -> list[HostState]:
        """Hosts to try for a new connection, healthy ones first, in round-robin order."""
        now = time.monotonic() if now is None else now
        n = len(self.hosts)
        start = self._next % n
        self._next += 1
        order = [self.hosts[(start + i) % n] for i in range(n)]
        healthy = [h for h in order if h.failed_at is None or now - h.failed_at > RETRY_FAILED_AFTER_S]
        recent = [h for h in order if h not in healthy]
        return healthy + recent

    def mark_failed(self, host: HostState, reason: str) -> None:
        if host.failed_at is None:  # log once per host, on the transition to down
            log.error("upstream_down", upstream=host.address, reason=reason)
        host.failed_at = time.monotonic()
        host.failures += 1

    def mark_ok(self, host: HostState) -> None:
        if host.failed_at is not None:
            log.info("upstream_up", upstream=host.address)
        host.failed_at = None

    def any_healthy(self) -> bool:
        return any(h.failed_at is None for h in self.hosts)


def _tls_from_options(opts: dict[str, Any]) -> tuple[ssl.SSLContext | None, bool]:
    lower = {k.lower(): v for k, v in opts.items()}
    enabled = str(lower.get("tls", lower.get("ssl", "false"))).lower() in _TRUE
    if not enabled:
        return None, True
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca = lower.get("tlscafile")
    try:
        if ca:
            ctx.load_verify_locations(cafile=str(ca))
        cert = lower.get("tlscertificatekeyfile")
        if cert:
            ctx.load_cert_chain(str(cert), password=lower.get("tlscertificatekeyfilepassword"))
    except (OSError, ssl.SSLError) as exc:
        raise UpstreamConfigError(f"upstream TLS file problem: {exc}") from None
    insecure = str(lower.get("tlsinsecure", "false")).lower() in _TRUE
    invalid_certs = str(lower.get("tlsallowinvalidcertificates", "false")).lower() in _TRUE
    invalid_hosts = str(lower.get("tlsallowinvalidhostnames", "false")).lower() in _TRUE
    if insecure or invalid_hosts:
        ctx.check_hostname = False
    if insecure or invalid_certs:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx, ctx.check_hostname
