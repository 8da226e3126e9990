"""Repeated refusal and warning log lines counted, not written one by one (``log_repeats_s``).

A refusal storm (a bad deploy sending the same global query a thousand times a
second) would otherwise write a thousand identical lines a second, and the line
is most of what a refused command costs the proxy. The metrics and ``/report``
count every finding exactly, so the log can do what syslog does ("last message
repeated N times"): the first finding of an identity (event, rule, namespace,
command, shape, app) is logged at once; the next ones within ``log_repeats_s``
of the identity's last line are only counted; the first one after that carries
``repeats: N``, and a periodic flush writes a ``summary: true`` line for the
repeats nobody came to carry. Each process (each worker of a fleet) keeps its own
table.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from scalyproxy.policy import Finding

MAX_IDENTITIES: Final = 4096

#: enforced (refused, not warned), rule, namespace, command, shape, app
Identity = tuple[bool, str, str | None, str, str | None, str | None]


class Seen:
    """One identity's state: when its last line was written, and what came since."""

    __slots__ = ("client", "finding", "logged_at", "pending", "user")

    def __init__(self, logged_at: float, finding: Finding) -> None:
        self.logged_at = logged_at
        self.pending = 0  # findings counted, not logged, since the last line
        self.client = ""  # of the last one counted (for the summary line)
        self.user: str | None = None
        self.finding = finding  # the last one counted: its code name and reason, for the summary


class RepeatTable:
    """The identities seen lately, bounded by ``max_identities``: when it is full a new
    identity is logged every time (as with ``log_repeats_s: 0``) rather than the table grow;
    :meth:`due` clears the stale ones."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_identities: int = MAX_IDENTITIES) -> None:
        self.clock = clock
        self.max_identities = max_identities
        self.seen: dict[Identity, Seen] = {}

    def admit(self, key: Identity, interval: float, finding: Finding, client: str, user: str | None) -> int | None:
        """None: only counted (no line). Otherwise a line is due, and this is how many
        repeats of ``key`` were counted since its previous line (0: none)."""
        now = self.clock()
        seen = self.seen.get(key)
        if seen is None:
            if len(self.seen) < self.max_identities:
                self.seen[key] = Seen(now, finding)
            return 0
        if now - seen.logged_at < interval:
            seen.pending += 1
            seen.client = client
            seen.user = user
            seen.finding = finding
            return None
        repeats = seen.pending
        seen.pending = 0
        seen.logged_at = now
        return repeats

    def due(self, interval: float, final: bool = False) -> list[tuple[Identity, int, Seen]]:
        """The identities whose pending repeats are due a summary line (their interval has
        passed, or ``final``: the process stops), with how many, each reset as if that line
        were written; identities with nothing pending whose interval has passed are forgotten
        (their next finding is logged at once either way)."""
        now = self.clock()
        out: list[tuple[Identity, int, Seen]] = []
        for key, seen in list(self.seen.items()):
            if not final and now - seen.logged_at < interval:
                continue
            if seen.pending:
                out.append((key, seen.pending, seen))
                seen.pending = 0
                seen.logged_at = now
            else:
                del self.seen[key]
        if final:
            self.seen.clear()
        return out
