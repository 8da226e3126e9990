"""The handshake path: a client's hello / isMaster (OP_MSG, or the legacy OP_QUERY).

The proxy takes no part in the handshake or in authentication: the hello goes
upstream and its reply comes back untouched, except that

* the ``compression`` list is restricted to the compressors the proxy can
  decode (the message is then re-encoded with the new list);
* the client's application name (``client.application.name``) and, through the
  hooks, the user of a ``speculativeAuthenticate`` are noted for the logs;
* the upstream's reply is captured, so that the relay learns the server's
  ``maxMessageSizeBytes``.

The ``compression`` list is read strictly (the proxy rewrites it): a repeated
key or a string that is not UTF-8 there, or anywhere in a body that must be
re-encoded, raises :class:`~scalyproxy.wire.ambiguous.AmbiguousRead` before
anything is sent, and the request is refused. The application name is for logs
only: one that cannot be read one way is not noted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from scalyproxy.server.context import Connection
from scalyproxy.wire.command import CommandView
from scalyproxy.wire.errors import ProtocolError
from scalyproxy.wire.framer import Frame
from scalyproxy.wire.replies import rewrite_command

#: The handshake's command names, lower-cased (the relay compares ``name.lower()``).
HELLO_NAMES: Final = frozenset({"hello", "ismaster"})


def handshake(conn: Connection, view: CommandView, frame: Frame) -> None:
    """Forward a hello (its compression list restricted), noting who the client is."""
    rewritten = _restricted(conn, view)  # before any side effect: it may refuse the hello
    app = app_name(view.body)
    if app is not None:
        conn.app_name = app
    conn.proxy.hooks.handshake(conn, view)  # learns the user from speculativeAuthenticate
    if not view.more_to_come:
        conn.tracker.capture_ids.add(view.request_id)
    if rewritten is None:
        conn.forward(frame, view)
    else:
        conn.forward_bytes(rewritten, view)


def _restricted(conn: Connection, view: CommandView) -> bytes | None:
    """The hello re-encoded with the compressors the proxy can decode, or None when
    its list needs no change."""
    body = view.body
    wanted = body.get("compression")
    if not isinstance(wanted, list):
        return None
    allowed = [c for c in wanted if c in conn.proxy.compressors]
    if allowed == wanted:
        return None
    new_body = dict(body)
    new_body["compression"] = allowed
    return rewrite_command(view, new_body, request_id=view.request_id)


def app_name(body: Mapping[str, Any]) -> str | None:
    """``client.application.name`` of a hello, if it reads one way."""
    try:
        meta = body.get("client")
        app = meta.get("application") if isinstance(meta, Mapping) else None
        name = app.get("name") if isinstance(app, Mapping) else None
    except ProtocolError:  # a repeated key or a string that is not UTF-8: not noted
        return None
    return name if isinstance(name, str) else None
