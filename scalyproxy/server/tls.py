"""The listener's TLS context (client side of the proxy)."""

from __future__ import annotations

import ssl

from scalyproxy.config import TlsConfig


def server_context(tls: TlsConfig) -> ssl.SSLContext:
    """TLS for the listener; with ``ca_file`` set, clients must present a certificate it signed."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.ca_file:
        ctx.load_verify_locations(cafile=tls.ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
