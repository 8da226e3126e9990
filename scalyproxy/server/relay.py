"""The per-connection relay: one client connection, one upstream connection.

The only I/O layer. Each direction is relayed on its own: client bytes are
framed, every message is decided (a targeted find, insert, update, delete,
findAndModify, count, distinct or aggregate by the C fast path on its bytes,
:meth:`ClientConnection._allowed_fast`; anything else by the
engine on its view, :meth:`ClientConnection._handle`), and the original bytes
go upstream unchanged when allowed; upstream
bytes stream to the client as they arrive, walked by a :class:`ReplyTracker`
only to know where messages end. Nothing pairs one reply to one request, so
``moreToCome`` requests (w:0 writes) and replies (exhaust cursors, streaming
hello) just work.

bytes -> frame (:mod:`scalyproxy.wire.framer`) -> verdict (the fast path, or
:mod:`scalyproxy.policy`; a hello takes :mod:`~scalyproxy.server.handshake`)
-> bytes: the original ones upstream, or an error reply
(:mod:`~scalyproxy.server.refusal`). A connection reads what it needs of its
proxy through :class:`~scalyproxy.server.context.ProxyState`.

With the C extension the common round trip (a whole message ``fast_decide``
allows, a whole reply) runs in C, in the bases ``_scan.ClientLane`` and
``_scan.UpstreamLane``, which call the methods here for everything else (see
docs/wire.md, "The common round trip runs in C").
"""

from __future__ import annotations

import asyncio
import ssl
import struct
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, cast

from scalyproxy import codes
from scalyproxy.logs import log
from scalyproxy.server.context import ProxyState
from scalyproxy.server.handshake import HELLO_NAMES, handshake
from scalyproxy.server.refusal import framing_lost, refuse, refuse_plain, unreadable
from scalyproxy.server.stream import ReplyTracker
from scalyproxy.wire import header as wh
from scalyproxy.wire.command import CommandView, command_view
from scalyproxy.wire.errors import ProtocolError
from scalyproxy.wire.framer import Data, Frame, Framer, make_frame
from scalyproxy.wire.op_msg import FLAG_MORE_TO_COME
from scalyproxy.wire.replies import decode_reply_body

if TYPE_CHECKING:
    from scalyproxy.server.upstream import HostState

try:
    from scalyproxy._scan import fast_decide
except ImportError:  # the pure-Python install: every command goes through the engine
    fast_decide = None  # type: ignore[assignment]

_int32_at = struct.Struct("<i").unpack_from
WRITE_BUFFER_HIGH = 1 << 20  # bytes queued towards a slow peer before we stop reading the other side
WRITE_BUFFER_LOW = 256 << 10
MAX_PENDING_RTT = 1024  # requests remembered for round-trip timing


def _peer_of(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    return str(peer)


def _without(reasons: tuple[str, ...], reason: str) -> tuple[str, ...]:
    return tuple(r for r in reasons if r != reason) if reason in reasons else reasons


class _ClientFields(asyncio.Protocol):
    """The pure-Python base of :class:`ClientConnection`: the fields its common round trip
    reads and writes, and the two entry points, which hand every chunk to the Python code.
    With the C extension ``_scan.ClientLane`` takes its place: the same fields, and the
    common round trip (a whole message ``fast_decide`` allows, a whole reply) done in C,
    calling the Python code for everything else (see docs/wire.md and scalyproxy/_scan.c)."""

    __slots__ = (
        "proxy", "transport", "upstream", "_framer", "tracker", "closing", "last_activity",
        "message_started", "last_request", "last_reply_end", "sent_at", "awaiting",
        "max_message_size", "stream_offset",
    )

    proxy: ProxyState
    transport: asyncio.Transport | None
    upstream: UpstreamConnection | None
    _framer: Framer | None
    tracker: ReplyTracker
    closing: bool
    last_activity: float
    message_started: float | None
    last_request: float
    last_reply_end: float
    sent_at: dict[int, tuple[float, Any]]
    awaiting: dict[int, float]
    max_message_size: int
    stream_offset: int

    def data_received(self, data: bytes) -> None:
        self._chunk_received(data)

    def from_upstream(self, data: bytes) -> None:
        """Bytes from the upstream: forward them, noting message ends."""
        self._reply_received(data)

    def _chunk_received(self, data: bytes) -> None:
        raise NotImplementedError

    def _reply_received(self, data: bytes) -> None:
        raise NotImplementedError


class _UpstreamFields(asyncio.Protocol):
    """The pure-Python base of :class:`UpstreamConnection` (``_scan.UpstreamLane`` with the
    C extension: replies go to the client's C lane without a Python call)."""

    __slots__ = ("client", "transport")

    client: ClientConnection
    transport: asyncio.Transport | None

    def data_received(self, data: bytes) -> None:
        self.client.from_upstream(data)


if TYPE_CHECKING:
    _ClientBase = _ClientFields
    _UpstreamBase = _UpstreamFields
else:
    try:
        from scalyproxy._scan import ClientLane as _ClientBase
        from scalyproxy._scan import UpstreamLane as _UpstreamBase
        from scalyproxy._scan import lane_configure
    except ImportError:  # the pure-Python install
        _ClientBase, _UpstreamBase = _ClientFields, _UpstreamFields
    else:
        lane_configure(globals())  # the C lane reads fast_decide here (None: the Python path) and make_frame


class ClientConnection(_ClientBase):
    """The client side of one proxied connection."""

    # Slots, not a __dict__: 10,000 idle connections must stay cheap (see docs/benchmarks.md);
    # the other fields are the base's.
    __slots__ = ("peer", "app_name", "user", "pause_reasons", "last_upstream_data", "framer_base")

    def __init__(self, proxy: ProxyState) -> None:
        self.proxy = proxy
        self.transport = None
        self.upstream = None
        self.peer = "?"
        self.app_name: str | None = None
        self.user: str | None = None
        self.max_message_size = proxy.config.limits.max_message_size
        # A framer exists only while a message is incomplete (or waits for the upstream):
        # a chunk that is exactly one whole message is its own frame, and an idle
        # connection holds no buffer.
        self._framer = None
        self.stream_offset = 0  # bytes of whole messages read from the client
        self.framer_base = 0  # stream offset where the current framer started
        self.tracker = ReplyTracker(proxy.config.limits.max_message_size)
        self.pause_reasons: tuple[str, ...] = ()  # why reading is paused (no set per idle connection)
        self.closing = False
        now = time.monotonic()
        self.last_activity = now
        self.message_started = None
        self.last_request = 0.0  # monotonic time of the last forwarded request expecting a reply
        self.last_reply_end = 0.0
        self.sent_at = {}  # request id -> (sent, tag for hooks.round_trip)
        # requests awaiting their reply (only with limits.upstream_timeout_s): id -> sent, oldest first
        self.awaiting = {}
        self.last_upstream_data = 0.0

    # -- asyncio callbacks -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport = transport
        self.peer = _peer_of(transport)
        # No TCP_NODELAY here: uvloop and asyncio set it on every TCP transport they make,
        # and asking for the socket object would keep one more object per connection.
        transport.set_write_buffer_limits(WRITE_BUFFER_HIGH, WRITE_BUFFER_LOW)
        if not self.proxy.admit(self):
            transport.abort()
            return
        self._pause("upstream")
        self.proxy.hooks.client_opened(self.peer)
        self.proxy.spawn(self._connect_upstream())

    def _chunk_received(self, data: bytes) -> None:
        """Bytes from the client (``data_received``; the C lane's own common case is the
        first branch here)."""
        if self.closing:
            return
        self.last_activity = now = time.monotonic()
        proxy = self.proxy
        proxy.bytes_in += len(data)
        framer = self._framer
        if framer is None:
            n = len(data)
            if n >= 16 and _int32_at(data, 0)[0] == n <= self.max_message_size and self.upstream is not None:
                # the common case: one whole message, nothing buffered
                self.stream_offset += n
                try:
                    if fast_decide is None or not self._allowed_fast(data, now):
                        self._handle(make_frame(data))
                except Exception as exc:
                    self._failed(exc)
                self.message_started = None
                return
            framer = self.framer
        framer.feed(data)
        if self.upstream is not None:  # until it is, bytes wait in the framer
            self._process()

    @property
    def framer(self) -> Framer:
        """The framer of the client stream (made when first needed; dropped when empty)."""
        if self._framer is None:
            self._framer = Framer(self.max_message_size)
            self.framer_base = self.stream_offset
        return self._framer

    def _process(self) -> None:
        framer = self._framer
        if framer is None:
            return
        try:
            while (frame := self._next_frame(framer)) is not None:
                self.stream_offset += len(frame.data)
                if fast_decide is None or not self._allowed_fast(frame.data, time.monotonic()):
                    self._handle(frame)
                if self.closing:
                    return
        except Exception as exc:
            self._failed(exc)
            return
        if framer.in_progress:
            if self.message_started is None:
                self.message_started = time.monotonic()
        else:
            self.message_started = None
            self.max_message_size = framer.max_message_size
            self._framer = None  # nothing buffered: an idle connection holds no framer

    def _next_frame(self, framer: Framer) -> Frame | None:
        try:
            return framer.next_frame()
        except ProtocolError as exc:
            if exc.offset is not None:  # the framer counts from where it started
                exc.offset += self.framer_base
            raise

    def _failed(self, exc: Exception) -> None:
        if isinstance(exc, ProtocolError):  # from the framer: a length prefix out of bounds
            framing_lost(self, exc)
            return
        # a bug of ours must cost this connection only
        log.error("internal_error", client=self.peer, app=self.app_name, error=repr(exc))
        self.proxy.hooks.protocol_error("internal")
        self.close()

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        if self.proxy.forget(self):  # not for connections refused at accept
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

    def _allowed_fast(self, data: Data, started: float) -> bool:
        """A common targeted command, allowed by the C fast path on its bytes and
        forwarded; False: the engine must decide (see scalyproxy.policy.fastpath)."""
        assert fast_decide is not None
        proxy = self.proxy
        allowed = fast_decide(data, proxy.engine.fast)
        if allowed is None:
            return False
        tag = proxy.hooks.command(self, None, allowed, time.monotonic() - started, data)
        self._send(data, _int32_at(data, 4)[0], not data[16] & FLAG_MORE_TO_COME, tag, started)
        return True

    def _handle(self, frame: Frame) -> None:
        started = time.monotonic()
        proxy = self.proxy
        try:
            view = command_view(frame)  # raises ProtocolError for bad or unsupported messages
            name = view.name
            if name and name[0] in "hHiI" and name.lower() in HELLO_NAMES:
                handshake(self, view, frame)
                return
            if view.legacy:
                refuse_plain(
                    self,
                    view,
                    codes.UNSUPPORTED_OPERATION,
                    f"OP_QUERY is accepted only for the handshake (hello/isMaster), not for "
                    f"{view.name!r}: use a driver that speaks OP_MSG (MongoDB 3.6+)",
                    rule="legacy_opcode",
                )
                return
            verdict = proxy.engine.decide_message(view, frame.data)
        except ProtocolError as exc:  # the frame is whole: answered, and the next message is read
            unreadable(self, frame, exc)
            return
        tag = proxy.hooks.command(self, view, verdict, time.monotonic() - started, frame.data)
        refusal = verdict.refusal
        if refusal is not None:
            proxy.report_refusal(self, view, refusal, enforced=True)
            refuse(self, view, refusal.code, refusal.code_name, refusal.message)
            return
        for warning in verdict.warnings:
            proxy.report_refusal(self, view, warning, enforced=False)
        self.forward(frame, view, started, tag)

    def forward(self, frame: Frame, view: CommandView, now: float | None = None, tag: Any = None) -> None:
        """Send the original bytes upstream (``now``: the monotonic time the request was read;
        ``tag``: what ``hooks.command`` returned, for ``hooks.round_trip``)."""
        more_to_come = view.flags & FLAG_MORE_TO_COME and not view.legacy  # view.more_to_come, inlined
        self._send(frame.data, view.request_id, not more_to_come, view.name if tag is None else tag, now)

    def _send(self, data: Data, request_id: int, expects_reply: bool, tag: Any, now: float | None) -> None:
        upstream = self.upstream
        if upstream is None or upstream.transport is None:
            log.error("internal_error", client=self.peer, error="forward without an upstream connection")
            self.close()
            return
        if not expects_reply:
            self.tracker.expect_no_reply(request_id)
        else:
            self.last_request = now = time.monotonic() if now is None else now
            if len(self.sent_at) < MAX_PENDING_RTT:
                self.sent_at[request_id] = (now, tag)
            if self.proxy.config.limits.upstream_timeout_s:
                self.awaiting[request_id] = now
        transport = upstream.transport  # UpstreamConnection.write, inlined (once per message)
        if not transport.is_closing():
            transport.write(data)

    def forward_bytes(self, data: bytes, view: CommandView) -> None:
        """Send bytes the proxy rewrote (a hello) upstream in place of ``view``'s request."""
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

    # -- writing to the client -------------------------------------------------------

    def send_own_reply(self, reply: bytes) -> None:
        """Send a reply the proxy made, at a message boundary of the upstream stream."""
        if self.transport is None or self.transport.is_closing():
            return
        if self.tracker.at_boundary():
            self.transport.write(reply)
            self.proxy.bytes_out += len(reply)
        else:
            self.tracker.injections.append(reply)

    def _reply_received(self, data: bytes) -> None:
        """Bytes from the upstream (``from_upstream``; the C lane's own common case is the
        first branch here)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        tracker = self.tracker
        response_to = tracker.whole(data)
        if response_to is not None:  # the common case: exactly one whole reply
            transport.write(data)
            self.last_reply_end = now = time.monotonic()
            self._answered(response_to, now)
            if self.awaiting:
                self._no_longer_awaiting((response_to,), now)
        else:
            self._reply_in_pieces(transport, tracker, data)
            return
        self.proxy.bytes_out += len(data)

    def _reply_in_pieces(self, transport: asyncio.Transport, tracker: ReplyTracker, data: bytes) -> None:
        """Bytes from the upstream that are not one whole reply: the tracker cuts them."""
        if self._from_upstream_pieces(transport, tracker, data):
            if self.awaiting:
                self._no_longer_awaiting(tracker.completed, time.monotonic())
            if tracker.ended:
                self._replies_done(tracker)
            self.proxy.bytes_out += len(data)

    def _no_longer_awaiting(self, answered: Iterable[int], now: float) -> None:
        """Whole replies came back: their requests are answered (upstream_timeout_s)."""
        self.last_upstream_data = now
        for rid in answered:
            self.awaiting.pop(rid, None)
        if not self.awaiting:
            self.awaiting.clear()

    def _answered(self, response_to: int, now: float) -> None:
        """A reply to ``response_to`` has come whole: its round trip is timed."""
        sent_at = self.sent_at
        sent = sent_at.pop(response_to, None)
        if sent is not None:
            self.proxy.hooks.round_trip(sent[1], now - sent[0])
        if not sent_at:
            sent_at.clear()  # an emptied dict keeps its table until cleared (idle memory)

    def _from_upstream_pieces(self, transport: asyncio.Transport, tracker: ReplyTracker, data: bytes) -> bool:
        try:
            pieces = tracker.feed(data)
        except ProtocolError as exc:
            log.error("upstream_protocol_error", client=self.peer, reason=str(exc))
            self.proxy.hooks.protocol_error("upstream_" + exc.kind)
            self.close()
            return False
        if len(pieces) == 1:
            transport.write(pieces[0])
        elif pieces:
            transport.writelines(pieces)
        return True

    def _replies_done(self, tracker: ReplyTracker) -> None:
        self.last_reply_end = now = time.monotonic()
        if self.sent_at:
            for rid in tracker.replied_to:
                self._answered(rid, now)
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
            self.max_message_size = size
            if self._framer is not None:
                self._framer.max_message_size = size
            self.tracker.max_size = max(size, self.tracker.max_size)

    # -- flow control and closing ------------------------------------------------------

    def _pause(self, reason: str) -> None:
        if not self.pause_reasons and self.transport is not None:
            self.transport.pause_reading()
        if reason not in self.pause_reasons:
            self.pause_reasons += (reason,)

    def _resume(self, reason: str) -> None:
        self.pause_reasons = _without(self.pause_reasons, reason)
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

    __slots__ = ("waiting",)

    def __init__(self, proxy: ProxyState) -> None:
        super().__init__(proxy)
        self.waiting: list[bytes] | None = []  # bytes that came before the upstream connection

    def data_received(self, data: bytes) -> None:
        if self.closing:
            return
        self.last_activity = self.last_request = time.monotonic()
        self.proxy.bytes_in += len(data)
        upstream = self.upstream
        if upstream is None or self.waiting is not None:
            if self.waiting is not None:
                self.waiting.append(data)
            return
        transport = upstream.transport  # UpstreamConnection.write, inlined (once per chunk)
        if transport is not None and not transport.is_closing():
            transport.write(data)

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
        self.proxy.bytes_out += len(data)

    def send_own_reply(self, reply: bytes) -> None:  # never called: nothing is refused
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)


class UpstreamConnection(_UpstreamBase):
    """The proxy's connection to one mongos, owned by one client connection."""

    __slots__ = ("host", "pause_reasons", "closed")  # and the base's client and transport

    def __init__(self, client: ClientConnection, host: HostState) -> None:
        self.client = client
        self.host = host
        self.transport = None
        self.pause_reasons: tuple[str, ...] = ()
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        transport.set_write_buffer_limits(WRITE_BUFFER_HIGH, WRITE_BUFFER_LOW)
        self.client.proxy.hooks.upstream_opened(self.host.address)

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
        if reason not in self.pause_reasons:
            self.pause_reasons += (reason,)

    def resume(self, reason: str) -> None:
        self.pause_reasons = _without(self.pause_reasons, reason)
        if not self.pause_reasons and self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
