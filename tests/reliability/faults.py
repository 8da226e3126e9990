"""A fault-injecting TCP link between the proxy and its real upstream (like asyncpg's
``_testbase/fuzzer.py``): it forwards bytes both ways until told to

* ``stall()``: stop forwarding in both directions (connections stay open),
* ``reset()``: abort every connection with a TCP RST,
* ``kill()``: close every connection and stop listening (new connects are refused),
* ``revive()``: listen again on the same port and forward normally.

One thread with a selector; every change is applied between two rounds.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
import time


class FaultLink:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.listener: socket.socket | None = None
        self.peers: dict[socket.socket, socket.socket] = {}
        self.stalled = False
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()
        self.faults: list[tuple[str, float]] = []  # (kind, monotonic time)
        self.sel = selectors.DefaultSelector()
        self._listen()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(512)
        s.setblocking(False)
        self.port = s.getsockname()[1]
        self.listener = s
        self.sel.register(s, selectors.EVENT_READ)

    # -- faults -------------------------------------------------------------------------

    def stall(self) -> None:
        with self.lock:
            self.stalled = True
            self.faults.append(("stall", time.monotonic()))

    def unstall(self) -> None:
        with self.lock:
            self.stalled = False

    def reset(self) -> None:
        with self.lock:
            self.faults.append(("reset", time.monotonic()))
            while self.peers:
                s = next(iter(self.peers))
                for sock in (s, self.peers[s]):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self._drop(s)

    def kill(self) -> None:
        with self.lock:
            self.faults.append(("kill", time.monotonic()))
            if self.listener is not None:
                self.sel.unregister(self.listener)
                self.listener.close()
                self.listener = None
            while self.peers:
                self._drop(next(iter(self.peers)))

    def revive(self) -> None:
        with self.lock:
            if self.listener is None:
                self._listen()
            self.stalled = False

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(5)
        with self.lock:
            while self.peers:
                self._drop(next(iter(self.peers)))
            if self.listener is not None:
                self.listener.close()
        self.sel.close()

    # -- the pump -----------------------------------------------------------------------

    def _drop(self, s: socket.socket) -> None:
        other = self.peers.pop(s, None)
        for sock in (s, other):
            if sock is None:
                continue
            self.peers.pop(sock, None)
            try:
                self.sel.unregister(sock)
            except (KeyError, ValueError):
                pass
            sock.close()

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        try:
            server = socket.create_connection(self.target, timeout=2)
        except OSError:
            client.close()
            return
        for s in (client, server):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(5)
            self.sel.register(s, selectors.EVENT_READ)
        self.peers[client] = server
        self.peers[server] = client

    def _loop(self) -> None:
        while not self.stop_flag.is_set():
            with self.lock:
                events = self.sel.select(timeout=0.01) if self.sel.get_map() else []
                for key, _ in events:
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is self.listener:
                        self._accept()
                    elif not self.stalled and sock in self.peers:
                        self._pump(sock)
            if self.stalled or not events:
                time.sleep(0.005)

    def _pump(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(262144)
            if data:
                self.peers[sock].sendall(data)
                return
        except OSError:
            pass
        self._drop(sock)
