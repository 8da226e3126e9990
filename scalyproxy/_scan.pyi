"""Type stub of the C extension scalyproxy._scan (see _scan.c)."""

from typing import Any, Literal

from scalyproxy.wire.framer import Frame

Answer = Literal["ok", "duplicate", "invalid", "too_deep"]

def scan_document(buf: bytes | bytearray | memoryview, /) -> Answer: ...
def scan_run(buf: bytes | bytearray | memoryview, /) -> tuple[Answer, int]: ...
def fast_view(data: bytes | bytearray | memoryview, /) -> Any: ...
def command_view(frame: Frame, /, *, max_message_size: int = ...) -> Any: ...
def configure(
    view_type: type,
    no_sequences: object,
    sequences_type: object,
    decode: object,
    options: object,
    careful: object,
    default_max: int,
    /,
) -> None: ...
def compile_schema(description: tuple[object, ...], /) -> object: ...
def schema_unconfirmed(schema: object, run: bytes | bytearray | memoryview, /) -> list[int]: ...
