"""The refusal path: a request the proxy will not forward becomes an error reply.

A refusal never costs the client its connection when the proxy knows where the
refused message ends: the framer has checked its length prefix and the whole
frame has arrived, so the next message starts right after it. Then:

* a request that expects a reply gets one: same opcode family, ``responseTo`` =
  its requestID, ``{ok: 0, errmsg, code, codeName}`` with a code no driver
  retries and no ``errorLabels``; reading goes on with the next message;
* an OP_MSG flagged ``moreToCome`` (a w:0 write) expects none: the refusal is
  logged and counted, nothing is sent, the connection stays;
* a legacy OP_INSERT, OP_UPDATE, OP_DELETE or OP_KILL_CURSORS expects no reply
  and has no flag saying so otherwise: closing is the only signal its sender
  can see, so the connection is closed.

The connection is also closed when framing itself is lost (a length prefix the
framer cannot trust): :func:`framing_lost`. docs/wire.md lists every case.
"""

from __future__ import annotations

from typing import Final

from scalyproxy import codes
from scalyproxy.logs import log
from scalyproxy.server.context import Connection
from scalyproxy.wire import header as wh
from scalyproxy.wire.command import CommandView
from scalyproxy.wire.errors import ProtocolError
from scalyproxy.wire.framer import Frame
from scalyproxy.wire.replies import error_reply, request_kind

#: Legacy opcodes whose sender reads no reply: a refusal can only close.
NO_REPLY_OPCODES: Final = frozenset({wh.OP_UPDATE, wh.OP_INSERT, wh.OP_DELETE, wh.OP_KILL_CURSORS})


def refuse(conn: Connection, view: CommandView, code: int, code_name: str, errmsg: str) -> None:
    """Answer a decoded request with an error (nothing for a ``moreToCome`` one)."""
    if view.more_to_come:
        # the client expects no reply (w:0): all we can do is log and count it
        log.warning(
            "refused_unacknowledged",
            client=conn.peer,
            app=conn.app_name,
            command=view.name,
            code_name=code_name,
            reason=errmsg,
        )
        return
    reply = error_reply(view, code=code, code_name=code_name, errmsg=errmsg, request_id=conn.proxy.next_id())
    conn.send_own_reply(reply)


def refuse_plain(conn: Connection, view: CommandView, code: int, errmsg: str, rule: str) -> None:
    """A refusal that is no policy rule (e.g. OP_QUERY beyond the handshake): logged,
    counted as a protocol error, answered."""
    log.warning("refused", client=conn.peer, app=conn.app_name, command=view.name, rule=rule, reason=errmsg)
    conn.proxy.hooks.protocol_error(rule)
    refuse(conn, view, code, codes.CODE_NAMES[code], errmsg)


def unreadable(conn: Connection, frame: Frame, exc: ProtocolError) -> None:
    """A whole frame the codec refused (bad BSON, bad sections or flags, a checksum,
    compression, an opcode it does not relay, a repeated name or ``$db``...):
    answered, skipped silently (moreToCome) or, for legacy writes, closed."""
    proxy = conn.proxy
    request_id = frame.header.request_id
    op_code, more_to_come = request_kind(frame.data)
    outcome = "closed" if op_code in NO_REPLY_OPCODES else "unanswered" if more_to_come else "answered"
    _report(conn, exc, request_id, op_code, outcome)
    if outcome == "closed":
        conn.close()
    elif outcome == "answered":
        code = codes.UNSUPPORTED_OPERATION if exc.kind == "unsupported_opcode" else codes.PROTOCOL_ERROR
        request = wh.Header(frame.header.length, request_id, 0, op_code)
        errmsg = str(exc)
        conn.send_own_reply(
            error_reply(request, code=code, code_name=codes.CODE_NAMES[code], errmsg=errmsg, request_id=proxy.next_id())
        )


def framing_lost(conn: Connection, exc: ProtocolError) -> None:
    """The client stream cannot be cut into messages any more (a length prefix out of
    bounds): nothing can be answered reliably, the connection is closed."""
    _report(conn, exc, exc.request_id, exc.op_code, "closed")
    conn.close()


def _report(conn: Connection, exc: ProtocolError, request_id: int | None, op_code: int | None, outcome: str) -> None:
    """Count one protocol error and log it (one line, no document values)."""
    conn.proxy.hooks.protocol_error(exc.kind)
    log.warning(
        "protocol_error",
        client=conn.peer,
        app=conn.app_name,
        kind=exc.kind,
        reason=str(exc),
        request_id=request_id,
        op_code=op_code,
        outcome=outcome,
    )
