"""The per-connection relay: one client connection, one upstream connection.

The only I/O layer. Each direction is relayed on its own: client bytes are
framed, every message passes the single decision point (:meth:`ClientConnection.
_decide`), and the original bytes go upstream unchanged when allowed; upstream
bytes stream to the client as they arrive, walked by a :class:`ReplyTracker`
only to know where messages end. Nothing pairs one reply to one request, so
``moreToCome`` requests (w:0 writes) and replies (exhaust cursors, streaming
hello) just work.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from scalyproxy import codes
from scalyproxy.logs import log
from scalyproxy.server.stream import ReplyTracker
from scalyproxy.wire import header as wh
from scalyproxy.wire.command import CommandView, command_view
from scalyproxy.wire.errors import ProtocolError
from scalyproxy.wire.framer import Frame, Framer
from scalyproxy.wire.replies import decode_reply_body, error_reply, rewrite_command

if TYPE_CHECKING:
    from scalyproxy.server.proxy import Proxy
    from scalyproxy.server.upstream import HostState

HELLO_NAMES = frozenset({"hello", "ismaster"})
WRITE_BUFFER_HIGH = 1 << 20  # bytes queued towards a slow peer before we stop reading the other side
WRITE_BUFFER_LOW = 256 << 10
MAX_PENDING_RTT = 1024  # requests remembered for round-trip timing


def _peer_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass


class ClientConnection(asyncio.Protocol):
    """The client side of one proxied connection."""

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.transport: asyncio.Transport | None = None
        self.upstream: UpstreamConnection | None = None
        self.peer = "?"
        self.app_name: str | None = None
        self.user: str | None = None
        self.framer = Framer(proxy.config.limits.max_message_size)
        self.tracker = ReplyTracker(proxy.config.limits.max_message_size)
        self.pause_reasons: set[str] = set()
        self.closing = False
        now = time.monotonic()
        self.last_activity = now
        self.message_started: float | None = None
        self.last_request = 0.0  # monotonic time of the last forwarded request expecting a reply
        self.last_reply_end = 0.0
        self.sent_at: dict[int, tuple[float, str]] = {}
        # requests awaiting their reply (only with limits.upstream_timeout_s): id -> sent, oldest first
        self.awaiting: dict[int, float] = {}
        self.last_upstream_data = 0.0

    # -- asyncio callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        self.peer = _peer_of(transport)
        _nodelay(transport)
        transport.set_write_buffer_limits(WRITE_BUFFER_HIGH, WRITE_BUFFER_LOW)
        if not self.proxy.admit(self):
            transport.abort()
            return
        self._pause("upstream")
        self.proxy.hooks.client_opened(self.peer)
        self.proxy.spawn(self._connect_upstream())

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_activity = time.monotonic()
        self.proxy.hooks.bytes_in(len(data))
        self.framer.feed(data)
        if self.upstream is not None:  # until it is, bytes wait in the framer
            self._process()

    def _process(self) -> None:
        framer = self.framer
        try:
            while (frame := framer.next_frame()) is not None:
                self._handle(frame)
                if self.closing:
                    return
        except ProtocolError as exc:
            self._protocol_error(exc)
            return
        except Exception as exc:  # a bug of ours must cost this connection only
            log.error("internal_error", client=self.peer, app=self.app_name, error=repr(exc))
            self.proxy.hooks.protocol_error("internal")
            self.close()
            return
        if framer.in_progress:
            if self.message_started is None:
                self.message_started = time.monotonic()
        else:
            self.message_started = None

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self in self.proxy.connections:  # not for connections refused at accept
            self.proxy.forget(self)
            self.proxy.hooks.client_closed(self.peer)
        if self.upstream is not None:
            self.upstream.close()

    def pause_writing(self) -> None:  # the client reads slower than the upstream writes
        if self.upstream is not None:
            self.upstream.pause("client-slow")

    def resume_writing(self) -> None:
        self.last_upstream_data = time.monotonic()  # the upstream was paused by us, not stalled
        if self.upstream is not None:
            self.upstream.resume("client-slow")

    # -- upstream ------------------------------------------------------------------

    async def _connect_upstream(self) -> None:
        pool = self.proxy.upstreams
        loop = asyncio.get_running_loop()
        timeout = self.proxy.config.limits.connect_timeout_s
        last_error = "no upstream host"
        for host in pool.candidates():
            if self.closing:
                return
            try:
                _, proto = await asyncio.wait_for(
                    loop.create_connection(
                        lambda h=host: UpstreamConnection(self, h),
                        host.host,
                        host.port,
                        ssl=pool.ssl_context,
                        server_hostname=host.host if pool.ssl_context is not None else None,
                    ),
                    timeout,
                )
            except (OSError, TimeoutError, ssl.SSLError) as exc:
                last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                pool.mark_failed(host, last_error)
                self.proxy.hooks.upstream_connect_failed(host.address, type(exc).__name__)
                continue
            pool.mark_ok(host)
            if self.closing:
                proto.close()
                return
            self.upstream = proto
            self._resume("upstream")
            self._process()
            return
        log.info("client_closed_no_upstream", client=self.peer, reason=last_error)
        self.close()

    # -- the decision point ----------------------------------------------------------

    def _handle(self, frame: Frame) -> None:
        started = time.perf_counter()
        view = command_view(frame)  # raises ProtocolError for bad or unsupported messages
        name = view.name.lower()
        if name in HELLO_NAMES:
            self._handshake(view, frame)
            return
        if view.legacy:
            self._refuse_plain(
                view,
                codes.UNSUPPORTED_OPERATION,
                f"OP_QUERY is accepted only for the handshake (hello/isMaster), not for "
                f"{view.name!r}: use a driver that speaks OP_MSG (MongoDB 3.6+)",
                rule="legacy_opcode",
            )
            return
        verdict = self.proxy.engine.decide(view)
        refusal = verdict.refusal
        if refusal is not None:
            self.proxy.hooks.command(self, view, verdict, time.perf_counter() - started)
            self.proxy.report_refusal(self, view, refusal, enforced=True)
            self._refuse(view, refusal.code, refusal.code_name, refusal.message)
            return
        for warning in verdict.warnings:
            self.proxy.report_refusal(self, view, warning, enforced=False)
        self._forward(frame, view)
        self.proxy.hooks.command(self, view, verdict, time.perf_counter() - started)

    def _forward(self, frame: Frame, view: CommandView) -> None:
        upstream = self.upstream
        if upstream is None or upstream.transport is None:
            log.error("internal_error", client=self.peer, error="forward without an upstream connection")
            self.close()
            return
        if view.more_to_come:
            self.tracker.expect_no_reply(view.request_id)
        else:
            self.last_request = time.monotonic()
            if len(self.sent_at) < MAX_PENDING_RTT:
                self.sent_at[view.request_id] = (time.perf_counter(), view.name)
            if self.proxy.config.limits.upstream_timeout_s:
                self.awaiting[view.request_id] = self.last_request
        upstream.write(frame.data)

    def _handshake(self, view: CommandView, frame: Frame) -> None:
        body = view.body
        meta = body.get("client")
        if isinstance(meta, Mapping):
            app = meta.get("application")
            if isinstance(app, Mapping) and isinstance(app.get("name"), str):
                self.app_name = app["name"]
        self.proxy.hooks.handshake(self, view)  # learns the user from speculativeAuthenticate
        if not view.more_to_come:
            self.tracker.capture_ids.add(view.request_id)
        wanted = body.get("compression")
        if isinstance(wanted, list):
            allowed = [c for c in wanted if c in self.proxy.compressors]
            if allowed != wanted:
                new_body = dict(body)
                new_body["compression"] = allowed
                self._forward_bytes(rewrite_command(view, new_body, request_id=view.request_id), view)
                return
        self._forward(frame, view)

    def _forward_bytes(self, data: bytes, view: CommandView) -> None:
        if self.upstream is None:
            self.close()
            return
        if view.more_to_come:
            self.tracker.expect_no_reply(view.request_id)
        else:
            self.last_request = time.monotonic()
            if self.proxy.config.limits.upstream_timeout_s:
                self.awaiting[view.request_id] = self.last_request
        self.upstream.write(data)

    def _refuse(self, view: CommandView, code: int, code_name: str, errmsg: str) -> None:
        if view.more_to_come:
            # the client expects no reply (w:0): all we can do is log and count it
            log.warning(
                "refused_unacknowledged",
                client=self.peer,
                app=self.app_name,
                command=view.name,
                code_name=code_name,
                reason=errmsg,
            )
            return
        reply = error_reply(view, code=code, code_name=code_name, errmsg=errmsg, request_id=self.proxy.next_id())
        self.send_own_reply(reply)

    def _refuse_plain(self, view: CommandView, code: int, errmsg: str, rule: str) -> None:
        log.warning("refused", client=self.peer, app=self.app_name, command=view.name, rule=rule, reason=errmsg)
        self.proxy.hooks.protocol_error(rule)
        self._refuse(view, code, codes.CODE_NAMES[code], errmsg)

    def _protocol_error(self, exc: ProtocolError) -> None:
        self.proxy.hooks.protocol_error(exc.kind)
        log.warning(
            "protocol_error",
            client=self.peer,
            app=self.app_name,
            kind=exc.kind,
            reason=str(exc),
            request_id=exc.request_id,
            op_code=exc.op_code,
        )
        keep_open = exc.kind == "unsupported_opcode" and not exc.fatal
        if exc.request_id is not None and exc.op_code in (wh.OP_MSG, wh.OP_QUERY, wh.OP_COMPRESSED, wh.OP_GET_MORE):
            hdr = wh.Header(16, exc.request_id, 0, exc.op_code)
            code = codes.UNSUPPORTED_OPERATION if keep_open else codes.PROTOCOL_ERROR
            reply = error_reply(
                hdr, code=code, code_name=codes.CODE_NAMES[code], errmsg=str(exc), request_id=self.proxy.next_id()
            )
            self.send_own_reply(reply)
        elif keep_open:
            keep_open = False  # legacy writes expect no reply: closing is the only signal left
        if not keep_open:
            self.close()

    # -- writing to the client -------------------------------------------------------

    def send_own_reply(self, reply: bytes) -> None:
        """Send a reply the proxy made, at a message boundary of the upstream stream."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.tracker.at_boundary():
            self.transport.write(reply)
            self.proxy.hooks.bytes_out(len(reply))
        else:
            self.tracker.injections.append(reply)

    def from_upstream(self, data: bytes) -> None:
        """Bytes from the upstream: forward them, noting message ends."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        tracker = self.tracker
        try:
            pieces = tracker.feed(data)
        except ProtocolError as exc:
            log.error("upstream_protocol_error", client=self.peer, reason=str(exc))
            self.proxy.hooks.protocol_error("upstream_" + exc.kind)
            self.close()
            return
        if len(pieces) == 1:
            transport.write(pieces[0])
        elif pieces:
            transport.writelines(pieces)
        if self.awaiting:
            self.last_upstream_data = time.monotonic()
            for rid in tracker.completed:  # a whole reply came back: its request is answered
                self.awaiting.pop(rid, None)
        if tracker.ended:
            self._replies_done(tracker)
        self.proxy.hooks.bytes_out(len(data))

    def _replies_done(self, tracker: ReplyTracker) -> None:
        self.last_reply_end = time.monotonic()
        if tracker.replied_to and self.sent_at:
            now = time.perf_counter()
            for rid in tracker.replied_to:
                sent = self.sent_at.pop(rid, None)
                if sent is not None:
                    self.proxy.hooks.round_trip(sent[1], now - sent[0])
        tracker.replied_to.clear()
        if tracker.captured:
            for message in tracker.captured:
                self._hello_reply(message)
            tracker.captured.clear()

    def _hello_reply(self, message: bytes) -> None:
        try:
            body = decode_reply_body(Frame(wh.parse_header(message), message))
        except ProtocolError as exc:
            log.warning("hello_reply_unreadable", client=self.peer, reason=str(exc))
            return
        size = body.get("maxMessageSizeBytes")
        if isinstance(size, int) and 16 <= size <= 2**31 - 1:
            self.framer.max_message_size = size
            self.tracker.max_size = max(size, self.tracker.max_size)

    # -- flow control and closing ------------------------------------------------------

    def _pause(self, reason: str) -> None:
        if not self.pause_reasons and self.transport is not None:
            self.transport.pause_reading()
        self.pause_reasons.add(reason)

    def _resume(self, reason: str) -> None:
        self.pause_reasons.discard(reason)
        if not self.pause_reasons and self.transport is not None and not self.closing:
            self.transport.resume_reading()

    pause = _pause
    resume = _resume

    def upstream_stalled(self, now: float, timeout: float) -> bool:
        """A request has waited ``timeout`` seconds for its reply with no byte from the upstream."""
        if not self.awaiting or self.upstream is None or "client-slow" in self.upstream.pause_reasons:
            return False
        oldest = next(iter(self.awaiting.values()))
        return now - max(oldest, self.last_upstream_data) > timeout

    def busy(self) -> bool:
        """A request was forwarded and its reply has not fully come back."""
        return self.last_request > self.last_reply_end

    def close(self) -> None:
        if self.closing and (self.transport is None or self.transport.is_closing()):
            return
        self.closing = True
        if self.transport is not None:
            self.transport.close()  # flushes what is queued (an error reply) first
        if self.upstream is not None:
            self.upstream.close()

    def info(self) -> dict[str, Any]:
        return {"client": self.peer, "app": self.app_name}


class RawRelayConnection(ClientConnection):
    """``scalyproxy run --relay-only``: bytes are forwarded both ways as they come,
    nothing is read, framed or checked (the policy is off; only bytes and
    connections are counted). The floor the full relay is compared with, and a
    bypass that keeps the proxy in the path."""

    def __init__(self, proxy: Proxy) -> None:
        super().__init__(proxy)
        self.waiting: list[bytes] | None = []  # bytes that came before the upstream connection

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_activity = self.last_request = time.monotonic()
        self.proxy.hooks.bytes_in(len(data))
        upstream = self.upstream
        if upstream is None or self.waiting is not None:
            if self.waiting is not None:
                self.waiting.append(data)
            return
        upstream.write(data)

    def _process(self) -> None:  # the upstream connection is up: flush what waited for it
        waiting, self.waiting = self.waiting, None
        if waiting and self.upstream is not None:
            self.upstream.write(b"".join(waiting))

    def from_upstream(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        self.last_reply_end = time.monotonic()
        self.proxy.hooks.bytes_out(len(data))

    def send_own_reply(self, reply: bytes) -> None:  # never called: nothing is refused
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)


class UpstreamConnection(asyncio.Protocol):
    """The proxy's connection to one mongos, owned by one client connection."""

    def __init__(self, client: ClientConnection, host: HostState) -> None:
        self.client = client
        self.host = host
        self.transport: asyncio.Transport | None = None
        self.pause_reasons: set[str] = set()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        _nodelay(transport)
        transport.set_write_buffer_limits(WRITE_BUFFER_HIGH, WRITE_BUFFER_LOW)
        self.client.proxy.hooks.upstream_opened(self.host.address)

    def data_received(self, data: bytes) -> None:
        self.client.from_upstream(data)

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.client.proxy.hooks.upstream_closed(self.host.address)
        if not self.client.closing:
            log.info(
                "upstream_connection_lost",
                client=self.client.peer,
                upstream=self.host.address,
                reason=str(exc) if exc else "closed by upstream",
            )
            self.client.close()

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def pause_writing(self) -> None:  # upstream reads slower than the client writes
        self.client.pause("upstream-slow")

    def resume_writing(self) -> None:
        self.client.resume("upstream-slow")

    def pause(self, reason: str) -> None:
        if not self.pause_reasons and self.transport is not None:
            self.transport.pause_reading()
        self.pause_reasons.add(reason)

    def resume(self, reason: str) -> None:
        self.pause_reasons.discard(reason)
        if not self.pause_reasons and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
