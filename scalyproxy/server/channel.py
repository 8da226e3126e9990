"""The control channel between a supervisor and one of its workers (``workers: N``).

A Unix socket pair made by the supervisor; the worker gets its end as an
inherited file descriptor. Each message is one JSON object, framed by a 4-byte
big-endian length (a profile or a report can be megabytes; no line limit to
trip on). The supervisor asks, one request at a time per worker; the worker
answers each request with one message carrying the same ``id``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any, Final

MAX_MESSAGE: Final = 1 << 30  # a sanity bound: both ends are ours
_LENGTH: Final = struct.Struct(">I")


class ChannelClosed(Exception):
    """The other end is gone (or sent something that is not a message)."""


async def open_channel(sock: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_unix_connection(sock=sock)


async def send(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":"), default=str).encode()
    writer.write(_LENGTH.pack(len(data)) + data)
    try:
        await writer.drain()
    except (OSError, RuntimeError) as exc:
        raise ChannelClosed(str(exc)) from None


async def receive(reader: asyncio.StreamReader) -> dict[str, Any]:
    try:
        (length,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
        if length > MAX_MESSAGE:
            raise ChannelClosed(f"message of {length} bytes")
        message = json.loads(await reader.readexactly(length))
    except (asyncio.IncompleteReadError, OSError, ValueError) as exc:
        raise ChannelClosed(f"{type(exc).__name__}: {exc}") from None
    if not isinstance(message, dict):
        raise ChannelClosed("not a JSON object")
    return message
