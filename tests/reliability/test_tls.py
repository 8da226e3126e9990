"""TLS with a client CA: a client without a certificate (or with one from another CA)
is refused at the handshake, and nothing it sends reaches the upstream.

Throwaway CAs and certificates are made in the test with the ``openssl`` command
line tool (the ``cryptography`` package is not a dependency); the test is
skipped where ``openssl`` is missing.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BLOG_CONFIG, ProxyProcess
from tests.reliability.conftest import Upstream
from tests.reliability.helpers import op_msg, recv_message, reply_doc, response_to
from tests.scripted_peer import ScriptedPeer

pytestmark = [pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command"),
              pytest.mark.fleet]  # each test also runs against --workers 2 (tests/conftest.py)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
            "-keyout", f"{name}.key", "-out", f"{name}.pem", cwd=d)


def make_cert(d: Path, name: str, ca: str, san: str | None = None) -> None:
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
            "-out", f"{name}.csr", cwd=d)
    ext = d / f"{name}.ext"
    ext.write_text(f"subjectAltName={san}\n" if san else "basicConstraints=CA:FALSE\n")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
            "-days", "2", "-extfile", ext.name, "-out", f"{name}.pem", cwd=d)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d: Path = tmp_path_factory.mktemp("pki")
    make_ca(d, "ca")
    make_ca(d, "other-ca")
    make_cert(d, "server", "ca", san="IP:127.0.0.1,DNS:localhost")
    make_cert(d, "client", "ca")
    make_cert(d, "stranger", "other-ca")
    return d


@pytest.fixture(scope="module")
def tls_proxy(proxy_factory: Callable[..., ProxyProcess], peer: ScriptedPeer, pki: Path) -> ProxyProcess:
    text = BLOG_CONFIG.read_text() + (
        f"tls:\n  cert_file: {pki / 'server.pem'}\n  key_file: {pki / 'server.key'}\n  ca_file: {pki / 'ca.pem'}\n"
    )
    path = pki / "tls.yaml"
    path.write_text(text)
    return proxy_factory(path, upstream=peer.uri)


def client_context(pki: Path, cert: str | None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    if cert is not None:
        ctx.load_cert_chain(str(pki / f"{cert}.pem"), str(pki / f"{cert}.key"))
    return ctx


def ping_over_tls(port: int, ctx: ssl.SSLContext) -> dict[str, object]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.sendall(op_msg({"ping": 1, "$db": "admin"}, 77))
            reply = recv_message(s)
    assert response_to(reply) == 77
    return reply_doc(reply)


def test_client_with_a_certificate_from_the_ca_is_served(tls_proxy: ProxyProcess, pki: Path, peer: ScriptedPeer) -> None:
    before = len(peer.received)
    assert ping_over_tls(tls_proxy.port, client_context(pki, "client"))["ok"] == 1
    assert len(peer.received) == before + 1


@pytest.mark.parametrize("cert", [None, "stranger"], ids=["no certificate", "certificate from another CA"])
def test_client_is_refused_at_the_handshake(
    cert: str | None, tls_proxy: ProxyProcess, pki: Path, peer: ScriptedPeer, upstream: Upstream
) -> None:
    before = len(peer.received)
    # TLS 1.3 reports a refused client certificate after the client's side of the
    # handshake, at its first read: either way no reply may come back
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        ping_over_tls(tls_proxy.port, client_context(pki, cert))
    assert len(peer.received) == before, "a message of a client the handshake refused reached the upstream"
    assert tls_proxy.proc is not None and tls_proxy.proc.poll() is None


def test_plain_tcp_is_refused(tls_proxy: ProxyProcess, peer: ScriptedPeer) -> None:
    before = len(peer.received)
    with socket.create_connection(("127.0.0.1", tls_proxy.port), timeout=10) as s:
        s.sendall(op_msg({"ping": 1, "$db": "admin"}, 78))
        s.settimeout(10)
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
    assert data[12:16] != struct.pack("<i", 2013), "a plain-TCP client got an OP_MSG reply"
    assert len(peer.received) == before
