"""The admin listener's request-line parsing and response encoding (no sockets)."""

from __future__ import annotations

import pytest

from scalyproxy.admin.http import Response, parse_request_line


def test_request_line() -> None:
    assert parse_request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n") == ("GET", "/metrics")
    assert parse_request_line(b"HEAD /report?x=1 HTTP/1.0\r\n\r\n") == ("HEAD", "/report")


@pytest.mark.parametrize("head", [b"\r\n\r\n", b"GET /metrics\r\n\r\n", b"GET / SPDY/3\r\n\r\n", b"GET  / HTTP/1.1\r\n"])
def test_bad_request_lines(head: bytes) -> None:
    with pytest.raises(ValueError):
        parse_request_line(head)


def test_response_encoding() -> None:
    r = Response.json(503, {"ready": False})
    data = r.encode(head_only=False)
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert b"Content-Length: %d" % len(body) in head and b"Connection: close" in head
    assert body == b'{\n "ready": false\n}\n'
    assert r.encode(head_only=True) == head + b"\r\n\r\n"
