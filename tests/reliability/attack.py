"""A separate process that attacks a proxy while a test measures well-behaved clients.

    python -m tests.reliability.attack negative PORT SECONDS

Sends every R2 negative case (and the R1 decode errors), each on a fresh
connection, in a loop until SECONDS pass or SIGTERM; prints the number of bad
messages sent as its last line.
"""

from __future__ import annotations

import signal
import socket
import sys
import time

from tests.reliability.cases import DECODE_ERRORS, NEGATIVE
from tests.reliability.helpers import op_msg_raw


def negative(port: int, seconds: float) -> int:
    stop = time.monotonic() + seconds
    bad = list(NEGATIVE.values()) + [op_msg_raw(b"\x00" + raw, 7) for _, raw in DECODE_ERRORS]
    sent = 0
    stopping = False

    def on_term(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    while not stopping and time.monotonic() < stop:
        for msg in bad:
            if stopping:
                break
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(msg)
                    s.settimeout(5)
                    s.recv(65536)  # the error reply or the close
            except OSError:
                pass
            sent += 1
    return sent


def main() -> None:
    mode, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    if mode != "negative":
        raise SystemExit(f"unknown mode {mode!r}")
    print(f"sent {negative(port, seconds)}", flush=True)


if __name__ == "__main__":
    main()
