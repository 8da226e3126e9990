"""The guard's decision: a command in, a verdict out. Pure: no I/O, no asyncio, no sockets.

The relay and the client library share this one implementation.
"""

from __future__ import annotations

from scalyproxy.policy.compiled import CompiledCollection
from scalyproxy.policy.decision import global_query_message
from scalyproxy.policy.engine import Engine
from scalyproxy.policy.model import Command, CommandLike, Finding, RuleName, Verdict

__all__ = [
    "Command",
    "CommandLike",
    "CompiledCollection",
    "Engine",
    "Finding",
    "RuleName",
    "Verdict",
    "global_query_message",
]
